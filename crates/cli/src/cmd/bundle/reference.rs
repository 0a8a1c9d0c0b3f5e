//! `vigil bundle reference` (and `bundle create --reference`): a bundle's reference profile
//! from images, or a profile file included as is.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use vigil_core::bundle::{Bundle, BundleWriter, MODEL_FILE, Manifest, REFERENCE_FILE};

use crate::cmd::Context;

/// Arguments of `bundle reference`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// The bundle folder or archive.
    pub bundle: PathBuf,
    /// Images to compute the profile from (folders, globs, CSV manifests), or one
    /// reference.json to include as is. Use images the model was not trained on.
    #[arg(long, required = true, num_args = 1.., value_name = "JSON|DATA")]
    pub data: Vec<String>,
    /// With a CSV manifest: only rows whose `split` column is this (e.g. val).
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<String>,
    /// Images per drift window; the data must hold at least four windows of images
    /// (default: 200, or the largest multiple of 25 the images allow).
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// Images for the image-statistic signals (brightness, contrast, sharpness, noise, ...)
    /// and the out-of-distribution model, every row of a manifest whatever its split: give
    /// every film there is, training films included. The statistics do not depend on the
    /// model, and a few validation films show too little of how films differ, so thresholds
    /// calibrated on them alarm whenever a window holds mostly one film; the
    /// out-of-distribution flag then asks whether an image resembles any film the model
    /// was built from. The embedding and prediction drift signals still come from --data.
    /// Default: --data.
    #[arg(long, num_args = 1.., value_name = "DATA")]
    pub stats_data: Vec<String>,
    /// Consecutive images that are correlated (one film's tiles, one batch's parts): the
    /// thresholds are calibrated on windows made of runs this long, so that they vary as
    /// much as live windows do. A value of the window or more calibrates on contiguous
    /// windows, right when one film fills a window (default: 25).
    #[arg(long, value_name = "N")]
    pub block_length: Option<usize>,
    /// Target false alarms: window evaluations that alarm per 10,000 in-distribution images
    /// (default 1). Live traffic alarms more often than the reference's own resampled windows
    /// promise, so set half the rate that must not be exceeded. Lower finds changes later.
    #[arg(long, value_name = "RATE")]
    pub false_alarms: Option<f64>,
    /// Where to write the new bundle (a folder, or an archive: .tar, .tar.gz, .tgz).
    #[arg(long, short, value_name = "PATH")]
    pub out: PathBuf,
}

/// The bytes of `reference.json`: a profile file included as is (after checking it parses),
/// or one built from images with the bundle's model; `None` when nothing was asked for.
pub(super) fn reference_bytes(
    ctx: &Context,
    manifest: &Manifest,
    model: &[u8],
    data: &crate::reference::ReferenceData<'_>,
) -> anyhow::Result<Option<Vec<u8>>> {
    use vigil_core::monitor::ReferenceProfile;
    match data.inputs {
        [] => Ok(None),
        [one] if crate::reference::is_profile_file(one) => {
            if !data.stats_from.is_empty() {
                return Err(vigil_core::monitor::MonitorError::InvalidConfig {
                    name: "stats-data",
                    reason: format!(
                        "applies when the profile is computed from images, not to {one}, which is included as is"
                    ),
                }
                .into());
            }
            let bytes = std::fs::read(one).with_context(|| format!("cannot read {one}"))?;
            ReferenceProfile::from_json(&bytes)
                .with_context(|| format!("{one} is not a reference profile"))?;
            Ok(Some(bytes))
        }
        _ => {
            let profile = crate::reference::build(manifest, model, &ctx.config.engine(), data)?;
            Ok(Some(profile.to_json()?))
        }
    }
}

/// `vigil bundle reference`: the same bundle with a new reference profile.
pub(super) fn rebuild_reference(ctx: &Context, args: &ReferenceArgs) -> anyhow::Result<Bundle> {
    let b = Bundle::open(&args.bundle)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    let files = b
        .verify_files()
        .context("refusing to change a bundle that does not verify")?;
    let model = files
        .get(MODEL_FILE)
        .with_context(|| format!("the bundle has no {MODEL_FILE}"))?;
    let bytes = reference_bytes(
        ctx,
        b.manifest(),
        model,
        &crate::reference::ReferenceData {
            inputs: &args.data,
            split: args.split.as_deref(),
            window: args.window,
            stats_from: &args.stats_data,
            block_length: args.block_length,
            alarms_per_10k: args.false_alarms,
        },
    )?
    .context("no reference data given")?;
    if b.signature()?.is_some() {
        tracing::warn!(
            "The new bundle is not signed: its identity changed; sign it again with `vigil bundle sign`."
        );
    }
    let mut writer = BundleWriter::new(b.manifest().clone());
    for (path, content) in files {
        if path != REFERENCE_FILE {
            writer.add_file(&path, content)?;
        }
    }
    writer.add_file(REFERENCE_FILE, bytes)?;
    Ok(writer.write(&args.out)?)
}
