//! `vigil review`: the inspectors' queue from the command line (`list`), and the reviewed
//! images with their settled labels written out as a training set (`export`), ready for
//! `vigil train --data DIR/manifest.csv`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use vigil_core::review::ItemState;
use vigil_core::types::Sha256Digest;
use vigil_store::{ReviewQuery, ReviewStore};

use super::Context;
use super::common::block_on;
use crate::output;

/// Review subcommands.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// The review queue in work order (priority, then oldest): what inspectors see at
    /// /review/queue.
    ///
    /// Example: vigil review list --state needs_inspector --limit 20
    List {
        /// Only this model.
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// `needs_inspector` (default: all but done), `all`, or one state: open,
        /// awaiting_second, disputed, done.
        #[arg(long, default_value = "needs_inspector")]
        state: String,
        /// At most this many items.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write every settled item with a kept image as a labelled training set: the images
    /// under DIR/<label>/ and DIR/manifest.csv (path,label,split,sha256, the format `vigil
    /// train --data` reads), plus DIR/provenance.json (which predictions, versions and
    /// inspectors each image came from). The split is drawn from the image's hash, so an
    /// image keeps its split from one export to the next.
    ///
    /// Example: vigil review export --model weldnet --out reviewed && vigil train --data
    /// reviewed/manifest.csv --out candidate
    Export {
        /// The folder to create (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only this model's items.
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Share of the images put in the `val` split (the rest is `train`).
        #[arg(long, value_name = "SHARE", default_value_t = 0.2)]
        val_share: f64,
    },
}

/// Runs a review subcommand.
pub fn run(ctx: &Context, cmd: ReviewCommand) -> anyhow::Result<ExitCode> {
    block_on(async {
        let data_dir = ctx.config.data_dir()?;
        let store = vigil_store::open_review(&vigil_store::OpenOptions::new(data_dir.clone()))
            .await
            .with_context(|| format!("cannot open the review queue in {}", data_dir.display()))?;
        match cmd {
            ReviewCommand::List {
                model,
                state,
                limit,
                json,
            } => list(store.as_ref(), model, &state, limit, json).await,
            ReviewCommand::Export {
                out,
                model,
                val_share,
            } => {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&val_share),
                    crate::config::ConfigError::Invalid(format!(
                        "--val-share must lie in [0, 1], got {val_share}"
                    ))
                );
                let n = export(store.as_ref(), model, &out, val_share).await?;
                eprintln!("{n} reviewed image(s) written to {}", out.display());
                Ok(ExitCode::SUCCESS)
            }
        }
    })?
}

async fn list(
    store: &dyn ReviewStore,
    model: Option<String>,
    state: &str,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let states = ItemState::filter(state).map_err(crate::config::ConfigError::Invalid)?;
    let items = store
        .review_items(&ReviewQuery {
            model,
            states,
            limit: limit.max(1),
        })
        .await?;
    if json {
        output::json(&items)?;
        return Ok(ExitCode::SUCCESS);
    }
    if items.is_empty() {
        println!("the review queue holds no such item");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{}:{}", i.model, i.version),
                format!("{} ({:.2})", i.label, i.confidence),
                i.flags
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                i.state.to_string(),
                i.resolved_label.clone().unwrap_or_else(|| "-".into()),
                i.claim
                    .as_ref()
                    .map_or_else(|| "-".into(), |c| c.inspector.clone()),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "PREDICTED AT",
            "MODEL",
            "LABEL",
            "FLAGS",
            "STATE",
            "VERDICT",
            "CLAIMED BY",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// The file extension of a kept image's media type.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/tiff" => "tif",
        "image/bmp" => "bmp",
        "application/dicom" => "dcm",
        _ => "bin",
    }
}

/// `val` for about `share` of the digests, by the digest's leading bits.
fn split(sha256_hex: &str, share: f64) -> &'static str {
    let lead = u32::from_str_radix(sha256_hex.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    if f64::from(lead) / f64::from(u32::MAX) < share {
        "val"
    } else {
        "train"
    }
}

/// Writes the export into a fresh folder beside `out` and renames it into place, so an
/// interrupted export leaves no half-written training set. Returns the images written.
async fn export(
    store: &dyn ReviewStore,
    model: Option<String>,
    out: &Path,
    val_share: f64,
) -> anyhow::Result<usize> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some()
    {
        return Err(vigil_store::Error::Conflict(format!(
            "{} exists and is not empty: choose a new folder",
            out.display()
        ))
        .into());
    }
    let items = store
        .review_items(&ReviewQuery {
            model,
            states: vec![ItemState::Done],
            limit: 0,
        })
        .await?;
    let tmp = super::common::staging_dir(out, ".vigil-export-")?;
    let mut manifest = String::from("path,label,split,sha256\n");
    let mut provenance = Vec::new();
    let mut skipped = 0usize;
    let bar = indicatif::ProgressBar::new(items.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} reviewed images")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for item in &items {
        bar.inc(1);
        let (Some(image), Some(label)) = (&item.image, &item.resolved_label) else {
            skipped += 1;
            continue;
        };
        let bytes = match store.review_image(&image.sha256).await {
            Ok(b) => b,
            Err(vigil_store::Error::NotFound { .. }) => {
                skipped += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let sha = Sha256Digest::of(&bytes).to_hex();
        let rel = format!(
            "{label}/{}-{}.{}",
            item.id,
            &sha[..12],
            extension(&image.content_type)
        );
        let path = tmp.path().join(&rel);
        std::fs::create_dir_all(path.parent().unwrap_or(tmp.path()))?;
        std::fs::write(&path, &bytes).with_context(|| format!("cannot write {rel}"))?;
        manifest.push_str(&format!("{rel},{label},{},{sha}\n", split(&sha, val_share)));
        provenance.push(serde_json::json!({
            "path": rel,
            "label": label,
            "request_id": item.request_id,
            "model": item.model,
            "version": item.version,
            "predicted": item.label,
            "flags": item.flags,
            "inspectors": item.verdicts.iter().map(|v| &v.inspector).collect::<Vec<_>>(),
        }));
    }
    bar.finish_and_clear();
    std::fs::write(tmp.path().join("manifest.csv"), manifest)?;
    let mut f = std::fs::File::create(tmp.path().join("provenance.json"))?;
    serde_json::to_writer_pretty(&mut f, &provenance)?;
    f.write_all(b"\n")?;
    let written = provenance.len();
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "Settled items without a kept image (retention removed it, or feedback on an unqueued prediction) are not exported."
        );
    }
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out)
        .with_context(|| format!("cannot move the export to {}", out.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_follows_the_share_and_the_digest() {
        let digests: Vec<String> = (0..2000u32)
            .map(|i| Sha256Digest::of(&i.to_le_bytes()).to_hex())
            .collect();
        let val = digests.iter().filter(|d| split(d, 0.2) == "val").count();
        assert!((300..=500).contains(&val), "{val} of 2000 in val at 20%");
        assert!(digests.iter().all(|d| split(d, 0.0) == "train"));
        assert_eq!(split(&digests[0], 0.2), split(&digests[0], 0.2));
        assert_eq!(extension("application/dicom"), "dcm");
    }
}
