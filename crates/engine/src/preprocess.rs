//! Runs a bundle's declared preprocessing: encoded bytes → decode → steps → input tensor(s).
//!
//! This is the only implementation. The server, batch scoring, training and golden checks
//! all call [`Pipeline::run`] (or [`Pipeline::run_tiles`] for a pipeline that cuts whole
//! radiographs into tiles), so the tensor a model sees cannot depend on which path the image
//! came in by. Values stay `f32` in their native range (0-255 or 0-65535) until a declared
//! step maps them; nothing is rescaled implicitly. Decoding (image formats and DICOM) lives
//! in the `decode` and `dicom` submodules; this file owns the steps.

use image::imageops::FilterType;
use image::{ImageBuffer, Luma};
use vigil_core::bundle::{Layout, Manifest, ResizeFilter, Step};
use vigil_core::monitor::ImageStats;

use crate::{Error, Result};

mod decode;
mod dicom;
mod tile;

/// Limits applied before and during decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded input accepted.
    pub max_encoded_bytes: usize,
    /// Largest decoded image, in pixels (width × height). Also bounds what `pad` makes, and
    /// the pixels of all tiles together may be at most [`TILE_PIXEL_FACTOR`] times this.
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

/// Peak memory of preprocessing one image, per sample (pixel x channel) of the decoded image:
/// the decoded samples, their f32 planes and what the steps make of them. Measured as the
/// peak RSS growth of `vigil serve` (release, the shipped weld bundle) answering one grey PNG
/// (`bench/memory.py --calibrate`): 8.2 bytes per pixel at 9999 x 9999 16-bit, 8.3 at
/// 5400 x 5400 16-bit, 8.0-8.4 at a 4830 x 2013 8-bit film; rounded up. Colour images count each channel (an RGB image decodes to three
/// planes before it is made grey).
pub const PEAK_BYTES_PER_SAMPLE: u64 = 9;

/// How many times `max_pixels` the tiles of one image may hold together. Overlapping tiles
/// repeat pixels: a stride of half the tile size repeats each about 4 times, which a 30 MP
/// flat-panel image must still pass with the default limits; a tiny stride on a large image
/// (millions of tiles) must not exhaust memory.
pub const TILE_PIXEL_FACTOR: u64 = 4;

/// A preprocessed image: shape `[1, C, H, W]` or `[1, H, W, C]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The shape, batch dimension of one first.
    pub shape: [usize; 4],
    /// Row-major values.
    pub data: Vec<f32>,
}

/// The tensors of one image cut into tiles, and where each tile came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiled {
    /// One tensor per tile, in the order of [`TileGrid::positions`] (row-major).
    pub tiles: Vec<Tensor>,
    /// Where the tiles lie in the image.
    pub grid: TileGrid,
    /// Statistics of the decoded image (before any step), when the pipeline observes
    /// ([`Pipeline::observing`]).
    pub stats: Option<ImageStats>,
}

/// Where a pipeline's tiles lie in the image as it was when the `tile` step cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileGrid {
    /// Width of the image that was tiled, in pixels.
    pub image_width: u32,
    /// Height of the image that was tiled, in pixels.
    pub image_height: u32,
    /// Tile width and height, in pixels.
    pub tile_size: u32,
    /// Top-left corner `(x, y)` of each tile, row-major: left to right, then top to bottom.
    pub positions: Vec<(u32, u32)>,
    /// Tiles per row.
    pub columns: u32,
    /// Rows of tiles.
    pub rows: u32,
}

/// The pixels an augmentation hook may change: `channels` planes of `height × width` values,
/// still in their native range (see [`Pipeline::run_augmented`]).
#[derive(Debug)]
pub struct PixelPlanes<'a> {
    /// Number of planes.
    pub channels: usize,
    /// Rows per plane.
    pub height: usize,
    /// Values per row.
    pub width: usize,
    /// `channels × height × width` values, plane after plane, rows top to bottom.
    pub data: &'a mut [f32],
}

/// Whether a step maps pixel values (rather than decoding, converting, cutting or resizing):
/// the point where an augmentation of the raw pixels must already have happened.
fn maps_values(step: &Step) -> bool {
    matches!(
        step,
        Step::Window { .. }
            | Step::PercentileWindow { .. }
            | Step::Scale { .. }
            | Step::Normalize { .. }
            | Step::Standardize { .. }
    )
}

