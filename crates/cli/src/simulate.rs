//! Simulated changes of the imaging chain, for the demo and the drift benchmark: what a new
//! detector panel (blur, noise, gain) or a new exposure (brightness and gamma) does to a
//! radiograph. Deterministic for a seed, on 8- and 16-bit grey images.

use anyhow::Context as _;
use image::{DynamicImage, ImageBuffer, Luma};
use vigil_core::drift::rng::SplitMix64;

/// A change of the imaging chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// A new detector: Gaussian blur of `blur` pixels (σ), additive Gaussian noise of `noise`
    /// (σ, share of full scale), and a gain.
    Detector {
        /// Blur σ in pixels (0: none).
        blur: f32,
        /// Noise σ as a share of full scale.
        noise: f32,
        /// Multiplier of the intensity.
        gain: f32,
    },
    /// A new exposure or tube setting: `I' = offset + I^gamma` on intensities in [0, 1].
    Exposure {
        /// Gamma (below 1 brightens mid-tones).
        gamma: f32,
        /// Added to every intensity (share of full scale).
        offset: f32,
    },
}

impl Change {
    /// The demo's new detector: softer, noisier, a little hotter.
    pub const NEW_DETECTOR: Change = Change::Detector {
        blur: 1.5,
        noise: 0.04,
        gain: 1.15,
    };
    /// The demo's exposure change: brighter, flatter.
    pub const NEW_EXPOSURE: Change = Change::Exposure {
        gamma: 0.7,
        offset: 0.08,
    };

    /// In words, for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Change::Detector { blur, noise, gain } => format!(
                "new detector (blur σ {blur} px, noise σ {:.0}% of full scale, gain ×{gain})",
                noise * 100.0
            ),
            Change::Exposure { gamma, offset } => format!(
                "exposure change (gamma {gamma}, {:+.0}% brightness)",
                offset * 100.0
            ),
        }
    }
}

/// Applies `change` to an encoded grey image and encodes the result as PNG of the same bit
/// depth (colour images are made grey).
pub fn apply(encoded: &[u8], change: Change, seed: u64) -> anyhow::Result<Vec<u8>> {
    let img = image::load_from_memory(encoded).context("cannot decode the image")?;
    let sixteen = matches!(
        img,
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) | DynamicImage::ImageRgb16(_)
    );
    let grey = img.to_luma32f();
    let (w, h) = grey.dimensions();
    let mut v: Vec<f32> = grey.into_raw();
    match change {
        Change::Detector { blur, noise, gain } => {
            if blur > 0.0 {
                v = gaussian_blur(&v, w as usize, h as usize, blur);
            }
            let mut rng = SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15);
            for x in &mut v {
                *x = *x * gain + noise * normal(&mut rng);
            }
        }
        Change::Exposure { gamma, offset } => {
            for x in &mut v {
                *x = offset + x.clamp(0.0, 1.0).powf(gamma);
            }
        }
    }
    let mut out = Vec::new();
    let cursor = &mut std::io::Cursor::new(&mut out);
    if sixteen {
        let buf = ImageBuffer::<Luma<u16>, _>::from_raw(
            w,
            h,
            v.iter()
                .map(|x| (x.clamp(0.0, 1.0) * 65535.0).round() as u16)
                .collect(),
        )
        .context("image size")?;
        DynamicImage::ImageLuma16(buf).write_to(cursor, image::ImageFormat::Png)?;
    } else {
        let buf = ImageBuffer::<Luma<u8>, _>::from_raw(
            w,
            h,
            v.iter()
                .map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect(),
        )
        .context("image size")?;
        DynamicImage::ImageLuma8(buf).write_to(cursor, image::ImageFormat::Png)?;
    }
    Ok(out)
}

/// Separable Gaussian blur with clamped edges.
fn gaussian_blur(v: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let pass = |src: &[f32], horizontal: bool| {
        let mut dst = vec![0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (k, i) in kernel.iter().zip(-r..=r) {
                    let (xx, yy) = if horizontal {
                        ((x as isize + i).clamp(0, w as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + i).clamp(0, h as isize - 1) as usize)
                    };
                    acc += k * src[yy * w + xx];
                }
                dst[y * w + x] = acc;
            }
        }
        dst
    };
    pass(&pass(v, true), false)
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut SplitMix64) -> f32 {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, y| Luma([((x * 7 + y * 3) % 200 + 20) as u8]));
        let mut out = Vec::new();
        DynamicImage::ImageLuma8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn changes_move_the_statistics_monitoring_watches() {
        use vigil_core::monitor::ImageStats;
        let stats = |bytes: &[u8]| {
            let g = image::load_from_memory(bytes).unwrap().to_luma8();
            let v: Vec<f32> = g.as_raw().iter().map(|&x| f32::from(x)).collect();
            ImageStats::compute(&v, 64, 64, 8, 255.0)
        };
        let original = png(64, 64);
        let base = stats(&original);
        let detector = stats(&apply(&original, Change::NEW_DETECTOR, 1).unwrap());
        assert!(detector.noise > base.noise, "{detector:?} vs {base:?}");
        assert!(detector.mean > base.mean);
        let exposure = stats(&apply(&original, Change::NEW_EXPOSURE, 1).unwrap());
        assert!(exposure.mean > base.mean + 0.05);
        assert_eq!(
            apply(&original, Change::NEW_DETECTOR, 7).unwrap(),
            apply(&original, Change::NEW_DETECTOR, 7).unwrap(),
            "deterministic for a seed"
        );
        assert!(apply(b"not an image", Change::NEW_EXPOSURE, 0).is_err());
    }
}
