//! `vigil models`: push, aliases, history, pull, and refusals that change nothing.

use crate::common::{Env, flip_byte, snapshot};

/// Everything a user can observe about the registry, for "nothing changed" assertions.
fn registry_state(
    env: &Env,
) -> (
    String,
    String,
    String,
    std::collections::BTreeMap<String, Vec<u8>>,
) {
    let list = env.run(&["models", "list", "--json"]).ok().stdout;
    let show = env
        .run(&["models", "show", "weldnet", "--all", "--json"])
        .stdout;
    let audit = env.run(&["audit", "log", "--json"]).ok().stdout;
    (
        list,
        show,
        audit,
        snapshot(&env.data_dir().join("artifacts")),
    )
}

#[test]
fn push_alias_pull_and_history_round_trip() {
    let env = Env::new();
    let (secret, public) = env.keys("k");
    env.create("b1", "1.0.0", &["--sign-key", &secret]).ok();
    env.create("b2", "1.1.0", &["--sign-key", &secret]).ok();
    let b1 = env.path("b1");
    env.run(&[
        "models",
        "push",
        b1.to_str().unwrap(),
        "--key",
        &public,
        "--require-signature",
        "--reason",
        "first",
    ])
    .ok()
    .says("pushed weldnet:1.0.0");
    env.run(&["models", "push", env.path("b2").to_str().unwrap()])
        .ok();
    env.run(&["models", "list"])
        .ok()
        .says("weldnet")
        .says("1.1.0");

    env.run(&[
        "--actor",
        "alice",
        "models",
        "alias",
        "set",
        "weldnet",
        "production",
        "1.0.0",
        "--reason",
        "go live",
    ])
    .ok()
    .says("(new) → 1.0.0");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(50));
    env.run(&[
        "--actor",
        "bob",
        "models",
        "alias",
        "set",
        "weldnet",
        "production",
        "1.1.0",
        "--reason",
        "better",
    ])
    .ok()
    .says("1.0.0 → 1.1.0");
    env.run(&[
        "models",
        "alias",
        "set",
        "weldnet",
        "production",
        "1.1.0",
        "--reason",
        "again",
    ])
    .ok()
    .says("nothing changed");

    let history = env.run(&["models", "history", "weldnet"]).ok().stdout;
    assert!(
        history.contains("alice") && history.contains("go live"),
        "{history}"
    );
    assert!(
        history.contains("bob") && history.contains("better"),
        "{history}"
    );
    env.run(&[
        "models",
        "history",
        "weldnet",
        "--alias",
        "production",
        "--at",
        &between,
    ])
    .ok()
    .says("weldnet@production at")
    .says(": 1.0.0");
    env.run(&["models", "history", "weldnet", "--at", "2000-01-01"])
        .ok()
        .says("(not set)");
    env.run(&["models", "show", "weldnet@production"])
        .ok()
        .says("weldnet:1.1.0")
        .says("signed     yes");

    // Pull back byte-identical, as a folder and as an archive.
    env.run(&[
        "models",
        "pull",
        "weldnet:1.0.0",
        "--out",
        env.path("pulled").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        snapshot(&env.path("pulled")),
        snapshot(&b1),
        "a pulled bundle differs from the pushed one"
    );
    let a = env.path("pulled.tar.gz");
    let packed = env.path("packed.tar.gz");
    env.run(&[
        "models",
        "pull",
        "weldnet:1.0.0",
        "--out",
        a.to_str().unwrap(),
    ])
    .ok();
    env.run(&[
        "bundle",
        "pack",
        b1.to_str().unwrap(),
        "--out",
        packed.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&packed).unwrap());

    // Removing an alias is recorded too.
    env.run(&[
        "models",
        "alias",
        "rm",
        "weldnet",
        "production",
        "--reason",
        "incident 42",
    ])
    .ok()
    .says("pointed at 1.1.0");
    env.run(&["models", "show", "weldnet@production"]).code(3);
    env.run(&["models", "history", "weldnet"])
        .ok()
        .says("(removed)")
        .says("incident 42");
    env.run(&["audit", "verify"]).ok().says("intact: 5 entries");
}

#[test]
fn the_identical_bundle_pushed_again_is_a_no_op() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    let b = env.path("b");
    env.run(&["models", "push", b.to_str().unwrap()]).ok();
    let before = registry_state(&env);
    env.run(&["models", "push", b.to_str().unwrap()])
        .ok()
        .says("nothing changed");
    assert_eq!(registry_state(&env), before);
}

#[test]
fn a_conflicting_version_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    env.create("other", "1.0.0", &["--description", "different content"])
        .ok();
    env.run(&["models", "push", env.path("b").to_str().unwrap()])
        .ok();
    let before = registry_state(&env);
    env.run(&["models", "push", env.path("other").to_str().unwrap()])
        .code(4)
        .says("versions are immutable");
    assert_eq!(registry_state(&env), before);
}

#[test]
fn an_alias_to_a_missing_version_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    env.run(&["models", "push", env.path("b").to_str().unwrap()])
        .ok();
    let before = registry_state(&env);
    env.run(&[
        "models",
        "alias",
        "set",
        "weldnet",
        "production",
        "9.9.9",
        "--reason",
        "typo",
    ])
    .code(3)
    .says("9.9.9");
    env.run(&[
        "models",
        "alias",
        "set",
        "nosuch",
        "production",
        "1.0.0",
        "--reason",
        "typo",
    ])
    .code(3);
    env.run(&[
        "models",
        "alias",
        "set",
        "weldnet",
        "Production!",
        "1.0.0",
        "--reason",
        "x",
    ])
    .code(2);
    assert_eq!(registry_state(&env), before);
    env.run(&["models", "history", "weldnet"])
        .ok()
        .says("no alias changes");
}

#[test]
fn unknown_models_and_versions_are_not_found() {
    let env = Env::new();
    env.run(&["models", "show", "nosuch"]).code(3);
    env.run(&[
        "models",
        "pull",
        "nosuch:1",
        "--out",
        env.path("x").to_str().unwrap(),
    ])
    .code(3);
    assert!(!env.path("x").exists());
}

#[test]
fn a_changed_artifact_is_detected_on_pull() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    env.run(&["models", "push", env.path("b").to_str().unwrap()])
        .ok();
    let model_digest =
        vigil_core::types::Sha256Digest::of(&std::fs::read(env.path("b/model.onnx")).unwrap())
            .to_hex();
    let blob = snapshot(&env.data_dir().join("artifacts"))
        .into_keys()
        .find(|k| k.ends_with(&model_digest))
        .expect("the model's blob is stored under its digest");
    flip_byte(&env.data_dir().join("artifacts").join(blob));
    env.run(&[
        "models",
        "pull",
        "weldnet:1.0.0",
        "--out",
        env.path("p").to_str().unwrap(),
    ])
    .code(6)
    .says(&model_digest[..12])
    .says("restore it from a backup");
    assert!(!env.path("p").exists());
}

#[test]
fn a_corrupt_database_is_reported_and_left_alone() {
    let env = Env::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let db = env.data_dir().join("vigil.db");
    std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
    env.run(&["models", "list"])
        .code(6)
        .says("not a valid Vigil database");
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x42u8; 8192]);
}

#[test]
fn an_unwritable_data_directory_is_reported() {
    let env = Env::new();
    std::fs::write(env.path("file"), b"x").unwrap();
    env.run_cmd(
        env.cmd()
            .env("VIGIL__STORE__DATA_DIR", env.path("file/data"))
            .args(["models", "list"]),
    )
    .code(6)
    .says("file/data");
}