/// An image decoded for a person to look at (the review page): one grey channel in the
/// image's own value range, so that window/level can work on all of a 16-bit radiograph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bits per sample of the source (8, 16, a DICOM image's BitsStored); float images are
    /// scaled to 16 bits.
    pub bit_depth: u8,
    /// Row-major grey values in `0..2^bit_depth`; colour images are averaged.
    pub pixels: Vec<u16>,
}

/// Decodes `bytes` (any format the pipeline reads) for display, under the same `limits`.
pub fn decode_for_display(bytes: &[u8], limits: &Limits) -> Result<DisplayImage> {
    let (img, depth) = decode::decode(bytes, limits)?;
    let (bits, scale) = if depth.bits >= 32 {
        (16u8, 65535.0 / depth.max)
    } else {
        (depth.bits.min(16), 1.0)
    };
    let top = f32::from(u16::MAX >> (16 - u32::from(bits.max(1))));
    let n = img.h * img.w;
    let pixels = (0..n)
        .map(|i| {
            let sum: f32 = (0..img.c).map(|ch| img.data[ch * n + i]).sum();
            let v = (sum / img.c.max(1) as f32 * scale).round();
            v.clamp(0.0, top) as u16
        })
        .collect();
    Ok(DisplayImage {
        width: img.w,
        height: img.h,
        bit_depth: bits,
        pixels,
    })
}

/// Planar image: `c` planes of `h × w` values.
#[derive(Debug, Clone)]
struct Planes {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

impl Planes {
    /// Planes from pixel-interleaved values (`c` values per pixel, rows top to bottom).
    fn from_interleaved(c: usize, h: usize, w: usize, interleaved: Vec<f32>) -> Planes {
        if c == 1 {
            return Planes {
                c,
                h,
                w,
                data: interleaved,
            };
        }
        let mut data = vec![0f32; c * h * w];
        for (i, v) in interleaved.into_iter().enumerate() {
            let (px, ch) = (i / c, i % c);
            data[ch * h * w + px] = v;
        }
        Planes { c, h, w, data }
    }

    /// The `cw` x `ch` region whose top-left corner is `(x0, y0)`; the caller checked it fits.
    fn region(&self, x0: usize, y0: usize, cw: usize, ch: usize) -> Planes {
        let mut data = Vec::with_capacity(self.c * cw * ch);
        for plane in self.data.chunks_exact(self.w * self.h) {
            for y in y0..y0 + ch {
                data.extend_from_slice(&plane[y * self.w + x0..y * self.w + x0 + cw]);
            }
        }
        Planes {
            c: self.c,
            h: ch,
            w: cw,
            data,
        }
    }
}

/// A bundle's preprocessing, validated and ready to run on any number of images.
#[derive(Debug, Clone)]
pub struct Pipeline {
    steps: Vec<Step>,
    limits: Limits,
    observe: bool,
}

/// What the steps made from one image: one image, or the tiles and their grid.
struct Output {
    images: Vec<Planes>,
    grid: Option<TileGrid>,
    layout: Layout,
    stats: Option<ImageStats>,
}

impl Pipeline {
    /// Builds the pipeline a manifest declares (the manifest has validated the steps).
    pub fn new(manifest: &Manifest, limits: Limits) -> Pipeline {
        Self::from_steps(manifest.preprocess.clone(), limits)
    }

    /// Builds a pipeline from steps that were validated elsewhere.
    pub fn from_steps(steps: Vec<Step>, limits: Limits) -> Pipeline {
        Pipeline {
            steps,
            limits,
            observe: false,
        }
    }

    /// The same pipeline, also measuring each decoded image for monitoring
    /// ([`Tiled::stats`]): a few hundred microseconds on a tile, a few milliseconds on a
    /// whole film (sampled to a million pixels). The tensors are unchanged.
    pub fn observing(mut self) -> Pipeline {
        self.observe = true;
        self
    }

    /// The most memory preprocessing `encoded` may take at its peak, in bytes, estimated from
    /// the image's header alone (nothing of the image's size is allocated): width x height x
    /// samples per pixel x [`PEAK_BYTES_PER_SAMPLE`]. An image over [`Limits::max_pixels`] or
    /// [`Limits::max_encoded_bytes`] is refused here with [`Error::TooLarge`], one that is not
    /// an image with [`Error::Decode`]. The server reserves this much of its memory budget
    /// before decoding.
    pub fn peak_bytes(&self, encoded: &[u8]) -> Result<u64> {
        let (w, h, c) = decode::dimensions(encoded, &self.limits)?;
        Ok(w.saturating_mul(h)
            .saturating_mul(c)
            .saturating_mul(PEAK_BYTES_PER_SAMPLE))
    }

