//! `vigil demo`: the chapter on model deployment and monitoring, happening on this machine.
//!
//! It works in a fresh data directory of its own (never the configured one), on the model and
//! weld tiles compiled into the binary, and narrates each step: packaging with the exact
//! preprocessing, signing and verifying, catching a tampered file, the registry with
//! immutable versions and movable aliases, "which version was in production at time T", and
//! the tamper-evident audit log. Stages not built yet are named, not faked.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use vigil_core::bundle::{Bundle, MODEL_FILE};
use vigil_store::AliasChange;

use super::bundle::CreateArgs;
use super::common::{VerifyOptions, block_on, open_registry, verify_bundle};
use super::score::{self, ScoreArgs};
use super::{Context, bundle, keys, models};
use crate::assets;

/// Arguments of `vigil demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in this new folder and keep it afterwards (default: a temporary folder that is
    /// removed at the end). Explore it later with VIGIL__STORE__DATA_DIR=DIR/data.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn section(title: &str, text: &str) {
    println!("\n== {title} ==");
    for line in text.lines() {
        println!("   {line}");
    }
}

/// Runs the demo.
pub fn run(ctx: &Context, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp;
    let work: PathBuf = match &args.keep {
        Some(dir) => {
            if dir.exists() {
                return Err(vigil_core::bundle::Error::Exists { path: dir.clone() }.into());
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("vigil-demo-").tempdir()?;
            tmp.path().to_owned()
        }
    };
    let mut config = ctx.config.clone();
    config.store.data_dir = work.join("data");
    let ctx = Context {
        config,
        actor: ctx.actor.clone(),
    };
    walk_through(&ctx, &work)?;
    match &args.keep {
        Some(dir) => println!(
            "\nEverything is kept in {}. Try:\n   VIGIL__STORE__DATA_DIR={}/data vigil models list",
            dir.display(),
            dir.display()
        ),
        None => println!(
            "\n(The demo's temporary folder is removed now; run with --keep DIR to explore it.)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's input files, written from the binary's embedded assets.
struct Inputs {
    model: PathBuf,
    preprocess: PathBuf,
    film_preprocess: PathBuf,
    tiles: Vec<PathBuf>,
    film: PathBuf,
}

fn write_inputs(work: &Path) -> anyhow::Result<Inputs> {
    let inputs = work.join("inputs");
    std::fs::create_dir_all(&inputs)?;
    let model = inputs.join("weldnet-s.onnx");
    std::fs::write(&model, assets::WELDNET_S_ONNX)?;
    let pre = inputs.join("weld-preprocess.toml");
    std::fs::write(&pre, assets::WELD_PREPROCESS)?;
    let film_preprocess = inputs.join("film-preprocess.toml");
    std::fs::write(&film_preprocess, assets::FILM_PREPROCESS)?;
    let mut tiles = Vec::new();
    let mut manifest = String::from("path,label\n");
    for (name, label, bytes) in assets::WELD_TILES {
        let p = inputs.join(name);
        std::fs::write(&p, bytes)?;
        manifest.push_str(&format!("{name},{label}\n"));
        tiles.push(p);
    }
    std::fs::write(inputs.join("tiles.csv"), manifest)?;
    let film = inputs.join("bam5.png");
    std::fs::write(&film, assets::WELD_FILM)?;
    Ok(Inputs {
        model,
        preprocess: pre,
        film_preprocess,
        tiles,
        film,
    })
}

fn create_args(
    model: &Path,
    pre: &Path,
    tiles: &[PathBuf],
    version: &str,
    key: &Path,
    out: PathBuf,
) -> anyhow::Result<CreateArgs> {
    Ok(CreateArgs {
        model: model.to_owned(),
        name: "weldnet".parse()?,
        version: version.parse()?,
        labels: ["no_defect", "porosity", "crack", "lack_of_fusion"]
            .iter()
            .map(|l| l.parse())
            .collect::<Result<_, _>>()?,
        preprocess: Some(pre.to_owned()),
        threshold: None,
        review_band: None,
        review_below: Some(0.6),
        probabilities_output: "probabilities".into(),
        embedding_output: None,
        golden: tiles.to_vec(),
        reference: Vec::new(),
        reference_split: None,
        reference_window: None,
        reference_stats: Vec::new(),
        reference_block_length: None,
        reference_false_alarms: None,
        report: None,
        description: format!("Weld tile classifier, demo release {version}"),
        trainer: "external".into(),
        trainer_version: String::new(),
        source_commit: String::new(),
        training_data: None,
        meta: vec!["demo=true".into()],
        atol: 1e-4,
        rtol: 1e-3,
        sign_key: Some(key.to_owned()),
        out,
    })
}

fn walk_through(ctx: &Context, work: &Path) -> anyhow::Result<()> {
    println!("Vigil demo: the production loop for a weld-inspection model, step by step.");
    println!("Working folder: {}", work.display());
    println!("Note: the reference model here has random weights; its predictions mean nothing.");
    println!("It is here to show the machinery. The trained weld model comes with `vigil train`.");

    let Inputs {
        model,
        preprocess: pre,
        film_preprocess: film_pre,
        tiles,
        film,
    } = write_inputs(work)?;

    section(
        "1. Packaging a model",
        "A bundle holds the ONNX weights AND the exact preprocessing (as data, not code),\n\
         the labels, the decision rule, provenance, and golden inputs with the outputs they\n\
         must give. The SHA-256 of its manifest is its identity. We sign it with an ed25519 key.",
    );
    let (secret, public) = keys::generate(&work.join("signing"))?;
    println!("   key pair: {} / {}", secret.display(), public.display());
    let b1_path = work.join("weldnet-1.0.0");
    let b1 = bundle::create(
        ctx,
        &create_args(&model, &pre, &tiles, "1.0.0", &secret, b1_path.clone())?,
    )?;
    println!("   created weldnet:1.0.0, digest sha256:{}", b1.digest());
    println!(
        "   preprocessing: {}",
        crate::output::steps(&b1.manifest().preprocess)
    );
    println!(
        "   golden inputs: {} real weld tiles, outputs recorded by running the model",
        tiles.len()
    );

    section(
        "2. Verifying before trusting",
        "Verification re-hashes every file, checks the signature against our public key,\n\
         checks the engine supports the model's opset, and re-runs the golden inputs through\n\
         the SAME preprocessing and engine: training-serving skew is caught here, not in production.",
    );
    let opts = VerifyOptions::from_config(ctx, std::slice::from_ref(&public), true)?;
    verify_bundle(ctx, &b1, &opts)?;

    section(
        "3. A tampered bundle is refused",
        "We copy the bundle and flip one byte of model.onnx, as a bad disk or a bad actor might.",
    );
    let tampered = work.join("weldnet-1.0.0-tampered");
    copy_dir(&b1_path, &tampered)?;
    let target = tampered.join(MODEL_FILE);
    let mut bytes = std::fs::read(&target)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&target, bytes)?;
    match Bundle::open(&tampered)
        .map_err(anyhow::Error::from)
        .and_then(|b| verify_bundle(ctx, &b, &opts).map(|_| ()))
    {
        Ok(()) => anyhow::bail!("the tampered bundle verified; this is a bug"),
        Err(e) => println!("   refused, as it should be: {e:#}"),
    }

    section(
        "4. The registry: immutable versions, movable aliases",
        "Pushing stores the verified bundle (metadata in SQLite, files in a content-addressed\n\
         artifact folder). `production` is just an alias: moving it is an audited event.",
    );
    models::push(ctx, &b1_path, "first release", &opts)?;
    models::push(ctx, &b1_path, "pushed twice by mistake", &opts)?;
    let b2_path = work.join("weldnet-1.1.0");
    bundle::create(
        ctx,
        &create_args(&model, &pre, &tiles, "1.1.0", &secret, b2_path.clone())?,
    )?;
    let conflict_path = work.join("weldnet-1.0.0-other");
    bundle::create(
        ctx,
        &create_args(
            &model,
            &pre,
            &tiles[..2],
            "1.0.0",
            &secret,
            conflict_path.clone(),
        )?,
    )?;
    println!("   pushing a DIFFERENT bundle that claims to be 1.0.0:");
    match models::push(ctx, &conflict_path, "should be refused", &opts) {
        Ok(_) => anyhow::bail!("a conflicting version was accepted; this is a bug"),
        Err(e) => println!("   refused: {e:#}"),
    }
    models::push(ctx, &b2_path, "second release", &opts)?;

    let (before_promotion, registry) = block_on(async {
        let registry = open_registry(ctx).await?;
        let name = "weldnet".parse()?;
        let production = "production".parse()?;
        registry
            .set_alias(AliasChange {
                name: &name,
                alias: &production,
                version: &"1.0.0".parse()?,
                actor: &ctx.actor,
                reason: "initial deployment after sign-off",
            })
            .await?;
        println!("   weldnet@production → 1.0.0");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let t = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        registry
            .set_alias(AliasChange {
                name: &name,
                alias: &production,
                version: &"1.1.0".parse()?,
                actor: &ctx.actor,
                reason: "1.1.0 passed review",
            })
            .await?;
        println!("   weldnet@production → 1.1.0");
        anyhow::Ok((t, registry))
    })??;

    section(
        "5. Which version was in production at time T?",
        "An inspector asks about a weld inspected before the promotion. One query answers.",
    );
    block_on(async {
        let name = "weldnet".parse()?;
        let production = "production".parse()?;
        let then = registry
            .alias_at(&name, &production, before_promotion)
            .await?;
        let now = registry
            .alias_at(&name, &production, chrono::Utc::now())
            .await?;
        println!(
            "   at {}: weldnet@production = {}",
            before_promotion.to_rfc3339(),
            then.map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into())
        );
        println!(
            "   now: weldnet@production = {}",
            now.map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into())
        );
        for e in registry.alias_history(&name, None).await? {
            println!(
                "   {}  {}: {} → {}  by {} ({})",
                e.at.format("%H:%M:%S%.3f"),
                e.alias,
                e.from.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                e.to.map(|v| v.to_string())
                    .unwrap_or_else(|| "(removed)".into()),
                e.actor,
                e.reason
            );
        }

        section(
            "6. The audit log is tamper-evident",
            "Every change is an entry chained to the previous one by its SHA-256. Editing,\n\
             deleting or reordering an entry breaks the chain, and `vigil audit verify` says where.",
        );
        let entries = registry.audit_log().await?;
        for e in &entries {
            println!(
                "   #{} {} {} {} ({})",
                e.seq,
                e.record.actor,
                e.record.action,
                e.record.subject,
                e.hash.short()
            );
        }
        let problems = vigil_core::audit::verify(&entries, None);
        println!(
            "   chain check: {}",
            if problems.is_empty() {
                "intact".to_owned()
            } else {
                format!("{problems:?}")
            }
        );
        anyhow::Ok(())
    })??;

    section(
        "7. Serving predictions: batch scoring",
        "Batch scoring runs a folder, a glob or a labelled manifest through the production\n\
         model offline: decoding in parallel, batched inference, one row per image (a bad file\n\
         is a row with its error, never a stopped run), and a summary. With expert labels it\n\
         reports accuracy, ROC-AUC and the confusion matrix. (The tiles' expert labels are\n\
         defect / no_defect; this random reference model knows other names, so the matrix\n\
         shows the machinery, not a result.)",
    );
    score_tiles(
        ctx,
        work,
        Some("weldnet@production".parse()?),
        None,
        "scores.csv",
    )?;

    section(
        "8. Whole radiographs, tile by tile",
        "A bundle may declare tiling: a whole film is cut into overlapping 128 px tiles, each\n\
         scored, and the film's verdict is its most suspicious tile. The heat map shows where\n\
         the model looked (random weights here, so the map is noise).",
    );
    let film_bundle = work.join("weldnet-film-1.0.0");
    let mut film_args = create_args(
        &model,
        &film_pre,
        &[],
        "1.0.0",
        &secret,
        film_bundle.clone(),
    )?;
    film_args.name = "weldnet-film".parse()?;
    film_args.threshold = Some("crack=0.5".into());
    film_args.review_below = None;
    bundle::create(ctx, &film_args)?;
    score::run(
        ctx,
        ScoreArgs {
            inputs: vec![film.display().to_string()],
            model: None,
            bundle: Some(film_bundle),
            out: work.join("films.csv"),
            resume: false,
            overwrite: false,
            batch_size: 32,
            jobs: None,
            instances: None,
            heatmap: Some(work.join("heatmaps")),
            json: false,
        },
    )?;
    println!(
        "   heat map: {}",
        work.join("heatmaps/bam5.heatmap.png").display()
    );

    section(
        "9. The trained weld model (vigil train)",
        "The model this build ships was trained in Rust by `vigil train` on real GDXray weld\n\
         tiles, split by film (neighbouring tiles overlap, so a random split would leak). Its\n\
         threshold was chosen on the validation films for a defect recall of 0.95, with a\n\
         review band around it for inspectors. Its report travels inside the bundle.",
    );
    let shipped = work.join("weldnet-trained.tar");
    std::fs::write(&shipped, assets::SHIPPED_WELD_MODEL)?;
    let trained = Bundle::open(&shipped)?;
    let report: vigil_train::TrainReport =
        serde_json::from_slice(&trained.read_file(vigil_core::bundle::REPORT_FILE)?)
            .context("the shipped model's report")?;
    let v = &report.validation;
    let num = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
    println!(
        "   validation films {}: ROC-AUC {:.3}, PR-AUC {:.3}",
        report.dataset.val_films.join(", "),
        v.roc_auc,
        v.pr_auc
    );
    println!(
        "   threshold {:.3}: defect recall {}, false-positive rate {}; review band [{:.3}, {:.3}]",
        v.threshold,
        num(v.counts.recall),
        num(v.counts.fpr),
        v.review_band[0],
        v.review_band[1]
    );
    for g in &v.per_group {
        println!(
            "   film {:<9} recall {} fpr {} (its own threshold would be {})",
            g.group,
            num(g.recall_at_global),
            num(g.fpr_at_global),
            g.threshold_for_target
                .map_or("-".to_owned(), |t| format!("{t:.3}"))
        );
    }
    println!("   the same six tiles, scored by the trained model:");
    score_tiles(ctx, work, None, Some(shipped), "scores-trained.csv")?;

    super::demo_monitor::run(ctx, work, &section)?;

    section(
        "What you just saw, by chapter section",
        "Packaging a model: 1-3 (weights + exact preprocessing + golden outputs, signed, verified).\n\
         Pinning: Cargo.lock and rust-toolchain.toml pin Vigil; the manifest pins the engine and opset.\n\
         Registry and artifact storage: 4-6 (immutable versions, aliases, audit log).\n\
         Serving predictions: 7-8 (batch scoring; `vigil serve` is the real-time API).\n\
         Training and evaluation: 9 (split by film, threshold for a recall target, report).\n\
         Monitoring: 10 and 12 (prediction log, live shares, drift windows, out-of-distribution\n\
         flags, an alert to a webhook, the drift report).\n\
         Human-in-the-loop review and the labelled feedback loop: 11 (the queue, verdicts,\n\
         realised against estimated accuracy, the reviewed images exported for training).",
    );

    section(
        "Still to come in this demo",
        "Retraining from the inspectors' verdicts and shadow/canary rollout are the next\n\
         stages of the loop; they will appear here as they are built.",
    );
    Ok(())
}

/// Scores the six demo tiles (with their expert labels) with a registry model or a bundle.
fn score_tiles(
    ctx: &Context,
    work: &Path,
    model: Option<vigil_core::types::ModelRef>,
    bundle: Option<PathBuf>,
    out: &str,
) -> anyhow::Result<()> {
    score::run(
        ctx,
        ScoreArgs {
            inputs: vec![work.join("inputs/tiles.csv").display().to_string()],
            model,
            bundle,
            out: work.join(out),
            resume: false,
            overwrite: false,
            batch_size: 16,
            jobs: None,
            instances: None,
            heatmap: None,
            json: false,
        },
    )?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}
