//! `vigil bundle` and `vigil keys`: making, signing, verifying and refusing bundles.

use std::io::Write as _;

use crate::common::{Env, flip_byte, testdata};

#[test]
fn a_bundle_is_created_signed_verified_and_packed() {
    let env = Env::new();
    let (secret, public) = env.keys("signer");
    env.create("b", "1.0.0", &["--sign-key", &secret])
        .ok()
        .says("created weldnet:1.0.0");
    let b = env.path("b");
    for f in [
        "vigil.toml",
        "model.onnx",
        "signature",
        "golden/expected.json",
        "golden/input-000.png",
        "golden/input-001.png",
    ] {
        assert!(b.join(f).is_file(), "{f} missing");
    }
    let b = b.to_str().unwrap();
    env.run(&[
        "bundle",
        "verify",
        b,
        "--key",
        &public,
        "--require-signature",
    ])
    .ok()
    .says("golden")
    .says("2 cases reproduce")
    .says("(trusted)");
    env.run(&["bundle", "inspect", b])
        .ok()
        .says("decode → grey → resize 128x128 bilinear → standardize → layout nchw");
    let json = env.run(&["bundle", "inspect", b, "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["manifest"]["model"]["labels"][1], "porosity");
    assert_eq!(
        v["manifest"]["inputs"][0]["shape"],
        serde_json::json!([-1, 1, 128, 128])
    );

    // Packing is deterministic: the same bundle packs to the same bytes.
    let a1 = env.path("a1.tar.gz");
    let a2 = env.path("a2.tar.gz");
    env.run(&["bundle", "pack", b, "--out", a1.to_str().unwrap()])
        .ok();
    env.run(&["bundle", "pack", b, "--out", a2.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&a1).unwrap(), std::fs::read(&a2).unwrap());
    env.run(&[
        "bundle",
        "verify",
        a1.to_str().unwrap(),
        "--key",
        &public,
        "--require-signature",
    ])
    .ok();
    env.run(&[
        "bundle",
        "unpack",
        a1.to_str().unwrap(),
        "--out",
        env.path("un").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        std::fs::read(env.path("un/model.onnx")).unwrap(),
        std::fs::read(env.path("b/model.onnx")).unwrap()
    );
}

#[test]
fn an_archive_bundle_can_be_created_and_signed_in_place() {
    let env = Env::new();
    let (secret, public) = env.keys("k");
    env.create("b.tar.gz", "1.0.0", &[]).ok();
    let a = env.path("b.tar.gz");
    let a = a.to_str().unwrap();
    env.run(&["bundle", "verify", a, "--require-signature"])
        .code(1)
        .says("not signed");
    env.run(&["bundle", "sign", a, "--key", &secret]).ok();
    env.run(&[
        "bundle",
        "verify",
        a,
        "--key",
        &public,
        "--require-signature",
    ])
    .ok();
}

#[test]
fn without_golden_inputs_synthetic_ones_are_recorded() {
    let env = Env::new();
    let model = testdata().join("weldnet-s.onnx");
    let out = env.path("b");
    env.run(&[
        "bundle",
        "create",
        "--model",
        model.to_str().unwrap(),
        "--name",
        "weldnet",
        "--version",
        "1",
        "--labels",
        "a,b,c,d",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    assert!(out.join("golden/synthetic-3.png").is_file());
    env.run(&["bundle", "verify", out.to_str().unwrap()])
        .ok()
        .says("4 cases reproduce");
    // The default pipeline was derived from the input shape.
    env.run(&["bundle", "inspect", out.to_str().unwrap()])
        .ok()
        .says("scale 0.003921");
}

#[test]
fn a_truncated_or_non_onnx_model_is_refused_and_nothing_is_written() {
    let env = Env::new();
    let model = std::fs::read(testdata().join("weldnet-s.onnx")).unwrap();
    let truncated = env.path("truncated.onnx");
    std::fs::write(&truncated, &model[..model.len() / 3]).unwrap();
    let png = testdata().join("weld/RRT-106R_x0064_y0227.png");
    for bad in [truncated.to_str().unwrap(), png.to_str().unwrap()] {
        let out = env.path("out");
        env.run(&[
            "bundle",
            "create",
            "--model",
            bad,
            "--name",
            "w",
            "--version",
            "1",
            "--labels",
            "a,b,c,d",
            "--out",
            out.to_str().unwrap(),
        ])
        .code(5)
        .says("not a valid ONNX model");
        assert!(!out.exists(), "a refused bundle left files behind");
    }
}

#[test]
fn labels_that_do_not_match_the_model_are_refused() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    let model = testdata().join("weldnet-s.onnx");
    env.run(&[
        "bundle",
        "create",
        "--model",
        model.to_str().unwrap(),
        "--name",
        "w",
        "--version",
        "1",
        "--labels",
        "defect,no_defect",
        "--out",
        env.path("c").to_str().unwrap(),
    ])
    .code(5)
    .says("2 labels declared but output \"probabilities\" has 4 classes");
}

#[test]
fn a_changed_model_file_is_detected_by_its_hash() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    flip_byte(&env.path("b/model.onnx"));
    env.run(&["bundle", "verify", env.path("b").to_str().unwrap()])
        .code(5)
        .says("model.onnx: checksum mismatch");
}

#[test]
fn a_changed_golden_output_is_detected() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    // Rewrite a recorded probability and re-hash it into the manifest, as a careless tool
    // would: the hashes match, but the model no longer reproduces its golden outputs.
    let golden_path = env.path("b/golden/expected.json");
    let mut golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&golden_path).unwrap()).unwrap();
    let p = golden["cases"][0]["outputs"]["probabilities"]["data"][0]
        .as_f64()
        .unwrap();
    golden["cases"][0]["outputs"]["probabilities"]["data"][0] = serde_json::json!(p + 0.01);
    let bytes = serde_json::to_vec_pretty(&golden).unwrap();
    std::fs::write(&golden_path, &bytes).unwrap();
    let manifest_path = env.path("b/vigil.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let old = manifest
        .lines()
        .find(|l| l.starts_with("\"golden/expected.json\""))
        .unwrap()
        .to_owned();
    let digest = vigil_hex(&bytes);
    std::fs::write(
        &manifest_path,
        manifest.replace(&old, &format!("\"golden/expected.json\" = \"{digest}\"")),
    )
    .unwrap();
    env.run(&["bundle", "verify", env.path("b").to_str().unwrap()])
        .code(5)
        .says("golden case golden/input-000.png: output \"probabilities\"[0]");
}

fn vigil_hex(bytes: &[u8]) -> String {
    vigil_core::types::Sha256Digest::of(bytes).to_hex()
}

#[test]
fn a_changed_manifest_breaks_the_signature() {
    let env = Env::new();
    let (secret, public) = env.keys("k");
    env.create("b", "1.0.0", &["--sign-key", &secret]).ok();
    let manifest_path = env.path("b/vigil.toml");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(&manifest_path, text.replace("rtol = 0.001", "rtol = 0.5")).unwrap();
    env.run(&[
        "bundle",
        "verify",
        env.path("b").to_str().unwrap(),
        "--key",
        &public,
    ])
    .code(5)
    .says("INVALID");
}

#[test]
fn a_corrupt_or_foreign_signature_is_refused() {
    let env = Env::new();
    let (secret, public) = env.keys("k");
    let (other_secret, _) = env.keys("other");
    env.create("b", "1.0.0", &["--sign-key", &secret]).ok();
    let b = env.path("b");
    // Signed by a key we do not trust: valid, but refused when a trusted signature is required.
    let c = env.path("c");
    env.create("c", "1.0.0", &["--sign-key", &other_secret])
        .ok();
    env.run(&[
        "bundle",
        "verify",
        c.to_str().unwrap(),
        "--key",
        &public,
        "--require-signature",
    ])
    .code(1)
    .says("not trusted");
    // A signature whose bytes were changed.
    let sig_path = b.join("signature");
    let mut sig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig_path).unwrap()).unwrap();
    let s = sig["signature"].as_str().unwrap().to_owned();
    let flipped = match s.strip_prefix('0') {
        Some(rest) => format!("1{rest}"),
        None => format!("0{}", &s[1..]),
    };
    sig["signature"] = serde_json::json!(flipped);
    std::fs::write(&sig_path, serde_json::to_vec(&sig).unwrap()).unwrap();
    env.run(&["bundle", "verify", b.to_str().unwrap(), "--key", &public])
        .code(5)
        .says("INVALID");
    std::fs::write(&sig_path, b"not json").unwrap();
    env.run(&["bundle", "verify", b.to_str().unwrap()])
        .code(5)
        .says("signature file is malformed");
}