    /// Whether the pipeline has a `tile` step, so that [`Pipeline::run_tiles`] must run it.
    pub fn tiles(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Tile { .. }))
    }

    /// Runs every step on one encoded image. A pipeline that tiles is refused: use
    /// [`Pipeline::run_tiles`].
    pub fn run(&self, encoded: &[u8]) -> Result<Tensor> {
        if self.tiles() {
            return Err(Error::Preprocess(
                "this pipeline tiles images; use run_tiles".into(),
            ));
        }
        let out = self.execute(encoded, None)?;
        let img =
            out.images.into_iter().next().ok_or_else(|| {
                Error::Preprocess("the pipeline made no image; this is a bug".into())
            })?;
        Ok(to_tensor(img, out.layout))
    }

    /// Runs every step on one encoded image like [`Pipeline::run`], calling `augment` once on
    /// the pixels just before the first step that maps values (window, scale, normalize,
    /// standardize), or before the layout when there is none. This is how training perturbs
    /// images (brightness, contrast, noise, flips) in their native range and still goes
    /// through exactly the declared steps: a per-image `standardize` would otherwise undo any
    /// brightness or contrast change made after it. The hook must keep the size.
    pub fn run_augmented(
        &self,
        encoded: &[u8],
        augment: &mut dyn FnMut(PixelPlanes<'_>),
    ) -> Result<Tensor> {
        if self.tiles() {
            return Err(Error::Preprocess(
                "this pipeline tiles images; training takes single images".into(),
            ));
        }
        let out = self.execute(encoded, Some(augment))?;
        let img =
            out.images.into_iter().next().ok_or_else(|| {
                Error::Preprocess("the pipeline made no image; this is a bug".into())
            })?;
        Ok(to_tensor(img, out.layout))
    }

    /// Runs every step on one encoded image, giving one tensor per tile in row-major order.
    /// The steps after `tile` run on each tile. A pipeline without `tile` gives one tile: the
    /// whole image, with a grid of one position `(0, 0)` and a tile size of the larger side.
    pub fn run_tiles(&self, encoded: &[u8]) -> Result<Tiled> {
        let out = self.execute(encoded, None)?;
        let grid = match out.grid {
            Some(grid) => grid,
            None => {
                let img = out.images.first().ok_or_else(|| {
                    Error::Preprocess("the pipeline made no image; this is a bug".into())
                })?;
                TileGrid {
                    image_width: img.w as u32,
                    image_height: img.h as u32,
                    tile_size: img.w.max(img.h) as u32,
                    positions: vec![(0, 0)],
                    columns: 1,
                    rows: 1,
                }
            }
        };
        let layout = out.layout;
        Ok(Tiled {
            tiles: out
                .images
                .into_iter()
                .map(|img| to_tensor(img, layout))
                .collect(),
            grid,
            stats: out.stats,
        })
    }

    fn execute(
        &self,
        encoded: &[u8],
        mut augment: Option<&mut dyn FnMut(PixelPlanes<'_>)>,
    ) -> Result<Output> {
        let before_decode = || Error::Preprocess("a step came before `decode`".into());
        let mut images: Option<Vec<Planes>> = None;
        let mut grid = None;
        let mut layout = Layout::Nchw;
        let mut stats = None;
        for step in &self.steps {
            if (maps_values(step) || matches!(step, Step::Layout { .. }))
                && let (Some(hook), Some(current)) = (augment.take(), images.as_mut())
            {
                for img in current.iter_mut() {
                    hook(PixelPlanes {
                        channels: img.c,
                        height: img.h,
                        width: img.w,
                        data: &mut img.data,
                    });
                }
            }
            match step {
                Step::Decode => {
                    let (img, depth) = decode::decode(encoded, &self.limits)?;
                    if self.observe {
                        stats = Some(observe(&img, depth));
                    }
                    images = Some(vec![img]);
                }
                Step::Layout { order } => layout = *order,
                Step::Tile { size, stride } => {
                    let current = images.take().ok_or_else(before_decode)?;
                    let [img] = <[Planes; 1]>::try_from(current).map_err(|_| {
                        Error::Preprocess("a pipeline may only have one `tile` step".into())
                    })?;
                    let (tiles, g) = tile::tile(&img, *size, *stride, &self.limits)?;
                    images = Some(tiles);
                    grid = Some(g);
                }
                other => {
                    let current = images.take().ok_or_else(before_decode)?;
                    images = Some(
                        current
                            .into_iter()
                            .map(|img| apply(img, other, &self.limits))
                            .collect::<Result<_>>()?,
                    );
                }
            }
        }
        let images =
            images.ok_or_else(|| Error::Preprocess("the pipeline has no `decode` step".into()))?;
        Ok(Output {
            images,
            grid,
            layout,
            stats,
        })
    }
}

/// Monitoring's statistics of a decoded image: its grey plane (the mean of the channels of a
/// colour image) in the native range. A colour image passes the sum of its channels against
/// `channels × max`: the same mean, in whole numbers, which the statistics count exactly.
fn observe(img: &Planes, depth: decode::Depth) -> ImageStats {
    let n = img.h * img.w;
    if img.c == 1 {
        return ImageStats::compute(&img.data, img.w, img.h, depth.bits, depth.max);
    }
    let mut grey = vec![0f32; n];
    for plane in img.data.chunks_exact(n.max(1)) {
        for (g, v) in grey.iter_mut().zip(plane) {
            *g += v;
        }
    }
    let max = depth.max * img.c as f32;
    ImageStats::compute(&grey, img.w, img.h, depth.bits, max)
}

fn apply(img: Planes, step: &Step, limits: &Limits) -> Result<Planes> {
    Ok(match step {
        Step::Decode | Step::Layout { .. } | Step::Tile { .. } => img,
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
            img.region((img.w - cw) / 2, (img.h - ch) / 2, cw, ch)
        }
        Step::Crop {
            x,
            y,
            width,
            height,
        } => {
            let (x, y, cw, ch) = (*x as usize, *y as usize, *width as usize, *height as usize);
            if x + cw > img.w || y + ch > img.h {
                return Err(Error::Preprocess(format!(
                    "cannot crop {cw}x{ch} at ({x}, {y}) from a {}x{} image",
                    img.w, img.h
                )));
            }
            img.region(x, y, cw, ch)
        }
        Step::Pad {
            width,
            height,
            value,
        } => pad(img, *width as usize, *height as usize, *value, limits)?,
        Step::Window { center, width } => {
            let (lo, span) = (
                f64::from(*center) - f64::from(*width) / 2.0,
                f64::from(*width),
            );
            map(img, |v| ((f64::from(v) - lo) / span).clamp(0.0, 1.0) as f32)
        }
        Step::PercentileWindow { low, high } => {
            if img.data.is_empty() {
                return Ok(img);
            }
            let mut values = img.data.clone();
            let lo = percentile(&mut values, *low);
            let hi = percentile(&mut values, *high);
            if hi > lo {
                let span = hi - lo;
                map(img, |v| ((f64::from(v) - lo) / span).clamp(0.0, 1.0) as f32)
            } else {
                map(img, |_| 0.0)
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

/// Pads to at least `width` x `height` with `value`, centring the image; an odd extra pixel
/// goes to the right or bottom.
fn pad(img: Planes, width: usize, height: usize, value: f32, limits: &Limits) -> Result<Planes> {
    let (nw, nh) = (img.w.max(width), img.h.max(height));
    if (nw, nh) == (img.w, img.h) {
        return Ok(img);
    }
    decode::check_pixels(nw as u64, nh as u64, limits)?;
    let (left, top) = ((nw - img.w) / 2, (nh - img.h) / 2);
    let mut data = vec![value; img.c * nw * nh];
    for (src, dst) in img
        .data
        .chunks_exact(img.w * img.h)
        .zip(data.chunks_exact_mut(nw * nh))
    {
        for (y, row) in src.chunks_exact(img.w).enumerate() {
            let at = (top + y) * nw + left;
            dst[at..at + img.w].copy_from_slice(row);
        }
    }
    Ok(Planes {
        c: img.c,
        h: nh,
        w: nw,
        data,
    })
}

/// The `p`-th percentile (0-100) of `values`, interpolating linearly between the two nearest
/// ranks (NumPy's default): rank `p/100 * (n - 1)` of the sorted values. Selection instead of
/// a full sort gives the same order statistics in linear time; `values` is reordered.
fn percentile(values: &mut [f32], p: f32) -> f64 {
    let rank = f64::from(p.clamp(0.0, 100.0)) / 100.0 * (values.len() - 1) as f64;
    let k = rank.floor() as usize;
    let frac = rank - k as f64;
    let (_, at, above) = values.select_nth_unstable_by(k, f32::total_cmp);
    let a = f64::from(*at);
    if frac == 0.0 || above.is_empty() {
        return a;
    }
    // After selection everything above `k` is >= it, so their minimum is rank k + 1.
    let b = f64::from(above.iter().copied().fold(f32::INFINITY, f32::min));
    a + (b - a) * frac
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
    fn display_decoding_keeps_sixteen_bits_and_greys_colour() {
        let img = ImageBuffer::from_fn(3, 2, |x, y| Luma([(x * 20_000 + y * 7) as u16]));
        let d = decode_for_display(&png(&img), &Limits::default()).unwrap();
        assert_eq!((d.width, d.height, d.bit_depth), (3, 2, 16));
        assert_eq!(d.pixels, vec![0, 20_000, 40_000, 7, 20_007, 40_007]);
        let rgb = ImageBuffer::from_fn(1, 1, |_, _| Rgb([30u8, 60, 90]));
        let d = decode_for_display(&png(&rgb), &Limits::default()).unwrap();
        assert_eq!((d.bit_depth, d.pixels.as_slice()), (8, [60u16].as_slice()));
        assert!(decode_for_display(b"not an image", &Limits::default()).is_err());
    }

    #[test]
    fn a_colour_images_statistics_are_those_of_its_channel_mean() {
        let pipeline =
            Pipeline::from_steps(vec![Step::Decode, NCHW], Limits::default()).observing();
        let stats = |bytes: &[u8]| pipeline.run_tiles(bytes).unwrap().stats.unwrap();
        // Channels whose mean is a whole level: the colour image looks like that grey one.
        let rgb = ImageBuffer::from_fn(40, 30, |x, y| {
            let v = (x * 5 + y * 3) as u8;
            Rgb([v, v.saturating_add(12), v.saturating_sub(12)])
        });
        let mean = |x: u32, y: u32| {
            let p = rgb.get_pixel(x, y).0;
            (f32::from(p[0]) + f32::from(p[1]) + f32::from(p[2])) / 3.0
        };
        let grey: Vec<f32> = (0..30)
            .flat_map(|y| (0..40).map(move |x| (x, y)))
            .map(|(x, y)| mean(x, y))
            .collect();
        let expected = ImageStats::compute(&grey, 40, 30, 8, 255.0);
        let got = stats(&png(&rgb));
        for (g, e) in got.values().iter().zip(expected.values()) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
        assert!(got.mean > 0.1 && got.contrast > 0.01 && got.bit_depth == 8);
    }

    #[test]
    fn augmentation_runs_on_native_values_before_the_value_steps() {
        let img = ImageBuffer::from_fn(4, 2, |x, y| Luma([(x * 40 + y * 10) as u8]));
        let steps = vec![
            Step::Decode,
            Step::Grey,
            Step::Standardize { eps: 1e-6 },
            NCHW,
        ];
        let pipeline = Pipeline::from_steps(steps, Limits::default());
        let plain = pipeline.run(&png(&img)).unwrap();
        let mut seen = Vec::new();
        // Brightness and contrast changes happen before `standardize`, which undoes them.
        let jittered = pipeline
            .run_augmented(&png(&img), &mut |p: PixelPlanes<'_>| {
                seen = p.data.to_vec();
                assert_eq!((p.channels, p.height, p.width), (1, 2, 4));
                p.data.iter_mut().for_each(|v| *v = *v * 1.5 + 20.0);
            })
            .unwrap();
        assert_eq!(seen[..4], [0.0, 40.0, 80.0, 120.0], "native 0-255 values");
        for (a, b) in plain.data.iter().zip(&jittered.data) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // A horizontal flip shows in the output.
        let flipped = pipeline
            .run_augmented(&png(&img), &mut |p: PixelPlanes<'_>| {
                let w = p.width;
                p.data.chunks_exact_mut(w).for_each(|row| row.reverse());
            })
            .unwrap();
        assert_eq!(flipped.data[0], plain.data[3]);
        assert_ne!(flipped.data, plain.data);
    }

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
    fn sixteen_bit_tiff_and_rgb_tiff_keep_their_values() {
        let grey = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0u16, 40_000, 65_535][x as usize]]));
        let mut tiff = std::io::Cursor::new(Vec::new());
        grey.write_to(&mut tiff, image::ImageFormat::Tiff).unwrap();
        let t = run(vec![Step::Decode, Step::Grey, NCHW], tiff.get_ref()).unwrap();
        assert_eq!(t.data, vec![0.0, 40_000.0, 65_535.0]);
        let rgb = ImageBuffer::from_pixel(1, 1, Rgb([10u8, 20, 30]));
        let mut tiff = std::io::Cursor::new(Vec::new());
        rgb.write_to(&mut tiff, image::ImageFormat::Tiff).unwrap();
        let t = run(vec![Step::Decode, Step::Rgb, NCHW], tiff.get_ref()).unwrap();
        assert_eq!(t.data, vec![10.0, 20.0, 30.0]);
        let mut bmp = std::io::Cursor::new(Vec::new());
        rgb.write_to(&mut bmp, image::ImageFormat::Bmp).unwrap();
        let t = run(vec![Step::Decode, Step::Rgb, NCHW], bmp.get_ref()).unwrap();
        assert_eq!(t.data, vec![10.0, 20.0, 30.0]);
    }

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

    fn grey_png(w: u32, h: u32, f: impl Fn(u32, u32) -> u16) -> Vec<u8> {
        png(&ImageBuffer::from_fn(w, h, |x, y| Luma([f(x, y)])))
    }

    #[test]
    fn crop_takes_the_declared_region_and_refuses_one_that_does_not_fit() {
        let img = grey_png(5, 4, |x, y| (y * 10 + x) as u16);
        let crop = |x, y, width, height| Step::Crop {
            x,
            y,
            width,
            height,
        };
        let t = run(vec![Step::Decode, Step::Grey, crop(1, 2, 3, 2), NCHW], &img).unwrap();
        assert_eq!(t.shape, [1, 1, 2, 3]);
        assert_eq!(t.data, vec![21.0, 22.0, 23.0, 31.0, 32.0, 33.0]);
        let t = run(vec![Step::Decode, Step::Grey, crop(0, 0, 5, 4), NCHW], &img).unwrap();
        assert_eq!(t.data.len(), 20);
        for bad in [crop(3, 0, 3, 1), crop(0, 3, 1, 2), crop(u32::MAX, 0, 1, 1)] {
            let err = run(vec![Step::Decode, Step::Grey, bad, NCHW], &img).unwrap_err();
            assert!(
                matches!(&err, Error::Preprocess(m) if m.contains("from a 5x4 image")),
                "{err}"
            );
        }
    }

    #[test]
    fn pad_centres_the_image_with_the_odd_pixel_right_and_bottom() {
        let img = grey_png(2, 1, |x, _| (x + 1) as u16);
        let pad = |width, height| Step::Pad {
            width,
            height,
            value: 9.0,
        };
        let t = run(vec![Step::Decode, Step::Grey, pad(5, 4), NCHW], &img).unwrap();
        assert_eq!(t.shape, [1, 1, 4, 5]);
        #[rustfmt::skip]
        assert_eq!(t.data, vec![
            9.0, 9.0, 9.0, 9.0, 9.0,
            9.0, 1.0, 2.0, 9.0, 9.0,
            9.0, 9.0, 9.0, 9.0, 9.0,
            9.0, 9.0, 9.0, 9.0, 9.0,
        ]);
        // A dimension already large enough is left as it is.
        let t = run(vec![Step::Decode, Step::Grey, pad(1, 3), NCHW], &img).unwrap();
        assert_eq!(t.shape, [1, 1, 3, 2]);
        assert_eq!(t.data, vec![9.0, 9.0, 1.0, 2.0, 9.0, 9.0]);
        // Padding is bounded by the pixel limit like decoding.
        let small = Pipeline::from_steps(
            vec![Step::Decode, Step::Grey, pad(1_000, 1_000), NCHW],
            Limits {
                max_encoded_bytes: 1 << 20,
                max_pixels: 10_000,
            },
        );
        assert!(matches!(small.run(&img), Err(Error::TooLarge(_))));
    }

    #[test]
    fn window_maps_center_plus_minus_half_width_onto_0_1_and_clamps() {
        let values = [0u16, 1_000, 1_250, 1_500, 2_000, 65_535];
        let img = grey_png(6, 1, |x, _| values[x as usize]);
        let steps = vec![
            Step::Decode,
            Step::Grey,
            Step::Window {
                center: 1_500.0,
                width: 1_000.0,
            },
            NCHW,
        ];
        let t = run(steps, &img).unwrap();
        assert_eq!(t.data, vec![0.0, 0.0, 0.25, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let mut v = vec![30.0, 0.0, 20.0, 10.0];
        assert_eq!(percentile(&mut v, 0.0), 0.0);
        assert_eq!(percentile(&mut v, 100.0), 30.0);
        assert_eq!(percentile(&mut v, 50.0), 15.0);
        assert!((percentile(&mut v, 10.0) - 3.0).abs() < 1e-9);
        assert_eq!(percentile(&mut [7.0], 50.0), 7.0);
    }

    #[test]
    fn percentile_window_maps_each_images_percentiles_onto_0_1() {
        // 101 values 0, 100, ..., 10,000: the p-th percentile is exactly 100 * p.
        let img = grey_png(101, 1, |x, _| (x * 100) as u16);
        let steps = vec![
            Step::Decode,
            Step::Grey,
            Step::PercentileWindow {
                low: 10.0,
                high: 90.0,
            },
            NCHW,
        ];
        let t = run(steps.clone(), &img).unwrap();
        assert!(t.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(&t.data[..11], &[0.0; 11]);
        assert_eq!(t.data[50], 0.5);
        assert_eq!(&t.data[90..], &[1.0; 11]);
        assert!((t.data[30] - 0.25).abs() < 1e-6, "{}", t.data[30]);
        // A flat image has no spread to stretch: all zeros.
        let flat = grey_png(4, 4, |_, _| 1_234);
        assert_eq!(run(steps, &flat).unwrap().data, vec![0.0; 16]);
    }

    #[test]
    fn tile_starts_end_at_the_edge() {
        assert_eq!(tile::tile_starts(300, 128, 64), vec![0, 64, 128, 172]);
        assert_eq!(tile::tile_starts(130, 128, 64), vec![0, 2]);
        assert_eq!(tile::tile_starts(128, 128, 64), vec![0]);
        assert_eq!(tile::tile_starts(256, 128, 128), vec![0, 128]);
        assert_eq!(tile::tile_starts(5, 2, 1), vec![0, 1, 2, 3]);
    }

    #[test]
    fn run_and_run_tiles_agree_on_which_pipelines_tile() {
        let img = grey_png(6, 4, |x, y| (y * 6 + x) as u16);
        let plain = Pipeline::from_steps(vec![Step::Decode, Step::Grey, NCHW], Limits::default());
        assert!(!plain.tiles());
        let one = plain.run_tiles(&img).unwrap();
        assert_eq!(one.tiles, vec![plain.run(&img).unwrap()]);
        assert_eq!(
            one.grid,
            TileGrid {
                image_width: 6,
                image_height: 4,
                tile_size: 6,
                positions: vec![(0, 0)],
                columns: 1,
                rows: 1,
            }
        );
        let tiled = Pipeline::from_steps(
            vec![
                Step::Decode,
                Step::Grey,
                Step::Tile { size: 4, stride: 2 },
                NCHW,
            ],
            Limits::default(),
        );
        assert!(tiled.tiles());
        let err = tiled.run(&img).unwrap_err();
        assert!(err.to_string().contains("use run_tiles"), "{err}");
        let out = tiled.run_tiles(&img).unwrap();
        assert_eq!(out.grid.positions, vec![(0, 0), (2, 0)]);
        assert_eq!(out.tiles[1].data[..4], [2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn tiles_need_an_image_at_least_as_large_and_a_bounded_count() {
        let img = grey_png(100, 40, |x, _| x as u16);
        let tile = |size, stride| {
            Pipeline::from_steps(
                vec![Step::Decode, Step::Grey, Step::Tile { size, stride }, NCHW],
                Limits {
                    max_encoded_bytes: 1 << 20,
                    max_pixels: 10_000,
                },
            )
        };
        let err = tile(64, 32).run_tiles(&img).unwrap_err();
        assert!(
            matches!(&err, Error::Preprocess(m) if m.contains("add `pad`")),
            "{err}"
        );
        // 61 x 1 tiles of 40x40 repeat each pixel 40 times: more than 4 x 10,000 pixels.
        let err = tile(40, 1).run_tiles(&img).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        assert_eq!(tile(40, 20).run_tiles(&img).unwrap().tiles.len(), 4);
    }
}
