//! Building a bundle's reference profile (`reference.json`) from images: each image goes
//! through the bundle's own pipeline and model exactly as `vigil serve` runs it
//! (`vigil_engine::observe`), then `ReferenceProfile::build` keeps samples and calibrates the
//! drift thresholds. Used by `vigil bundle create --reference DATA` and
//! `vigil bundle reference`.

use std::path::Path;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_core::bundle::Manifest;
use vigil_core::monitor::{Observation, ReferenceConfig, ReferenceProfile};
use vigil_engine::EngineConfig;
use vigil_engine::preprocess::{Limits, Pipeline};

use crate::score::inputs::{self, Input};

/// Where the reference images come from.
#[derive(Debug, Clone)]
pub struct ReferenceData<'a> {
    /// Folders, globs or CSV manifests (as `vigil score` takes them).
    pub inputs: &'a [String],
    /// Only manifest rows whose `split` column is this (e.g. `val`).
    pub split: Option<&'a str>,
    /// Images per drift window; `None`: 200, or what the images allow.
    pub window: Option<usize>,
    /// Images for the image statistics alone (every row of a manifest, any split; empty:
    /// `inputs`). See `ReferenceProfile::build_with_image_stats`.
    pub stats_from: &'a [String],
    /// Run length of the calibration's block resampling; `None`: the default (25).
    pub block_length: Option<usize>,
    /// Target alarming windows per 10,000 in-distribution images; `None`: the default (1).
    pub alarms_per_10k: Option<f64>,
}

/// Whether `arg` names an existing reference profile to include as is (a `.json` file).
pub fn is_profile_file(arg: &str) -> bool {
    Path::new(arg)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        && Path::new(arg).is_file()
}

/// Observes every image of `data` with the bundle's model and builds its reference profile.
/// Images that fail to decode are skipped with a warning; at least
/// `4 × window` must remain.
pub fn build(
    manifest: &Manifest,
    model: &[u8],
    engine: &EngineConfig,
    data: &ReferenceData<'_>,
) -> anyhow::Result<ReferenceProfile> {
    let images = select(data)?;
    let mut backend = vigil_engine::load(model, manifest, engine)?;
    let pipeline = Pipeline::new(manifest, Limits::default()).observing();
    let mut observe = |images: &[Input], what: &str| {
        observe_all(manifest, &pipeline, backend.as_mut(), images, what)
    };
    let (observations, skipped) = observe(&images, "reference")?;
    let stat_images = if data.stats_from.is_empty() {
        None
    } else {
        let all = select(&ReferenceData {
            inputs: data.stats_from,
            split: None,
            ..data.clone()
        })?;
        Some(observe(&all, "image statistics")?)
    };
    let labels: Vec<String> = manifest
        .model
        .labels
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut source = format!(
        "{}{} ({} images{})",
        data.inputs.join(", "),
        data.split.map_or(String::new(), |s| format!(" split {s}")),
        observations.len(),
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        }
    );
    if let Some((stats, _)) = &stat_images {
        source.push_str(&format!(
            "; image statistics from {} ({} images)",
            data.stats_from.join(", "),
            stats.len()
        ));
    }
    let cfg = match data.window {
        Some(window) => ReferenceConfig {
            window,
            ..ReferenceConfig::default()
        },
        None => ReferenceConfig::for_images(observations.len()).with_context(|| {
            format!(
                "{} images are too few for a reference profile (at least 100)",
                observations.len()
            )
        })?,
    };
    let cfg = ReferenceConfig {
        block_length: data
            .block_length
            .map_or(cfg.block_length, |b| b.min(cfg.window)),
        ..cfg
    };
    let cfg = match data.alarms_per_10k {
        Some(rate) => cfg.with_alarms_per_10k(rate)?,
        None => cfg,
    };
    let profile = match &stat_images {
        None => ReferenceProfile::build(&observations, &labels, &source, &cfg),
        Some((stats, _)) => {
            ReferenceProfile::build_with_image_stats(&observations, stats, &labels, &source, &cfg)
        }
    }
    .context("cannot build the reference profile")?;
    tracing::info!(
        images = observations.len(),
        stat_images = stat_images.as_ref().map(|(s, _)| s.len()),
        skipped,
        window = profile.drift.window,
        embeddings = profile.embedding.is_some(),
        "Reference profile built."
    );
    Ok(profile)
}

/// Observes `images` as serving does, with a progress bar; images that cannot be read or
/// decoded are skipped with a warning and counted.
fn observe_all(
    manifest: &Manifest,
    pipeline: &Pipeline,
    backend: &mut dyn vigil_engine::Backend,
    images: &[Input],
    what: &str,
) -> anyhow::Result<(Vec<Observation>, usize)> {
    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} images  {{per_sec}}  eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut observations: Vec<Observation> = Vec::with_capacity(images.len());
    let mut skipped = 0usize;
    for input in images {
        bar.inc(1);
        let observed = std::fs::read(&input.path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                Ok(vigil_engine::observe::observe(
                    manifest, pipeline, backend, &bytes, 16,
                )?)
            });
        match observed {
            Ok(o) => observations.push(o),
            Err(e) => {
                skipped += 1;
                bar.suspend(|| tracing::warn!(image = %input.name, error = %e, "Skipped."));
            }
        }
    }
    bar.finish_and_clear();
    Ok((observations, skipped))
}

/// The images of `data`, filtered by split when asked, in the order given.
pub(crate) fn select(data: &ReferenceData<'_>) -> anyhow::Result<Vec<Input>> {
    let mut all = Vec::new();
    for arg in data.inputs {
        let mut found = inputs::collect(std::slice::from_ref(arg))?;
        if let Some(split) = data.split {
            if !arg.to_ascii_lowercase().ends_with(".csv") {
                return crate::exit::fail(
                    vigil_core::ErrorKind::Invalid,
                    format!(
                        "--reference-split needs a CSV manifest with a `split` column; {arg} is \
                         not one"
                    ),
                );
            }
            let keep = inputs::split_of(Path::new(arg))?;
            found.retain(|i| keep.get(&i.name).is_some_and(|s| s == split));
            if found.is_empty() {
                return crate::exit::fail(
                    vigil_core::ErrorKind::NotFound,
                    format!("{arg} has no row whose split is {split:?}"),
                );
            }
        }
        all.extend(found);
    }
    Ok(all)
}
