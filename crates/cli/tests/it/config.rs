//! Configuration layers, the exit codes of usage errors, `doctor` and the demo.

use crate::common::Env;

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let env = Env::new();
    let cfg = env.path("vigil.toml");
    std::fs::write(&cfg, "[store]\ndata_dri = \"/tmp/x\"\n").unwrap();
    env.run(&["--config", cfg.to_str().unwrap(), "models", "list"])
        .code(5)
        .says("data_dri");
    env.run(&[
        "--config",
        env.path("missing.toml").to_str().unwrap(),
        "models",
        "list",
    ])
    .code(3)
    .says("does not exist");
}

#[test]
fn layers_apply_in_order_file_then_environment() {
    let env = Env::new();
    let cfg = env.path("vigil.toml");
    std::fs::write(
        &cfg,
        "[audit]\nactor = \"from-file\"\n[engine]\nthreads = 3\n",
    )
    .unwrap();
    let shown = env
        .run(&["--config", cfg.to_str().unwrap(), "config"])
        .ok()
        .stdout;
    assert!(
        shown.contains("actor = \"from-file\"") && shown.contains("threads = 3"),
        "{shown}"
    );
    let shown = env
        .run_cmd(env.cmd().env("VIGIL__AUDIT__ACTOR", "from-env").args([
            "--config",
            cfg.to_str().unwrap(),
            "config",
        ]))
        .ok()
        .stdout;
    assert!(shown.contains("actor = \"from-env\""), "{shown}");
    env.run_cmd(env.cmd().env("VIGIL__STORE__BOGUS", "1").args(["config"]))
        .code(5)
        .says("bogus");
}

#[test]
fn the_actor_is_recorded_from_config_or_flag() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    env.run_cmd(env.cmd().env("VIGIL__AUDIT__ACTOR", "carol").args([
        "models",
        "push",
        env.path("b").to_str().unwrap(),
    ]))
    .ok();
    env.run(&["audit", "log"]).ok().says("carol");
}

#[test]
fn usage_errors_exit_2_and_help_explains_exit_codes() {
    let env = Env::new();
    env.run(&["models", "frobnicate"]).code(2);
    env.run(&["--help"])
        .ok()
        .says("Exit codes:")
        .says("VIGIL__");
}

#[test]
fn doctor_reports_the_engine_and_fails_on_a_missing_library() {
    let env = Env::new();
    env.run(&["doctor"])
        .ok()
        .says("onnxruntime 1.32.0")
        .says("all checks passed");
    env.run_cmd(
        env.cmd()
            .env(
                "VIGIL__ENGINE__ONNXRUNTIME_LIBRARY",
                "/nonexistent/libonnxruntime.so",
            )
            .arg("doctor"),
    )
    .code(1)
    .says("/nonexistent/libonnxruntime.so");
}

#[test]
fn the_demo_runs_every_section() {
    let env = Env::new();
    let run = env.run(&["demo"]).ok();
    for s in [
        "1. Packaging",
        "3. A tampered bundle is refused",
        "refused:",
        "production at",
        "chain check: intact",
        "scored 6 image(s)",
        "tiles through the engine",
        "heatmaps/bam5.heatmap.png",
    ] {
        assert!(run.stdout.contains(s), "missing {s:?} in\n{}", run.stdout);
    }
    // The demo never touches the configured data directory.
    assert!(!env.data_dir().exists());
}
