//! Runs a bundle's declared preprocessing: encoded bytes → decode → steps → input tensor.
//!
//! This is the only implementation. The server, batch scoring, training and golden checks
//! all call [`Pipeline::run`], so the tensor a model sees cannot depend on which path the
//! image came in by. Values stay `f32` in their native range (0-255 or 0-65535) until a
//! declared step maps them; nothing is rescaled implicitly.

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, Luma};
use vigil_core::bundle::{Layout, Manifest, ResizeFilter, Step};

use crate::{Error, Result};

/// Limits applied before and during decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded input accepted.
    pub max_encoded_bytes: usize,
    /// Largest decoded image, in pixels (width × height).
    pub max_pixels: u64,
}

impl Default for Limits {
    /// 64 MiB encoded and 100 megapixels: a full digitised film at 630 dpi is about 5,000 x
    /// 800 px (4 MP); a flat-panel detector image is up to about 30 MP.
    fn default() -> Self {
        Limits {
            max_encoded_bytes: 64 << 20,
            max_pixels: 100_000_000,
        }
    }
}

/// A preprocessed image: shape `[1, C, H, W]` or `[1, H, W, C]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The shape, batch dimension of one first.
    pub shape: [usize; 4],
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Planar image: `c` planes of `h × w` values.
#[derive(Debug, Clone)]
struct Planes {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

/// A bundle's preprocessing, validated and ready to run on any number of images.
#[derive(Debug, Clone)]
pub struct Pipeline {
    steps: Vec<Step>,
    limits: Limits,
}

impl Pipeline {
    /// Builds the pipeline a manifest declares (the manifest has validated the steps).
    pub fn new(manifest: &Manifest, limits: Limits) -> Pipeline {
        Self::from_steps(manifest.preprocess.clone(), limits)
    }

    /// Builds a pipeline from steps that were validated elsewhere.
    pub fn from_steps(steps: Vec<Step>, limits: Limits) -> Pipeline {
        Pipeline { steps, limits }
    }

    /// Runs every step on one encoded image.
    pub fn run(&self, encoded: &[u8]) -> Result<Tensor> {
        let mut img = None::<Planes>;
        let mut layout = Layout::Nchw;
        for step in &self.steps {
            match step {
                Step::Decode => img = Some(decode(encoded, &self.limits)?),
                Step::Layout { order } => layout = *order,
                other => {
                    let current = img
                        .take()
                        .ok_or_else(|| Error::Preprocess("a step came before `decode`".into()))?;
                    img = Some(apply(current, other)?);
                }
            }
        }
        let img =
            img.ok_or_else(|| Error::Preprocess("the pipeline has no `decode` step".into()))?;
        Ok(to_tensor(img, layout))
    }
}

fn decode(bytes: &[u8], limits: &Limits) -> Result<Planes> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(Error::TooLarge(format!(
            "{} bytes encoded; the limit is {}",
            bytes.len(),
            limits.max_encoded_bytes
        )));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(Error::Decode(
            "unknown image format (PNG, JPEG, BMP and TIFF are supported)".into(),
        ));
    }
    // Read the header first so a decompression bomb is refused before anything is allocated.
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::Decode(e.to_string()))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge(format!(
            "{w}x{h} = {pixels} pixels; the limit is {}",
            limits.max_pixels
        )));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(e.to_string()))?;
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(w);
    lim.max_image_height = Some(h);
    // Decoded size at most 16 bytes per pixel (RGBA f32) plus slack.
    lim.max_alloc = Some(pixels.saturating_mul(16).saturating_add(1 << 20));
    reader.limits(lim);
    let img = reader.decode().map_err(|e| Error::Decode(e.to_string()))?;
    Ok(planes(img))
}

/// Converts a decoded image to planes, keeping the native value range and dropping alpha.
fn planes(img: DynamicImage) -> Planes {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (c, interleaved): (usize, Vec<f32>) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw().into_iter().map(f32::from).collect()),
        DynamicImage::ImageLuma16(b) => (1, b.into_raw().into_iter().map(f32::from).collect()),
        DynamicImage::ImageLumaA8(b) => (
            1,
            b.into_raw()
                .chunks_exact(2)
                .map(|p| f32::from(p[0]))
                .collect(),
        ),
        DynamicImage::ImageLumaA16(b) => (
            1,
            b.into_raw()
                .chunks_exact(2)
                .map(|p| f32::from(p[0]))
                .collect(),
        ),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw().into_iter().map(f32::from).collect()),
        DynamicImage::ImageRgb16(b) => (3, b.into_raw().into_iter().map(f32::from).collect()),
        DynamicImage::ImageRgb32F(b) => (3, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (3, drop_alpha(b.into_raw().into_iter().map(f32::from))),
        DynamicImage::ImageRgba16(b) => (3, drop_alpha(b.into_raw().into_iter().map(f32::from))),
        DynamicImage::ImageRgba32F(b) => (3, drop_alpha(b.into_raw().into_iter())),
        other => (3, other.to_rgb32f().into_raw()),
    };
    let mut data = vec![0f32; c * h * w];
    for (i, v) in interleaved.into_iter().enumerate() {
        let (px, ch) = (i / c, i % c);
        data[ch * h * w + px] = v;
    }
    Planes { c, h, w, data }
}

