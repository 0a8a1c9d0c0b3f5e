//! Fixtures: a temporary workspace with its own data directory, and helpers to run `vigil`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's test data folder.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A temporary folder with a data directory; runs the binary against it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

/// What one run gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn says(self, needle: &str) -> Run {
        let all = format!("{}{}", self.stdout, self.stderr);
        assert!(
            all.contains(needle),
            "expected {needle:?} in output\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
        c.env_remove("VIGIL_CONFIG")
            .env("VIGIL__STORE__DATA_DIR", self.data_dir())
            .env("VIGIL__LOG__LEVEL", "warn")
            .current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("VIGIL__") && k != "VIGIL__STORE__DATA_DIR" && k != "VIGIL__LOG__LEVEL"
            {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_cmd(self.cmd().args(args))
    }

    pub fn run_cmd(&self, c: &mut Command) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = c.output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Generates a key pair named `name`; returns (secret, public) paths as strings.
    pub fn keys(&self, name: &str) -> (String, String) {
        let prefix = self.path(name);
        self.run(&["keys", "generate", "--out", prefix.to_str().unwrap()])
            .ok();
        (
            format!("{}.key", prefix.display()),
            format!("{}.pub", prefix.display()),
        )
    }

    /// Creates a bundle of the test model at `out` with the weld preprocessing and two real
    /// tiles as golden inputs, plus any extra arguments.
    pub fn create(&self, out: &str, version: &str, extra: &[&str]) -> Run {
        let td = testdata();
        let model = td.join("weldnet-s.onnx");
        let pre = td.join("weld-preprocess.toml");
        let g1 = td.join("weld/RRT-106R_x0064_y0227.png");
        let g2 = td.join("weld/RRT-106R_x0000_y0035.png");
        let out = self.path(out);
        let mut args: Vec<String> = [
            "bundle",
            "create",
            "--model",
            model.to_str().unwrap(),
            "--name",
            "weldnet",
            "--version",
            version,
            "--labels",
            "no_defect,porosity,crack,lack_of_fusion",
            "--out",
            out.to_str().unwrap(),
            "--golden",
            g1.to_str().unwrap(),
            g2.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--preprocess") {
            args.extend(["--preprocess".to_owned(), pre.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs)
    }
}

/// Every file under `root` with its bytes, by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Flips one bit in the middle of a file.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}
