//! The `decode` step: encoded bytes → planes in the native value range.
//!
//! Owns the size limits that apply before anything is allocated and the dispatch between
//! DICOM (by its `DICM` magic) and the formats the `image` crate reads (PNG, JPEG, BMP,
//! TIFF). It must not rescale values: a declared step does that.

use image::DynamicImage;

use super::{Limits, Planes, dicom};
use crate::{Error, Result};

/// Bits per sample of a decoded image and the largest value that depth can hold (what
/// monitoring scales its per-image statistics by).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Depth {
    pub(super) bits: u8,
    pub(super) max: f32,
}

impl Depth {
    fn bits(bits: u8) -> Depth {
        let max = if bits >= 32 {
            1.0
        } else {
            ((1u64 << bits) - 1) as f32
        };
        Depth { bits, max }
    }
}

/// Width, height and samples per pixel (alpha included) from the image's header alone
/// (nothing of the image's size is allocated), refused when larger than `limits` allow.
pub(super) fn dimensions(bytes: &[u8], limits: &Limits) -> Result<(u64, u64, u64)> {
    check_encoded(bytes, limits)?;
    let (w, h, c) = if dicom::is_dicom(bytes) {
        dicom::dimensions(bytes)?
    } else {
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::Decode(e.to_string()))?;
        if reader.format().is_none() {
            return Err(unknown_format());
        }
        let decoder = reader
            .into_decoder()
            .map_err(|e| Error::Decode(e.to_string()))?;
        let (w, h) = image::ImageDecoder::dimensions(&decoder);
        let c = image::ImageDecoder::color_type(&decoder).channel_count();
        (w, h, u32::from(c))
    };
    let (w, h) = (u64::from(w), u64::from(h));
    check_pixels(w, h, limits)?;
    Ok((w, h, u64::from(c.max(1))))
}

fn check_encoded(bytes: &[u8], limits: &Limits) -> Result<()> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(Error::TooLarge(format!(
            "{} bytes encoded; the limit is {}",
            bytes.len(),
            limits.max_encoded_bytes
        )));
    }
    Ok(())
}

fn unknown_format() -> Error {
    Error::Decode(
        "unknown image format (PNG, JPEG, BMP, TIFF and uncompressed DICOM are supported)".into(),
    )
}

/// Decodes one encoded image, refusing it early when it is larger than `limits` allow.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<(Planes, Depth)> {
    check_encoded(bytes, limits)?;
    if dicom::is_dicom(bytes) {
        // The rescale slope and intercept are not in the depth: statistics of a rescaled
        // DICOM image are relative to its stored range.
        let (planes, bits) = dicom::decode(bytes, limits)?;
        return Ok((planes, Depth::bits(bits)));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(unknown_format());
    }
    // Read the header first so a decompression bomb is refused before anything is allocated.
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::Decode(e.to_string()))?;
    check_pixels(u64::from(w), u64::from(h), limits)?;
    let pixels = u64::from(w) * u64::from(h);
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
    let depth = match &img {
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => Depth::bits(32),
        other if other.color().bytes_per_pixel() / other.color().channel_count() >= 2 => {
            Depth::bits(16)
        }
        _ => Depth::bits(8),
    };
    Ok((planes(img), depth))
}

/// Refuses a `w` x `h` image with more pixels than the limit.
pub(super) fn check_pixels(w: u64, h: u64, limits: &Limits) -> Result<()> {
    let pixels = w.saturating_mul(h);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge(format!(
            "{w}x{h} = {pixels} pixels; the limit is {}",
            limits.max_pixels
        )));
    }
    Ok(())
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
    Planes::from_interleaved(c, h, w, interleaved)
}

fn drop_alpha(values: impl Iterator<Item = f32>) -> Vec<f32> {
    values
        .enumerate()
        .filter(|(i, _)| i % 4 != 3)
        .map(|(_, v)| v)
        .collect()
}
