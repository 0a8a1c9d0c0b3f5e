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
    /// Decode the encoded image (PNG, JPEG, BMP, TIFF). Pixel values keep their native range:
    /// 0-255 for 8-bit images, 0-65535 for 16-bit ones.
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
    /// Resize to exactly `width` x `height` with the named filter.
    Resize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The interpolation filter.
        filter: ResizeFilter,
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
    let mut size: Option<(i64, i64)> = None;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Decode if i > 0 => return Err(invalid("`decode` may only be the first step")),
            Step::Layout { .. } if i + 1 < steps.len() => {
                return Err(invalid("`layout` may only be the last step"));
            }
            Step::Grey => channels = Some(1),
            Step::Rgb => channels = Some(3),
            Step::CenterCrop { width, height } | Step::Resize { width, height, .. } => {
                if *width == 0 || *height == 0 {
                    return Err(invalid(format!(
                        "step {}: width and height must be > 0",
                        i + 1
                    )));
                }
                size = Some((i64::from(*height), i64::from(*width)));
            }
            Step::Scale { factor } if !factor.is_finite() || *factor == 0.0 => {
                return Err(invalid(format!(
                    "step {}: scale factor must be finite and non-zero",
                    i + 1
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
            "declare `resize` or `center_crop` so the image size does not depend on the file",
        ));
    };
    if (h > 0 && ph != h) || (w > 0 && pw != w) {
        return Err(invalid(format!(
            "the pipeline makes {pw}x{ph} images but the model input {:?} takes {w}x{h}",
            input.name
        )));
    }
    Ok(())
}
