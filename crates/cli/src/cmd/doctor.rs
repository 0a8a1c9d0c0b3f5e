//! `vigil doctor`: is this installation usable? Checks the configuration, the data
//! directory and database, and the engine (found, loaded, runs the built-in model), and says
//! which engine runs. Exits 1 when any check fails.

use std::process::ExitCode;
use std::time::Instant;

use vigil_core::bundle::Manifest;
use vigil_engine::Batch;
use vigil_engine::preprocess::{Limits, Pipeline};

use super::Context;
use super::common::{block_on, check_line, open_registry};
use crate::assets;
use crate::exit::CheckFailed;

/// Prints one check line on standard output.
fn report_line(ok: bool, what: &str, detail: &str) {
    println!("{}", check_line(ok, what, detail));
}

/// Runs every check and prints one line each.
pub fn run(ctx: &Context) -> anyhow::Result<ExitCode> {
    println!("vigil {}", env!("CARGO_PKG_VERSION"));
    let mut failures = 0;
    report_line(
        true,
        "config",
        "defaults + --config/VIGIL_CONFIG + VIGIL__* (see `vigil config`)",
    );
    report_line(true, "actor", &ctx.actor);

    match ctx.config.data_dir() {
        Ok(dir) => {
            let opened = block_on(async {
                let r = open_registry(ctx).await?;
                let models = r.list_models().await?;
                let entries = r.audit_log().await?;
                let problems = vigil_core::audit::verify(&entries, None);
                anyhow::Ok((models.len(), entries.len(), problems.len()))
            });
            match opened.and_then(|r| r) {
                Ok((models, entries, 0)) => report_line(
                    true,
                    "store",
                    &format!(
                        "{} (SQLite): {models} model(s), audit log intact ({entries} entries)",
                        dir.display()
                    ),
                ),
                Ok((_, _, problems)) => {
                    failures += 1;
                    report_line(
                        false,
                        "store",
                        &format!("audit log has {problems} problem(s): run `vigil audit verify`"),
                    );
                }
                Err(e) => {
                    failures += 1;
                    report_line(false, "store", &format!("{e:#}"));
                }
            }
        }
        Err(e) => {
            failures += 1;
            report_line(false, "store", &format!("{e:#}"));
        }
    }

    match engine_check(ctx) {
        Ok(line) => report_line(true, "engine", &line),
        Err(e) => {
            failures += 1;
            report_line(false, "engine", &format!("{e:#}"));
        }
    }
    if failures > 0 {
        return Err(CheckFailed(format!("{failures} check(s) failed")).into());
    }
    println!("all checks passed");
    Ok(ExitCode::SUCCESS)
}

/// Loads the engine and runs the built-in reference model once on a real weld tile.
fn engine_check(ctx: &Context) -> anyhow::Result<String> {
    let cfg = ctx.config.engine();
    let source = match cfg.kind {
        vigil_engine::EngineKind::OnnxRuntime => {
            format!(
                " loaded from {}",
                vigil_engine::ort::runtime(&cfg)?.library.display()
            )
        }
        vigil_engine::EngineKind::Tract => " (pure Rust, compiled in)".to_owned(),
    };
    let info = vigil_core::onnx::inspect(assets::WELDNET_S_ONNX)?;
    let manifest = builtin_manifest(&info)?;
    let mut backend = vigil_engine::load(assets::WELDNET_S_ONNX, &manifest, &cfg)?;
    let pipeline = Pipeline::new(&manifest, Limits::default());
    let tensor = pipeline.run(assets::WELD_TILES[0].2)?;
    let batch = Batch::stack(&[&tensor])?;
    backend.run(&batch)?; // warm-up
    let start = Instant::now();
    backend.run(&batch)?;
    let took = start.elapsed();
    Ok(format!(
        "{}{source}; reference model inference {:.2} ms",
        backend.describe(),
        took.as_secs_f64() * 1e3
    ))
}

/// A manifest for the built-in reference model, for checks that run it without a bundle.
pub fn builtin_manifest(info: &vigil_core::onnx::OnnxInfo) -> anyhow::Result<Manifest> {
    #[derive(serde::Deserialize)]
    struct Pre {
        preprocess: Vec<vigil_core::bundle::Step>,
    }
    let pre: Pre = toml::from_str(assets::WELD_PREPROCESS)?;
    let labels = ["no_defect", "porosity", "crack", "lack_of_fusion"]
        .iter()
        .map(|l| l.parse())
        .collect::<Result<_, _>>()?;
    Ok(Manifest::for_model(
        info,
        "weldnet-s".parse()?,
        labels,
        pre.preprocess,
    ))
}