fn drop_alpha(values: impl Iterator<Item = f32>) -> Vec<f32> {
    values
        .enumerate()
        .filter(|(i, _)| i % 4 != 3)
        .map(|(_, v)| v)
        .collect()
}

fn apply(img: Planes, step: &Step) -> Result<Planes> {
    Ok(match step {
        Step::Decode | Step::Layout { .. } => img,
        Step::Grey if img.c == 1 => img,
        Step::Grey => {
            let n = img.h * img.w;
            let (r, g, b) = (&img.data[..n], &img.data[n..2 * n], &img.data[2 * n..3 * n]);
            // ITU-R BT.601 luma, as most image libraries use for grey conversion.
            let data = (0..n)
                .map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i])
                .collect();
            Planes { c: 1, data, ..img }
        }
        Step::Rgb if img.c == 3 => img,
        Step::Rgb => {
            let mut data = Vec::with_capacity(img.data.len() * 3);
            for _ in 0..3 {
                data.extend_from_slice(&img.data);
            }
            Planes { c: 3, data, ..img }
        }
        Step::CenterCrop { width, height } => {
            let (cw, ch) = (*width as usize, *height as usize);
            if cw > img.w || ch > img.h {
                return Err(Error::Preprocess(format!(
                    "cannot crop {cw}x{ch} from a {}x{} image",
                    img.w, img.h
                )));
            }
            let (x0, y0) = ((img.w - cw) / 2, (img.h - ch) / 2);
            let mut data = Vec::with_capacity(img.c * cw * ch);
            for plane in img.data.chunks_exact(img.w * img.h) {
                for y in y0..y0 + ch {
                    data.extend_from_slice(&plane[y * img.w + x0..y * img.w + x0 + cw]);
                }
            }
            Planes {
                c: img.c,
                h: ch,
                w: cw,
                data,
            }
        }
        Step::Resize {
            width,
            height,
            filter,
        } => resize(img, *width, *height, *filter),
        Step::Scale { factor } => map(img, |v| v * factor),
        Step::Normalize { mean, std } => {
            if mean.len() != img.c {
                return Err(Error::Preprocess(format!(
                    "`normalize` has {} means for a {}-channel image",
                    mean.len(),
                    img.c
                )));
            }
            let n = img.h * img.w;
            let mut img = img;
            for (ch, plane) in img.data.chunks_exact_mut(n).enumerate() {
                let (m, s) = (mean[ch], std[ch]);
                plane.iter_mut().for_each(|v| *v = (*v - m) / s);
            }
            img
        }
        Step::Standardize { eps } => {
            // Mean and variance in f64 so a 16-bit film's sums do not lose precision.
            let n = img.data.len() as f64;
            let mean = img.data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = img
                .data
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let std = var.sqrt().max(f64::from(*eps));
            map(img, |v| ((f64::from(v) - mean) / std) as f32)
        }
    })
}

fn map(mut img: Planes, f: impl Fn(f32) -> f32) -> Planes {
    img.data.iter_mut().for_each(|v| *v = f(*v));
    img
}

