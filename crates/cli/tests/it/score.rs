//! `vigil score`: batch scoring into CSV, JSON Lines and Parquet; bad files as rows; resume;
//! whole radiographs tile by tile with heat maps.

use crate::common::{Env, testdata};

fn bundle(env: &Env) -> String {
    env.create("b", "1.0.0", &[]).ok();
    env.path("b").display().to_string()
}

/// The six weld tiles (not the film beside them).
fn tiles_dir() -> String {
    format!("{}/*.png", testdata().join("weld").display())
}

#[test]
fn a_folder_is_scored_into_csv_with_one_row_per_image() {
    let env = Env::new();
    let b = bundle(&env);
    let out = env.path("scores.csv");
    env.run(&[
        "score",
        &tiles_dir(),
        "--bundle",
        &b,
        "--out",
        out.to_str().unwrap(),
    ])
    .ok()
    .says("scored 6 image(s)");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "path,model,version,label,confidence,p_no_defect,p_porosity,p_crack,p_lack_of_fusion,flags,error,expected,tiles"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 6, "{text}");
    for row in &rows {
        let cells: Vec<&str> = row.split(',').collect();
        let p: f32 = (5..9).map(|i| cells[i].parse::<f32>().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-3, "{row}");
        assert_eq!(cells[10], "", "{row}");
    }
}

#[test]
fn the_same_image_scores_the_same_as_its_golden_output() {
    // The scoring path must give the exact outputs recorded when the bundle was made.
    let env = Env::new();
    let b = bundle(&env);
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("b/golden/expected.json")).unwrap())
            .unwrap();
    let expected: Vec<f32> = golden["cases"][0]["outputs"]["probabilities"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let out = env.path("s.jsonl");
    let input = env.path("b/golden/input-000.png");
    env.run(&[
        "score",
        input.to_str().unwrap(),
        "--bundle",
        &b,
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    let row: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let got: Vec<f32> = ["no_defect", "porosity", "crack", "lack_of_fusion"]
        .iter()
        .map(|l| row["probabilities"][l].as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_labelled_manifest_gives_accuracy_and_a_confusion_matrix_in_json_lines() {
    let env = Env::new();
    let b = bundle(&env);
    let manifest = testdata().join("weld/manifest.csv");
    let out = env.path("s.jsonl");
    let run = env
        .run(&[
            "score",
            manifest.to_str().unwrap(),
            "--bundle",
            &b,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .ok();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["scored"], 6);
    assert_eq!(summary["confusion"]["counts"].as_object().unwrap().len(), 2);
    assert!(summary["accuracy"].as_f64().is_some());
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0]["expected"], "defect");
}

#[test]
fn a_bad_file_is_a_row_not_a_crash() {
    let env = Env::new();
    let b = bundle(&env);
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        testdata().join("weld/RRT-106R_x0064_y0227.png"),
        dir.join("good.png"),
    )
    .unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out = env.path("s.csv");
    env.run(&[
        "score",
        dir.to_str().unwrap(),
        "--bundle",
        &b,
        "--out",
        out.to_str().unwrap(),
    ])
    .ok()
    .says("1 failed");
    let text = std::fs::read_to_string(&out).unwrap();
    let broken = text.lines().find(|l| l.contains("broken.png")).unwrap();
    assert!(broken.contains("cannot decode the image"), "{broken}");
    assert!(
        text.lines()
            .any(|l| l.contains("good.png") && l.contains(",1")),
        "{text}"
    );
}

#[test]
fn resume_scores_only_what_is_missing_and_existing_output_is_protected() {
    let env = Env::new();
    let b = bundle(&env);
    let out = env.path("s.csv");
    let o = out.to_str().unwrap();
    env.run(&["score", &tiles_dir(), "--bundle", &b, "--out", o])
        .ok();
    let full = std::fs::read_to_string(&out).unwrap();
    // Without --resume or --overwrite the output is left alone.
    // An output in the way is a conflict (exit 4), not a failed check (1).
    env.run(&["score", &tiles_dir(), "--bundle", &b, "--out", o])
        .code(4)
        .says("--resume");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), full);
    // Simulate a run killed mid-write: three rows and half of the fourth.
    let lines: Vec<&str> = full.lines().collect();
    let partial = format!("{}\n{}", lines[..4].join("\n"), &lines[4][..10]);
    std::fs::write(&out, partial).unwrap();
    env.run(&[
        "score",
        &tiles_dir(),
        "--bundle",
        &b,
        "--out",
        o,
        "--resume",
    ])
    .ok()
    .says("3 of 6 images are already");
    let resumed = std::fs::read_to_string(&out).unwrap();
    let mut a: Vec<&str> = resumed.lines().collect();
    let mut f: Vec<&str> = full.lines().collect();
    a.sort();
    f.sort();
    assert_eq!(
        a, f,
        "a resumed run must hold each image exactly once, with the same values"
    );
}