#[test]
fn a_missing_or_unlisted_file_is_refused() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    std::fs::remove_file(env.path("b/golden/input-001.png")).unwrap();
    env.run(&["bundle", "verify", env.path("b").to_str().unwrap()])
        .code(5)
        .says("golden/input-001.png: listed in the manifest but missing");
    env.create("c", "1.0.0", &[]).ok();
    std::fs::write(env.path("c/extra.bin"), b"x").unwrap();
    env.run(&["bundle", "verify", env.path("c").to_str().unwrap()])
        .code(5)
        .says("extra.bin: not listed");
}

#[test]
fn manifests_with_unknown_or_missing_fields_are_refused() {
    let env = Env::new();
    env.create("b", "1.0.0", &[]).ok();
    let path = env.path("b/vigil.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[model]\n", "[model]\nthreshhold = 0.5\n"),
    )
    .unwrap();
    env.run(&["bundle", "verify", env.path("b").to_str().unwrap()])
        .code(5)
        .says("threshhold");
    std::fs::write(&path, text.replace("task = \"classification\"\n", "")).unwrap();
    env.run(&["bundle", "inspect", env.path("b").to_str().unwrap()])
        .code(5)
        .says("missing field `task`");
}

#[test]
fn a_bad_preprocessing_file_is_refused_before_running_anything() {
    let env = Env::new();
    let pre = env.path("pre.toml");
    std::fs::write(&pre, "[[preprocess]]\nop = \"decode\"\n[[preprocess]]\nop = \"rgb\"\n[[preprocess]]\nop = \"resize\"\nwidth = 128\nheight = 128\nfilter = \"bilinear\"\n[[preprocess]]\nop = \"layout\"\norder = \"nchw\"\n").unwrap();
    let model = testdata().join("weldnet-s.onnx");
    env.run(&[
        "bundle",
        "create",
        "--model",
        model.to_str().unwrap(),
        "--name",
        "w",
        "--version",
        "1",
        "--labels",
        "a,b,c,d",
        "--preprocess",
        pre.to_str().unwrap(),
        "--out",
        env.path("b").to_str().unwrap(),
    ])
    .code(5)
    .says("the pipeline makes 3 channel(s) but the model input \"image\" takes 1");
}