/// Resizes each plane. `bilinear` is a triangle filter that widens when shrinking (as
/// Pillow's resize does), so downscaling averages instead of skipping pixels.
///
/// The `image` crate treats `f32` pixels as lying in `[0, 1]` and clamps its results there,
/// so each plane is mapped onto `[0, 1]` by its own range first and mapped back afterwards.
/// Values never leave the plane's original range (as when resizing integer images, filter
/// overshoot is clamped).
fn resize(img: Planes, width: u32, height: u32, filter: ResizeFilter) -> Planes {
    let (w, h) = (width as usize, height as usize);
    if w == img.w && h == img.h {
        return img;
    }
    let filter = match filter {
        ResizeFilter::Nearest => FilterType::Nearest,
        ResizeFilter::Bilinear => FilterType::Triangle,
        ResizeFilter::Bicubic => FilterType::CatmullRom,
        ResizeFilter::Lanczos3 => FilterType::Lanczos3,
    };
    let mut data = Vec::with_capacity(img.c * w * h);
    for plane in img.data.chunks_exact(img.w * img.h) {
        let lo = plane.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = plane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let unit: Vec<f32> = plane.iter().map(|v| (v - lo) / span).collect();
        let buf: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(img.w as u32, img.h as u32, unit)
                .expect("a plane holds exactly w*h values; this is a bug");
        let resized = image::imageops::resize(&buf, width, height, filter).into_raw();
        data.extend(resized.into_iter().map(|v| v * span + lo));
    }
    Planes {
        c: img.c,
        h,
        w,
        data,
    }
}

fn to_tensor(img: Planes, layout: Layout) -> Tensor {
    match layout {
        Layout::Nchw => Tensor {
            shape: [1, img.c, img.h, img.w],
            data: img.data,
        },
        Layout::Nhwc => {
            let n = img.h * img.w;
            let mut data = vec![0f32; img.data.len()];
            for ch in 0..img.c {
                for px in 0..n {
                    data[px * img.c + ch] = img.data[ch * n + px];
                }
            }
            Tensor {
                shape: [1, img.h, img.w, img.c],
                data,
            }
        }
    }
}