#[test]
fn parquet_output_holds_every_row() {
    let env = Env::new();
    let b = bundle(&env);
    let out = env.path("s.parquet");
    env.run(&[
        "score",
        &tiles_dir(),
        "--bundle",
        &b,
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    let file = std::fs::File::open(&out).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader as _;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 6);
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert!(names.contains(&"p_crack".to_owned()), "{names:?}");
    env.run(&[
        "score",
        &tiles_dir(),
        "--bundle",
        &b,
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ])
    .code(5)
    .says("not Parquet");
    // An input that does not exist is "not found" (exit 3); it used to exit 1, the code of a
    // failed check.
    env.run(&["score", "nosuchdir", "--bundle", &b, "--out", "x.csv"])
        .code(3)
        .says("nosuchdir: no such file");
}

#[test]
fn a_registry_model_is_scored_by_reference() {
    let env = Env::new();
    let b = bundle(&env);
    env.run(&["models", "push", &b]).ok();
    env.run(&[
        "models",
        "alias",
        "set",
        "weldnet",
        "production",
        "1.0.0",
        "--reason",
        "t",
    ])
    .ok();
    let out = env.path("s.csv");
    env.run(&[
        "score",
        &tiles_dir(),
        "--model",
        "weldnet@production",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok()
    .says("scored 6");
    env.run(&[
        "score",
        &tiles_dir(),
        "--model",
        "weldnet@nosuch",
        "--out",
        env.path("t.csv").to_str().unwrap(),
    ])
    .code(3);
    assert!(!env.path("t.csv").exists());
}

#[test]
fn a_whole_radiograph_is_scored_tile_by_tile_with_a_heat_map() {
    let env = Env::new();
    let pre = env.path("film.toml");
    std::fs::write(
        &pre,
        "[[preprocess]]\nop = \"decode\"\n[[preprocess]]\nop = \"grey\"\n[[preprocess]]\nop = \"tile\"\nsize = 128\nstride = 128\n[[preprocess]]\nop = \"standardize\"\n[[preprocess]]\nop = \"layout\"\norder = \"nchw\"\n",
    )
    .unwrap();
    env.create(
        "film",
        "1.0.0",
        &[
            "--preprocess",
            pre.to_str().unwrap(),
            "--threshold",
            "crack=0.5",
        ],
    )
    .ok();
    let film = testdata().join("weld/films/bam5.png");
    let out = env.path("films.csv");
    let maps = env.path("maps");
    env.run(&[
        "score",
        film.to_str().unwrap(),
        "--bundle",
        env.path("film").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--heatmap",
        maps.to_str().unwrap(),
    ])
    .ok()
    .says("tiles through the engine");
    let text = std::fs::read_to_string(&out).unwrap();
    let row = text.lines().nth(1).unwrap();
    // 3512 x 366 px in 128 px tiles: 28 columns x 3 rows.
    assert!(row.ends_with(",84"), "{row}");
    let map = image::open(maps.join("bam5.heatmap.png")).unwrap();
    assert_eq!((map.width(), map.height()), (3512, 366));
}
