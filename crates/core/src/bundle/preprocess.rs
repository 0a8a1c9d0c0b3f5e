//! The declared preprocessing pipeline: data, not code.
//!
//! A bundle lists its steps in order; the engine crate runs them, one implementation for the
//! server, batch scoring and training. This module only describes and validates the steps.

use serde::{Deserialize, Serialize};

use super::{Error, Result, TensorSpec};

/// One preprocessing step. The pipeline starts with `decode` and ends with `layout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Decode the encoded image (PNG, JPEG, BMP, TIFF, or uncompressed DICOM/DICONDE). Pixel
    /// values keep their native range: 0-255 for 8-bit images, 0-65535 for 16-bit ones (for
    /// DICOM, the stored values after RescaleSlope/RescaleIntercept).
    Decode,
    /// Convert to one grey channel (ITU-R BT.601 luma for colour images).
    Grey,
    /// Convert to three RGB channels (grey is replicated).
    Rgb,
    /// Cut the centre `width` x `height` pixels; images smaller than that are refused.
    CenterCrop {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Cut the fixed region `width` x `height` whose top-left corner is at (`x`, `y`); images
    /// it does not fit in are refused.
    Crop {
        /// Left edge in pixels.
        x: u32,
        /// Top edge in pixels.
        y: u32,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Pad with `value` up to at least `width` x `height`, centring the image (an odd extra
    /// pixel goes to the right or bottom). A dimension already that large is left as it is.
    Pad {
        /// Minimum width in pixels.
        width: u32,
        /// Minimum height in pixels.
        height: u32,
        /// The value of the added pixels, in the range of the values at that step (0 if
        /// omitted).
        #[serde(default)]
        value: f32,
    },
    /// Cut a whole radiograph into `size` x `size` tiles whose top-left corners lie on a
    /// `stride` grid; the last column and row of tiles are moved back to end at the image
    /// edge, so no tile needs padding. An image smaller than `size` is refused (`pad` first).
    /// The steps after `tile` apply to each tile, and the tile size is the image size they
    /// see. At most one `tile` step.
    Tile {
        /// Tile width and height in pixels, > 0.
        size: u32,
        /// Distance between tile corners in pixels, in `1..=size` (`size` for no overlap).
        stride: u32,
    },
    /// Resize to exactly `width` x `height` with the named filter.
    Resize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The interpolation filter.
        filter: ResizeFilter,
    },
    /// Window/level, as a radiograph viewer shows 16-bit data: maps
    /// `[center - width/2, center + width/2]` linearly onto `[0, 1]`; values outside clamp to
    /// 0 or 1.
    Window {
        /// The value mapped to 0.5, in the range of the values at that step.
        center: f32,
        /// The span mapped onto `[0, 1]`, > 0.
        width: f32,
    },
    /// A window fitted to each image (each tile, after `tile`): maps the `low`-th to the
    /// `high`-th percentile of its values (all channels together) linearly onto `[0, 1]`,
    /// clamping outside. Percentiles interpolate linearly between the two nearest ranks of
    /// the sorted values (NumPy's default). An image whose two percentiles are equal maps to 0.
    PercentileWindow {
        /// Lower percentile, in `[0, high)`.
        low: f32,
        /// Upper percentile, in `(low, 100]`.
        high: f32,
    },
    /// Multiply every value by `factor` (`1/255` maps 8-bit data to `[0, 1]`).
    Scale {
        /// The factor.
        factor: f32,
    },
    /// Per channel: `(x - mean[c]) / std[c]`.
    Normalize {
        /// One mean per channel.
        mean: Vec<f32>,
        /// One standard deviation per channel, each > 0.
        std: Vec<f32>,
    },
    /// Each image to zero mean and unit variance (films differ in exposure):
    /// `(x - mean) / max(std, eps)`.
    Standardize {
        /// Floor for the standard deviation, so a flat image does not divide by zero.
        #[serde(default = "default_eps")]
        eps: f32,
    },
    /// Lay the pixels out as the model's input expects.
    Layout {
        /// `nchw` (channels first) or `nhwc` (channels last).
        order: Layout,
    },
}

fn default_eps() -> f32 {
    1e-6
}

/// Interpolation filters for `resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ResizeFilter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

/// Tensor layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Batch, channels, height, width.
    Nchw,
    /// Batch, height, width, channels.
    Nhwc,
}