/// Encodes a deterministic test image for a model input: a gradient with a seeded texture,
/// 8-bit grey or RGB PNG. Used as golden inputs when a bundle is made without real ones.
pub fn synthetic_png(width: u32, height: u32, channels: u32, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 56) as u8
    };
    let mut raw = Vec::with_capacity((width * height * channels) as usize);
    for y in 0..height {
        for x in 0..width {
            let base = ((x + y) * 255 / (width + height).max(1)) as u8;
            for _ in 0..channels {
                raw.push(base / 2 + next() / 2);
            }
        }
    }
    let mut out = Vec::new();
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &raw,
        width,
        height,
        color,
    )
    .expect("encoding a PNG into memory cannot fail; this is a bug");
    out
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Luma, Rgb};

    use super::*;

    fn png<P: image::PixelWithColorType>(img: &ImageBuffer<P, Vec<P::Subpixel>>) -> Vec<u8>
    where
        [P::Subpixel]: image::EncodableLayout,
    {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn run(steps: Vec<Step>, bytes: &[u8]) -> Result<Tensor> {
        Pipeline::from_steps(steps, Limits::default()).run(bytes)
    }

    const NCHW: Step = Step::Layout {
        order: Layout::Nchw,
    };

    #[test]
    fn grey_uses_bt601_luma_and_keeps_the_8_bit_range() {
        let img = ImageBuffer::from_pixel(2, 2, Rgb([200u8, 100, 50]));
        let t = run(vec![Step::Decode, Step::Grey, NCHW], &png(&img)).unwrap();
        assert_eq!(t.shape, [1, 1, 2, 2]);
        let expected = 0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0;
        assert!(
            t.data.iter().all(|v| (v - expected).abs() < 1e-4),
            "{:?}",
            t.data
        );
    }

    // A 16-bit radiograph must not be squeezed to 8 bits before a declared step maps it.
    #[test]
    fn sixteen_bit_images_keep_their_depth() {
        let img = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0u16, 40_000, 65_535][x as usize]]));
        let t = run(vec![Step::Decode, Step::Grey, NCHW], &png(&img)).unwrap();
        assert_eq!(t.data, vec![0.0, 40_000.0, 65_535.0]);
        let t = run(
            vec![
                Step::Decode,
                Step::Grey,
                Step::Scale {
                    factor: 1.0 / 65_535.0,
                },
                NCHW,
            ],
            &png(&img),
        )
        .unwrap();
        assert!((t.data[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let img = ImageBuffer::from_fn(4, 4, |x, y| Luma([(y * 4 + x) as u8]));
        let t = run(
            vec![
                Step::Decode,
                Step::Grey,
                Step::CenterCrop {
                    width: 2,
                    height: 2,
                },
                NCHW,
            ],
            &png(&img),
        )
        .unwrap();
        assert_eq!(t.data, vec![5.0, 6.0, 9.0, 10.0]);
        let err = run(
            vec![
                Step::Decode,
                Step::CenterCrop {
                    width: 8,
                    height: 8,
                },
                NCHW,
            ],
            &png(&img),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Preprocess(_)), "{err}");
    }

    #[test]
    fn standardize_gives_zero_mean_and_unit_variance_and_survives_flat_images() {
        let img = ImageBuffer::from_fn(8, 8, |x, y| Luma([(x * 30 + y) as u8]));
        let t = run(
            vec![
                Step::Decode,
                Step::Grey,
                Step::Standardize { eps: 1e-6 },
                NCHW,
            ],
            &png(&img),
        )
        .unwrap();
        let n = t.data.len() as f32;
        let mean = t.data.iter().sum::<f32>() / n;
        let var = t.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
            "mean {mean} var {var}"
        );
        let flat = ImageBuffer::from_pixel(4, 4, Luma([7u8]));
        let t = run(
            vec![
                Step::Decode,
                Step::Grey,
                Step::Standardize { eps: 1e-6 },
                NCHW,
            ],
            &png(&flat),
        )
        .unwrap();
        assert!(t.data.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn normalize_and_nhwc_layout_interleave_channels() {
        let img = ImageBuffer::from_pixel(1, 2, Rgb([10u8, 20, 30]));
        let steps = vec![
            Step::Decode,
            Step::Rgb,
            Step::Normalize {
                mean: vec![10.0, 20.0, 30.0],
                std: vec![1.0, 2.0, 5.0],
            },
            Step::Layout {
                order: Layout::Nhwc,
            },
        ];
        let t = run(steps, &png(&img)).unwrap();
        assert_eq!(t.shape, [1, 2, 1, 3]);
        assert_eq!(t.data, vec![0.0; 6]);
        let grey = ImageBuffer::from_fn(2, 1, |x, _| Luma([x as u8 * 100]));
        let t = run(
            vec![
                Step::Decode,
                Step::Rgb,
                Step::Layout {
                    order: Layout::Nhwc,
                },
            ],
            &png(&grey),
        )
        .unwrap();
        assert_eq!(t.data, vec![0.0, 0.0, 0.0, 100.0, 100.0, 100.0]);
    }

    #[test]
    fn resize_reaches_the_declared_size_with_every_filter() {
        let img = ImageBuffer::from_fn(16, 8, |x, _| Luma([(x * 16) as u8]));
        for filter in [
            ResizeFilter::Nearest,
            ResizeFilter::Bilinear,
            ResizeFilter::Bicubic,
            ResizeFilter::Lanczos3,
        ] {
            let t = run(
                vec![
                    Step::Decode,
                    Step::Grey,
                    Step::Resize {
                        width: 4,
                        height: 4,
                        filter,
                    },
                    NCHW,
                ],
                &png(&img),
            )
            .unwrap();
            assert_eq!(t.shape, [1, 1, 4, 4]);
            assert!(
                t.data[0] < t.data[3],
                "{filter:?} lost the gradient: {:?}",
                t.data
            );
        }
    }

    #[test]
    fn garbage_truncated_and_oversized_inputs_are_typed_errors() {
        let steps = || vec![Step::Decode, Step::Grey, NCHW];
        assert!(matches!(
            run(steps(), b"definitely not an image"),
            Err(Error::Decode(_))
        ));
        let good = png(&ImageBuffer::from_pixel(64, 64, Luma([9u8])));
        assert!(matches!(
            run(steps(), &good[..good.len() / 2]),
            Err(Error::Decode(_))
        ));
        let small = Pipeline::from_steps(
            steps(),
            Limits {
                max_encoded_bytes: 10,
                max_pixels: 1 << 20,
            },
        );
        assert!(matches!(small.run(&good), Err(Error::TooLarge(_))));
    }

    /// A PNG whose header claims 100,000 x 100,000 pixels must be refused before anything of
    /// that size is allocated.
    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let mut bytes = png(&ImageBuffer::from_pixel(1, 1, Luma([0u8])));
        // IHDR data starts at byte 16: width, height (big-endian), then 5 more bytes; CRC after.
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = run(vec![Step::Decode, Step::Grey, NCHW], &bytes).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn synthetic_images_are_deterministic_and_decode() {
        assert_eq!(synthetic_png(16, 16, 1, 3), synthetic_png(16, 16, 1, 3));
        assert_ne!(synthetic_png(16, 16, 1, 3), synthetic_png(16, 16, 1, 4));
        let t = run(
            vec![Step::Decode, Step::Rgb, NCHW],
            &synthetic_png(16, 8, 3, 1),
        )
        .unwrap();
        assert_eq!(t.shape, [1, 3, 8, 16]);
    }
}
