//! Augmentation that respects radiographs: flips, small shifts, brightness, contrast and
//! gamma jitter, grain noise. No colour tricks, no rotations that would tilt the weld seam,
//! no crops that would change what the tile's centre shows.
//!
//! It runs on the pixels in their native range, inside the bundle's own preprocessing
//! ([`vigil_engine::preprocess::Pipeline::run_augmented`]), just before the first step that
//! maps values. With per-tile standardisation (the weld model's pipeline) a linear
//! brightness or contrast change is undone by that step by design; the gamma jitter and the
//! noise are what then vary the exposure the model sees.

use serde::Serialize;
use vigil_engine::preprocess::PixelPlanes;

use crate::rng::Rng;

/// How strongly to perturb each training image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Augment {
    /// Flip left-right and top-bottom, each with probability 1/2.
    pub flips: bool,
    /// Largest shift in pixels, in x and y (edges are repeated).
    pub max_shift: usize,
    /// Contrast factor range: `[1/c, c]` around the tile's mean.
    pub contrast: f32,
    /// Brightness offset range, as a fraction of the value range.
    pub brightness: f32,
    /// Gamma range: `[1/g, g]`, applied to values scaled to [0, 1].
    pub gamma: f32,
    /// Largest grain-noise standard deviation, as a fraction of the value range.
    pub noise: f32,
}

impl Default for Augment {
    fn default() -> Self {
        // Mild on purpose: pores and fine cracks differ from their surroundings by a few grey
        // levels, and stronger noise or gamma (tried: 2% noise, gamma 1.25, 8 px shifts)
        // drowned them and cost validation ROC-AUC.
        Augment {
            flips: true,
            max_shift: 4,
            contrast: 1.2,
            brightness: 0.05,
            gamma: 1.1,
            noise: 0.005,
        }
    }
}

impl Augment {
    /// No augmentation at all.
    pub fn none() -> Self {
        Augment {
            flips: false,
            max_shift: 0,
            contrast: 1.0,
            brightness: 0.0,
            gamma: 1.0,
            noise: 0.0,
        }
    }

    /// Perturbs one image in place; the same `rng` state gives the same result.
    pub fn apply(&self, img: PixelPlanes<'_>, rng: &mut Rng) {
        let (h, w) = (img.height, img.width);
        let plane = h * w;
        if plane == 0 {
            return;
        }
        let flip_x = self.flips && rng.coin();
        let flip_y = self.flips && rng.coin();
        let shift = self.max_shift as i64;
        let (dx, dy) = if shift > 0 {
            (
                rng.below(2 * shift as usize + 1) as i64 - shift,
                rng.below(2 * shift as usize + 1) as i64 - shift,
            )
        } else {
            (0, 0)
        };
        let max = img.data.iter().copied().fold(0.0f32, f32::max);
        let range = if max <= 255.0 { 255.0 } else { 65535.0 };
        let log = |r: f32| r.max(1.0).ln();
        let contrast = rng.range(-log(self.contrast), log(self.contrast)).exp();
        let gamma = rng.range(-log(self.gamma), log(self.gamma)).exp();
        let brightness = rng.range(-self.brightness, self.brightness) * range;
        let sigma = rng.range(0.0, self.noise) * range;
        for p in img.data.chunks_exact_mut(plane) {
            if flip_x || flip_y || dx != 0 || dy != 0 {
                let src = p.to_vec();
                for y in 0..h {
                    let sy = (y as i64 - dy).clamp(0, h as i64 - 1) as usize;
                    let sy = if flip_y { h - 1 - sy } else { sy };
                    for x in 0..w {
                        let sx = (x as i64 - dx).clamp(0, w as i64 - 1) as usize;
                        let sx = if flip_x { w - 1 - sx } else { sx };
                        p[y * w + x] = src[sy * w + sx];
                    }
                }
            }
            let mean = p.iter().sum::<f32>() / plane as f32;
            for v in p.iter_mut() {
                let mut x = mean + (*v - mean) * contrast + brightness;
                x = range * (x / range).clamp(0.0, 1.0).powf(gamma);
                if sigma > 0.0 {
                    x += sigma * rng.normal();
                }
                *v = x.clamp(0.0, range);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<f32> {
        (0..64).map(|i| (i * 3) as f32).collect()
    }

    fn run(a: &Augment, data: &mut [f32], seed: u64) {
        let mut rng = Rng::derive(seed, &[]);
        a.apply(
            PixelPlanes {
                channels: 1,
                height: 8,
                width: 8,
                data,
            },
            &mut rng,
        );
    }

    #[test]
    fn none_changes_nothing_and_default_is_deterministic() {
        let mut d = image();
        run(&Augment::none(), &mut d, 1);
        assert_eq!(d, image());
        let (mut a, mut b, mut c) = (image(), image(), image());
        run(&Augment::default(), &mut a, 5);
        run(&Augment::default(), &mut b, 5);
        run(&Augment::default(), &mut c, 6);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (0.0..=255.0).contains(v)));
    }

    #[test]
    fn flips_mirror_the_image() {
        let a = Augment {
            flips: true,
            ..Augment::none()
        };
        // Find seeds that flip: a flipped image keeps its values, moved.
        let mut flipped = 0;
        for seed in 0..20 {
            let mut d = image();
            run(&a, &mut d, seed);
            let mut sorted = d.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, image(), "a flip only moves pixels");
            if d != image() {
                flipped += 1;
            }
        }
        assert!(flipped > 10, "{flipped} of 20 seeds flipped");
    }
}