/// Writes a tar archive holding a valid bundle's files plus one crafted entry.
fn archive_with(
    env: &Env,
    name: &str,
    craft: impl FnOnce(&mut tar::Builder<std::fs::File>),
) -> std::path::PathBuf {
    env.create("src", "1.0.0", &[]).ok_or_exists();
    let path = env.path(name);
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    builder.append_dir_all(".", env.path("src")).unwrap();
    craft(&mut builder);
    builder.into_inner().unwrap().flush().unwrap();
    path
}

trait OkOrExists {
    fn ok_or_exists(self);
}
impl OkOrExists for crate::common::Run {
    fn ok_or_exists(self) {
        assert!(self.code == 0 || self.code == 4, "{self:?}");
    }
}

/// A raw header whose name field is written byte for byte (the tar crate refuses `..`).
fn raw_entry(
    builder: &mut tar::Builder<std::fs::File>,
    name: &str,
    ty: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(ty);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    builder.append(&h, data).unwrap();
}

#[test]
fn archives_with_traversal_absolute_paths_or_links_are_refused() {
    let env = Env::new();
    type Craft = Box<dyn FnOnce(&mut tar::Builder<std::fs::File>)>;
    let cases: Vec<(&str, Craft, &str)> = vec![
        (
            "dotdot.tar",
            Box::new(|b| raw_entry(b, "../escaped.txt", tar::EntryType::Regular, None, b"x")),
            "`..` would escape",
        ),
        (
            "abs.tar",
            Box::new(|b| {
                raw_entry(
                    b,
                    "/tmp/vigil-abs-test.txt",
                    tar::EntryType::Regular,
                    None,
                    b"x",
                )
            }),
            "absolute paths",
        ),
        (
            "symlink.tar",
            Box::new(|b| raw_entry(b, "link", tar::EntryType::Symlink, Some("/etc/passwd"), b"")),
            "no links",
        ),
        (
            "hardlink.tar",
            Box::new(|b| raw_entry(b, "hard", tar::EntryType::Link, Some("model.onnx"), b"")),
            "no links",
        ),
    ];
    for (name, craft, message) in cases {
        let archive = archive_with(&env, name, craft);
        env.run(&["bundle", "verify", archive.to_str().unwrap()])
            .code(5)
            .says(message);
        let out = env.path(&format!("{name}.out"));
        env.run(&[
            "bundle",
            "unpack",
            archive.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .code(5);
        assert!(!out.exists(), "{name}: a refused archive left a folder");
        env.run(&["models", "push", archive.to_str().unwrap()])
            .code(5);
    }
    assert!(
        !env.dir
            .path()
            .parent()
            .unwrap()
            .join("escaped.txt")
            .exists()
    );
    assert!(!std::path::Path::new("/tmp/vigil-abs-test.txt").exists());
    env.run(&["models", "list"]).ok().says("no models yet");
}

#[test]
fn key_generation_never_overwrites_and_keeps_the_secret_private() {
    let env = Env::new();
    let (secret, _) = env.keys("k");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let before = std::fs::read(&secret).unwrap();
    env.run(&["keys", "generate", "--out", env.path("k").to_str().unwrap()])
        .code(4)
        .says("already exists");
    assert_eq!(std::fs::read(&secret).unwrap(), before);
}

#[test]
fn a_threshold_rule_with_a_review_band_is_recorded_and_checked() {
    let env = Env::new();
    env.create(
        "b",
        "1.0.0",
        &["--threshold", "crack=0.4", "--review-band", "0.3,0.6"],
    )
    .ok();
    env.run(&["bundle", "inspect", env.path("b").to_str().unwrap()])
        .ok()
        .says("crack when p(crack) >= 0.4; review when p in [0.3, 0.6]");
    env.create(
        "c",
        "1.0.0",
        &["--threshold", "crack=0.4", "--review-band", "0.5,0.6"],
    )
    .code(5)
    .says("low <= threshold <= high");
    env.create(
        "d",
        "1.0.0",
        &["--threshold", "crack=0.4", "--review-band", "0.3"],
    )
    .code(5)
    .says("LOW,HIGH");
    env.create("e", "1.0.0", &["--threshold", "weld=0.4"])
        .code(5)
        .says("not one of the labels");
    assert!(!env.path("c").exists() && !env.path("d").exists() && !env.path("e").exists());
}
