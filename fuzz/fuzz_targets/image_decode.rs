//! Any bytes through the declared preprocessing, as the server runs it on an uploaded image:
//! format sniffing, PNG/JPEG/BMP/TIFF and DICOM decoding, the size limits read from headers,
//! the memory estimate, resizing, tiling and standardising. Errors are fine; a panic, an
//! allocation past libFuzzer's limit or a hang is a finding.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vigil_core::bundle::Step;
use vigil_engine::preprocess::{Limits, Pipeline};

/// The weld tile pipeline (resize to 128 x 128) and a whole-film one (tiles of 128, stride 64).
static PIPELINES: LazyLock<[Pipeline; 2]> = LazyLock::new(|| {
    let steps = |text: &str| -> Vec<Step> {
        let v: toml::Value = toml::from_str(text).expect("pipeline TOML");
        v["preprocess"].clone().try_into().expect("pipeline steps")
    };
    // Small limits, so that a header claiming a huge image is refused as in production
    // rather than exhausting the fuzzer's memory.
    let limits = Limits {
        max_encoded_bytes: 1 << 20,
        max_pixels: 4_000_000,
    };
    [
        Pipeline::from_steps(
            steps(include_str!("../../testdata/weld-preprocess.toml")),
            limits,
        )
        .observing(),
        Pipeline::from_steps(
            steps(
                r#"
                [[preprocess]]
                op = "decode"
                [[preprocess]]
                op = "grey"
                [[preprocess]]
                op = "tile"
                size = 128
                stride = 64
                [[preprocess]]
                op = "standardize"
                [[preprocess]]
                op = "layout"
                order = "nchw"
                "#,
            ),
            limits,
        )
        .observing(),
    ]
});

fuzz_target!(|data: &[u8]| {
    for p in PIPELINES.iter() {
        if p.peak_bytes(data).is_ok() {
            let _ = p.run_tiles(data);
        }
    }
    let _ = vigil_engine::preprocess::decode_for_display(
        data,
        &Limits {
            max_encoded_bytes: 1 << 20,
            max_pixels: 4_000_000,
        },
    );
});
