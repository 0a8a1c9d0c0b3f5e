//! Engine figures for the benchmark scripts in `bench/` (not a test: numbers vary with the
//! machine; compare only with a peer measured in the same run).
//!
//! ```text
//! bench latency MODEL.onnx THREADS [BATCH ...]
//!     median and p90 of 30 runs after 10 warm-ups per batch size, random inputs
//! bench ceiling MANIFEST.csv MODEL.onnx PREPROCESS.toml THREADS BATCH
//!     decode + preprocess every image of the manifest on one thread, then run the engine
//!     alone over all of them in batches: the in-process ceiling batch scoring is held to
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use vigil_core::bundle::{Manifest, Step};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_engine::{Backend, Batch, EngineConfig, OrtBackend};

fn manifest(model: &[u8], steps: Vec<Step>) -> Manifest {
    let info = vigil_core::onnx::inspect(model).expect("an ONNX model");
    let classes = info
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .map_or(4, |o| o.shape[1].max(1));
    let labels = (0..classes)
        .map(|i| format!("class{i}").parse().unwrap())
        .collect();
    Manifest::for_model(&info, "bench".parse().unwrap(), labels, steps)
}

fn load(model: &[u8], m: &Manifest, threads: usize) -> OrtBackend {
    OrtBackend::load(
        model,
        m,
        &EngineConfig {
            intra_threads: threads,
            ..EngineConfig::default()
        },
    )
    .expect("the model loads")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latency(args: &[String]) {
    let model = std::fs::read(&args[0]).unwrap();
    let threads: usize = args[1].parse().unwrap();
    let batches: Vec<usize> = if args.len() > 2 {
        args[2..].iter().map(|b| b.parse().unwrap()).collect()
    } else {
        vec![1, 8]
    };
    let m = manifest(&model, Vec::new());
    let mut backend = load(&model, &m, threads);
    let shape = &m.inputs[0].shape;
    for b in batches {
        let dims = [b, shape[1] as usize, shape[2] as usize, shape[3] as usize];
        // A fixed pseudo-random input; the timing does not depend on the values.
        let mut state = 42u64;
        let data = (0..dims.iter().product::<usize>())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        let batch = Batch { shape: dims, data };
        for _ in 0..10 {
            backend.run(&batch).unwrap();
        }
        let mut ts: Vec<f64> = (0..30)
            .map(|_| {
                let t = Instant::now();
                backend.run(&batch).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ts.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({"engine": "vigil-onnxruntime", "model": args[0].rsplit('/').next(), "threads": threads,
                "batch": b, "median_ms": (percentile(&ts, 0.5) * 1e3).round() / 1e3, "p90_ms": (percentile(&ts, 0.9) * 1e3).round() / 1e3})
        );
    }
}

fn ceiling(args: &[String]) {
    let manifest_csv = std::path::Path::new(&args[0]);
    let model = std::fs::read(&args[1]).unwrap();
    #[derive(serde::Deserialize)]
    struct Pre {
        preprocess: Vec<Step>,
    }
    let pre: Pre = toml::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let threads: usize = args[3].parse().unwrap();
    let batch: usize = args[4].parse().unwrap();
    let m = manifest(&model, pre.preprocess);
    let pipeline = Pipeline::new(&m, Limits::default());
    let base = manifest_csv.parent().unwrap();
    let paths: Vec<_> = std::fs::read_to_string(manifest_csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| base.join(l.split(',').next().unwrap()))
        .collect();
    let bytes: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let t = Instant::now();
    let tensors: Vec<_> = bytes.iter().map(|b| pipeline.run(b).unwrap()).collect();
    let decode_s = t.elapsed().as_secs_f64();
    let refs: Vec<_> = tensors.iter().collect();
    let n = tensors.len() as f64;
    // One instance with `threads` intra-op threads.
    let mut backend = load(&model, &m, threads);
    backend
        .run(&Batch::stack(&refs[..batch.min(refs.len())]).unwrap())
        .unwrap();
    let t = Instant::now();
    for chunk in refs.chunks(batch) {
        backend.run(&Batch::stack(chunk).unwrap()).unwrap();
    }
    let one_instance = n / t.elapsed().as_secs_f64();
    // `threads` single-threaded instances, each on its own share of the images.
    let mut instances: Vec<_> = (0..threads).map(|_| load(&model, &m, 1)).collect();
    for b in &mut instances {
        b.run(&Batch::stack(&refs[..batch.min(refs.len())]).unwrap())
            .unwrap();
    }
    let share = refs.len().div_ceil(threads);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for (b, part) in instances.iter_mut().zip(refs.chunks(share)) {
            scope.spawn(move || {
                for chunk in part.chunks(batch) {
                    b.run(&Batch::stack(chunk).unwrap()).unwrap();
                }
            });
        }
    });
    let many_instances = n / t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"images": tensors.len(), "threads": threads, "batch": batch,
            "decode_preprocess_ms_per_image_1_thread": (decode_s / n * 1e6).round() / 1e3,
            "engine_only_images_per_s_1_instance": one_instance.round(),
            "engine_only_images_per_s_instances_of_1_thread": many_instances.round(),
            "ceiling_images_per_s": one_instance.max(many_instances).round()})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("latency") if args.len() >= 3 => latency(&args[1..]),
        Some("ceiling") if args.len() == 6 => ceiling(&args[1..]),
        _ => {
            eprintln!(
                "usage: bench latency MODEL.onnx THREADS [BATCH ...] | bench ceiling MANIFEST.csv MODEL.onnx PREPROCESS.toml THREADS BATCH"
            );
            std::process::exit(2);
        }
    }
}