impl Layout {
    /// (channels, height, width) read from a rank-4 shape in this layout.
    pub fn chw(self, shape: &[i64]) -> (i64, i64, i64) {
        match self {
            Layout::Nchw => (shape[1], shape[2], shape[3]),
            Layout::Nhwc => (shape[3], shape[1], shape[2]),
        }
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::ManifestInvalid {
        field: "preprocess".into(),
        reason: reason.into(),
    }
}

/// Checks a pipeline against the model input it must produce.
///
/// The image size is tracked through the steps: `resize`, `center_crop`, `crop` and `tile`
/// fix it, `pad` keeps it fixed only when it was already known. When the pipeline tiles, the
/// tile size is what the later steps (and so the model) see.
pub fn validate(steps: &[Step], input: &TensorSpec) -> Result<()> {
    if steps.first() != Some(&Step::Decode) {
        return Err(invalid("the first step must be `decode`"));
    }
    let Some(Step::Layout { order }) = steps.last() else {
        return Err(invalid("the last step must be `layout`"));
    };
    let (c, h, w) = order.chw(&input.shape);
    if !(c == 1 || c == 3 || c == -1) {
        return Err(invalid(format!(
            "the model input has {c} channels in {order:?} layout; only 1 (grey) or 3 (RGB) are supported"
        )));
    }
    // Track what the pipeline produces so that a mismatch is caught when the bundle is made,
    // not at the first request.
    let mut channels: Option<i64> = None;
    // (height, width) when every image has that size at this point.
    let mut size: Option<(i64, i64)> = None;
    let mut tiled = false;
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Decode if i > 0 => return Err(invalid("`decode` may only be the first step")),
            Step::Layout { .. } if i + 1 < steps.len() => {
                return Err(invalid("`layout` may only be the last step"));
            }
            Step::Grey => channels = Some(1),
            Step::Rgb => channels = Some(3),
            Step::CenterCrop { width, height } => {
                let (ch, cw) = positive_size(n, *width, *height)?;
                if let Some((sh, sw)) = size
                    && (ch > sh || cw > sw)
                {
                    return Err(invalid(format!(
                        "step {n}: `center_crop` {cw}x{ch} is larger than the {sw}x{sh} image the steps before it make"
                    )));
                }
                size = Some((ch, cw));
            }
            Step::Resize { width, height, .. } => size = Some(positive_size(n, *width, *height)?),
            Step::Crop {
                x,
                y,
                width,
                height,
            } => {
                let (ch, cw) = positive_size(n, *width, *height)?;
                if let Some((sh, sw)) = size
                    && (i64::from(*x) + cw > sw || i64::from(*y) + ch > sh)
                {
                    return Err(invalid(format!(
                        "step {n}: `crop` {cw}x{ch} at ({x}, {y}) does not fit the {sw}x{sh} image the steps before it make"
                    )));
                }
                size = Some((ch, cw));
            }
            Step::Pad {
                width,
                height,
                value,
            } => {
                let (ph, pw) = positive_size(n, *width, *height)?;
                if !value.is_finite() {
                    return Err(invalid(format!("step {n}: `pad` value must be finite")));
                }
                // Padding an image of unknown size leaves its size unknown ("at least").
                size = size.map(|(sh, sw)| (sh.max(ph), sw.max(pw)));
            }
            Step::Tile { size: t, stride } => {
                if tiled {
                    return Err(invalid(format!(
                        "step {n}: only one `tile` step is allowed"
                    )));
                }
                tiled = true;
                if *t == 0 {
                    return Err(invalid(format!("step {n}: `tile` size must be > 0")));
                }
                if *stride == 0 || stride > t {
                    return Err(invalid(format!(
                        "step {n}: `tile` stride must be in 1..={t} (the tile size), got {stride}"
                    )));
                }
                let t = i64::from(*t);
                if let Some((sh, sw)) = size
                    && (sh < t || sw < t)
                {
                    return Err(invalid(format!(
                        "step {n}: the steps before `tile` make {sw}x{sh} images, smaller than the {t}x{t} tiles; add `pad` before `tile`"
                    )));
                }
                size = Some((t, t));
            }
            Step::Window { center, width }
                if !(center.is_finite() && width.is_finite() && *width > 0.0) =>
            {
                return Err(invalid(format!(
                    "step {n}: `window` center must be finite and width finite and > 0"
                )));
            }
            Step::PercentileWindow { low, high }
                if !(low.is_finite()
                    && high.is_finite()
                    && 0.0 <= *low
                    && low < high
                    && *high <= 100.0) =>
            {
                return Err(invalid(format!(
                    "step {n}: `percentile_window` needs 0 <= low < high <= 100, got low {low} and high {high}"
                )));
            }
            Step::Scale { factor } if !factor.is_finite() || *factor == 0.0 => {
                return Err(invalid(format!(
                    "step {n}: scale factor must be finite and non-zero"
                )));
            }
            Step::Normalize { mean, std } => {
                let n = channels.ok_or_else(|| {
                    invalid("`normalize` needs a `grey` or `rgb` step before it to fix the channel count")
                })?;
                if mean.len() as i64 != n || std.len() as i64 != n {
                    return Err(invalid(format!(
                        "`normalize` needs {n} mean and {n} std values, got {} and {}",
                        mean.len(),
                        std.len()
                    )));
                }
                if std.iter().any(|s| !(s.is_finite() && *s > 0.0))
                    || mean.iter().any(|m| !m.is_finite())
                {
                    return Err(invalid(
                        "`normalize` std values must be > 0 and all values finite",
                    ));
                }
            }
            Step::Standardize { eps } if !(eps.is_finite() && *eps > 0.0) => {
                return Err(invalid("`standardize` eps must be > 0"));
            }
            _ => {}
        }
    }
    let Some(channels) = channels else {
        return Err(invalid(
            "declare `grey` or `rgb` so the channel count does not depend on the file",
        ));
    };
    if c > 0 && channels != c {
        return Err(invalid(format!(
            "the pipeline makes {channels} channel(s) but the model input {:?} takes {c}",
            input.name
        )));
    }
    let Some((ph, pw)) = size else {
        return Err(invalid(
            "declare `resize`, `center_crop`, `crop` or `tile` (after any `pad`) so the image size does not depend on the file",
        ));
    };
    if (h > 0 && ph != h) || (w > 0 && pw != w) {
        let what = if tiled { "tiles" } else { "images" };
        return Err(invalid(format!(
            "the pipeline makes {pw}x{ph} {what} but the model input {:?} takes {w}x{h}",
            input.name
        )));
    }
    Ok(())
}

