//! The hook for teams that train elsewhere (PyTorch, say): `vigil train --command "..."`
//! runs their command with the checked dataset and an output path in the environment, then
//! packages the ONNX file it writes exactly as the built-in trainer's (same threshold rule,
//! same report, same golden outputs).
//!
//! The command sees:
//!
//! | variable | meaning |
//! |---|---|
//! | `VIGIL_DATASET` | a CSV with `path,label,split,group` (absolute paths) |
//! | `VIGIL_OUTPUT` | where to write the ONNX model |
//! | `VIGIL_LABELS` | the labels, comma-separated, in the order the `probabilities` output must use |
//! | `VIGIL_PREPROCESS` | a TOML file with the preprocessing steps the model will be served with |
//! | `VIGIL_INPUT_SHAPE` | `C,H,W` of one preprocessed image |
//! | `VIGIL_SEED` | the seed to use |
//!
//! The model must take `image` `[N, C, H, W]` and give `probabilities` `[N, labels]`
//! (optionally `embedding`).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use vigil_engine::preprocess::{Limits, Pipeline};

use crate::{
    Error, Outcome, Request, Result, Stop, Trained, data, finish, positive_index, preflight,
};

/// Runs `command` (through `sh -c`) and packages its model.
pub fn train_external(req: &Request, command: &str, _stop: &AtomicBool) -> Result<Outcome> {
    preflight(req)?;
    if req.init.is_some() {
        return Err(Error::Config(
            "--init fine-tunes the built-in trainer's models; an external command starts \
             from what it likes"
                .into(),
        ));
    }
    let pipeline = Pipeline::from_steps(req.preprocess.clone(), Limits::default());
    let data = data::load(&req.data, &pipeline, None)?;
    let positive = positive_index(&data.labels, req.positive.as_ref())?;
    let shape = pipeline.run(&data.train[0].bytes)?.shape;
    let work = tempfile::tempdir().map_err(Error::io("cannot make a temporary folder"))?;
    let root = std::fs::canonicalize(
        data.source
            .parent()
            .filter(|_| data.source.is_file())
            .unwrap_or(&data.source),
    )
    .map_err(Error::io("cannot resolve the dataset folder"))?;
    let mut csv = String::from("path,label,split,group\n");
    for (split, samples) in [("train", &data.train), ("val", &data.val)] {
        for s in samples {
            csv.push_str(&format!(
                "{},{},{split},{}\n",
                root.join(&s.path).display(),
                data.labels[s.label],
                s.group
            ));
        }
    }
    let dataset = work.path().join("dataset.csv");
    std::fs::write(&dataset, csv).map_err(Error::io("cannot write the dataset listing"))?;
    let preprocess = work.path().join("preprocess.toml");
    #[derive(serde::Serialize)]
    struct File<'a> {
        preprocess: &'a [vigil_core::bundle::Step],
    }
    let toml = toml_of(&File {
        preprocess: &req.preprocess,
    })?;
    std::fs::write(&preprocess, toml).map_err(Error::io("cannot write the preprocessing"))?;
    let output = work.path().join("model.onnx");
    let labels: Vec<&str> = data.labels.iter().map(|l| l.as_str()).collect();
    tracing::info!(command, "Running the external trainer.");
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("VIGIL_DATASET", &dataset)
        .env("VIGIL_OUTPUT", &output)
        .env("VIGIL_LABELS", labels.join(","))
        .env("VIGIL_PREPROCESS", &preprocess)
        .env(
            "VIGIL_INPUT_SHAPE",
            format!("{},{},{}", shape[1], shape[2], shape[3]),
        )
        .env("VIGIL_SEED", req.train.seed.to_string())
        .status()
        .map_err(|e| Error::External(format!("could not start: {e}")))?;
    if !status.success() {
        return Err(Error::External(format!(
            "`{command}` failed ({status}); nothing was written"
        )));
    }
    let model = std::fs::read(&output).map_err(|_| {
        Error::External(format!(
            "`{command}` exited successfully but wrote no model at $VIGIL_OUTPUT"
        ))
    })?;
    let mut training = BTreeMap::new();
    training.insert("command".into(), command.to_owned());
    training.insert("seed".into(), req.train.seed.to_string());
    finish(
        req,
        &data,
        positive,
        Trained {
            model,
            preprocess: req.preprocess.clone(),
            trainer: "external".into(),
            training,
            history: Vec::new(),
            reference: None,
            stop: Stop::Completed,
        },
    )
}

fn toml_of<T: serde::Serialize>(value: &T) -> Result<String> {
    toml::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot write the preprocessing: {e}")))
}