/// (height, width) of a step's declared size; both must be > 0.
fn positive_size(step: usize, width: u32, height: u32) -> Result<(i64, i64)> {
    if width == 0 || height == 0 {
        return Err(invalid(format!(
            "step {step}: width and height must be > 0"
        )));
    }
    Ok((i64::from(height), i64::from(width)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::manifest::DType;

    /// A float input of the given NCHW shape.
    fn spec(shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: "image".into(),
            dtype: DType::Float32,
            shape: shape.to_vec(),
        }
    }

    const NCHW: Step = Step::Layout {
        order: Layout::Nchw,
    };

    /// decode → grey → `middle` → layout, checked against a `[-1, 1, 128, 128]` input.
    fn check(middle: Vec<Step>) -> Result<()> {
        let mut steps = vec![Step::Decode, Step::Grey];
        steps.extend(middle);
        steps.push(NCHW);
        validate(&steps, &spec(&[-1, 1, 128, 128]))
    }

    fn reason(r: Result<()>) -> String {
        match r {
            Err(Error::ManifestInvalid { field, reason }) => {
                assert_eq!(field, "preprocess");
                reason
            }
            other => panic!("expected an invalid manifest, got {other:?}"),
        }
    }

    fn tile(size: u32, stride: u32) -> Step {
        Step::Tile { size, stride }
    }

    fn resize(width: u32, height: u32) -> Step {
        Step::Resize {
            width,
            height,
            filter: ResizeFilter::Bilinear,
        }
    }

    #[test]
    fn new_steps_parse_with_their_snake_case_names_and_pad_defaults_to_zero() {
        #[derive(Deserialize)]
        struct P {
            preprocess: Vec<Step>,
        }
        let p: P = toml::from_str(
            r#"
            [[preprocess]]
            op = "window"
            center = 30000.0
            width = 20000.0
            [[preprocess]]
            op = "percentile_window"
            low = 1.0
            high = 99.0
            [[preprocess]]
            op = "crop"
            x = 1
            y = 2
            width = 3
            height = 4
            [[preprocess]]
            op = "pad"
            width = 5
            height = 6
            [[preprocess]]
            op = "tile"
            size = 128
            stride = 64
            "#,
        )
        .unwrap();
        assert_eq!(
            p.preprocess,
            vec![
                Step::Window {
                    center: 30000.0,
                    width: 20000.0
                },
                Step::PercentileWindow {
                    low: 1.0,
                    high: 99.0
                },
                Step::Crop {
                    x: 1,
                    y: 2,
                    width: 3,
                    height: 4
                },
                Step::Pad {
                    width: 5,
                    height: 6,
                    value: 0.0
                },
                tile(128, 64),
            ]
        );
        let unknown = toml::from_str::<P>(
            "[[preprocess]]\nop = \"tile\"\nsize = 8\nstride = 8\noverlap = 1\n",
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn a_tile_step_fixes_the_size_the_model_sees() {
        check(vec![tile(128, 64), Step::Standardize { eps: 1e-6 }]).unwrap();
        check(vec![
            Step::Window {
                center: 1000.0,
                width: 500.0,
            },
            tile(128, 128),
        ])
        .unwrap();
        let r = reason(check(vec![tile(64, 64)]));
        assert!(r.contains("64x64 tiles") && r.contains("128x128"), "{r}");
        // A resize after the tile step decides the size instead.
        check(vec![tile(64, 32), resize(128, 128)]).unwrap();
        let r = reason(check(vec![tile(128, 64), resize(64, 64)]));
        assert!(r.contains("makes 64x64 tiles"), "{r}");
    }

    #[test]
    fn tile_parameters_are_checked() {
        let r = reason(check(vec![tile(0, 1)]));
        assert!(r.contains("size must be > 0"), "{r}");
        let r = reason(check(vec![tile(128, 0)]));
        assert!(r.contains("stride must be in 1..=128"), "{r}");
        let r = reason(check(vec![tile(128, 129)]));
        assert!(r.contains("stride must be in 1..=128"), "{r}");
        let r = reason(check(vec![tile(128, 64), tile(128, 64)]));
        assert!(r.contains("only one `tile`"), "{r}");
    }

    #[test]
    fn tiles_larger_than_a_known_image_size_ask_for_pad() {
        let r = reason(check(vec![resize(100, 200), tile(128, 64)]));
        assert!(r.contains("100x200") && r.contains("`pad`"), "{r}");
        check(vec![
            resize(100, 200),
            Step::Pad {
                width: 128,
                height: 128,
                value: 0.0,
            },
            tile(128, 64),
        ])
        .unwrap();
    }

    #[test]
    fn crop_needs_a_positive_size_that_fits_a_known_image() {
        let crop = |x, y, width, height| Step::Crop {
            x,
            y,
            width,
            height,
        };
        check(vec![crop(10, 20, 128, 128)]).unwrap();
        let r = reason(check(vec![crop(0, 0, 0, 128)]));
        assert!(r.contains("width and height must be > 0"), "{r}");
        check(vec![resize(256, 256), crop(128, 128, 128, 128)]).unwrap();
        let r = reason(check(vec![resize(256, 256), crop(129, 0, 128, 128)]));
        assert!(r.contains("does not fit the 256x256"), "{r}");
        let r = reason(check(vec![crop(0, 0, 64, 64)]));
        assert!(r.contains("64x64 images"), "{r}");
        let r = reason(check(vec![
            resize(100, 100),
            Step::CenterCrop {
                width: 128,
                height: 128,
            },
        ]));
        assert!(r.contains("larger than the 100x100"), "{r}");
    }

    #[test]
    fn pad_keeps_a_known_size_and_cannot_fix_an_unknown_one() {
        let pad = |width, height, value| Step::Pad {
            width,
            height,
            value,
        };
        check(vec![resize(100, 128), pad(128, 64, 0.0)]).unwrap();
        let r = reason(check(vec![resize(100, 128), pad(128, 200, 0.0)]));
        assert!(r.contains("128x200 images"), "{r}");
        let r = reason(check(vec![pad(128, 128, 0.0)]));
        assert!(r.contains("does not depend on the file"), "{r}");
        let r = reason(check(vec![resize(128, 128), pad(0, 128, 0.0)]));
        assert!(r.contains("must be > 0"), "{r}");
        let r = reason(check(vec![resize(128, 128), pad(128, 128, f32::NAN)]));
        assert!(r.contains("finite"), "{r}");
    }

    #[test]
    fn window_needs_a_finite_center_and_a_positive_width() {
        let window = |center, width| Step::Window { center, width };
        check(vec![window(32_768.0, 65_535.0), resize(128, 128)]).unwrap();
        for bad in [
            window(0.0, 0.0),
            window(0.0, -1.0),
            window(f32::NAN, 1.0),
            window(0.0, f32::INFINITY),
        ] {
            let r = reason(check(vec![bad.clone(), resize(128, 128)]));
            assert!(r.contains("`window`"), "{bad:?}: {r}");
        }
    }

    #[test]
    fn percentile_window_needs_ordered_percentiles_within_0_and_100() {
        let pw = |low, high| Step::PercentileWindow { low, high };
        check(vec![pw(0.0, 100.0), resize(128, 128)]).unwrap();
        check(vec![pw(0.5, 99.5), resize(128, 128)]).unwrap();
        for bad in [
            pw(-1.0, 50.0),
            pw(0.0, 100.5),
            pw(50.0, 50.0),
            pw(60.0, 40.0),
            pw(f32::NAN, 40.0),
        ] {
            let r = reason(check(vec![bad.clone(), resize(128, 128)]));
            assert!(r.contains("0 <= low < high <= 100"), "{bad:?}: {r}");
        }
    }

    #[test]
    fn channel_rules_still_hold_around_a_tile_step() {
        let steps = vec![
            Step::Decode,
            tile(128, 64),
            Step::Normalize {
                mean: vec![0.0],
                std: vec![1.0],
            },
            NCHW,
        ];
        let r = reason(validate(&steps, &spec(&[-1, 1, 128, 128])));
        assert!(r.contains("`normalize` needs a `grey` or `rgb`"), "{r}");
        let steps = vec![Step::Decode, tile(128, 64), Step::Rgb, NCHW];
        validate(&steps, &spec(&[-1, 3, 128, 128])).unwrap();
        let r = reason(validate(&steps, &spec(&[-1, 1, 128, 128])));
        assert!(r.contains("makes 3 channel(s)"), "{r}");
        let r = reason(validate(
            &[Step::Decode, tile(128, 64), NCHW],
            &spec(&[-1, 1, 128, 128]),
        ));
        assert!(r.contains("declare `grey` or `rgb`"), "{r}");
    }
}
