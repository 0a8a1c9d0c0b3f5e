//! The runtime's integration tests: the request path on the real weld model (ONNX Runtime)
//! and on a gated fake engine that puts requests in flight deterministically. Batching is
//! asserted through the metrics, never through timing.
#![allow(clippy::unwrap_used)]

mod common;
mod log;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use vigil_core::ErrorKind;
use vigil_core::bundle::{GOLDEN_EXPECTED_FILE, GoldenSet};
use vigil_engine::Batch;
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_runtime::{DeployConfig, Error, Infer, InferConfig, metrics};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_succeed_and_share_batches() {
    // A delay far longer than the test: batches leave only when full, so 32 requests make
    // exactly 4 batches of 8 however the threads are scheduled.
    let infer = runtime(64, batch(8, Duration::from_secs(20)));
    infer.deployments().load(bundle("1")).await.unwrap();
    let images = tiles();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (infer, bytes) = (infer.clone(), images[i % images.len()].1.clone());
        tasks.push(tokio::spawn(async move {
            infer.classify(&name(), bytes, None).await
        }));
    }
    for t in tasks {
        let c = t.await.unwrap().unwrap();
        assert_eq!(c.version.as_str(), "1");
        assert_eq!(c.batch_size, 8);
        assert_eq!(c.outputs["probabilities"].shape, vec![1, 4]);
        assert_eq!(c.decisions.len(), 1);
        assert!(c.timings.total >= c.timings.queue);
    }
    let text = infer.metrics().render();
    let mv = [("model", "weldnet"), ("version", "1")];
    assert_eq!(sample(&text, metrics::NV_INFERENCE_COUNT, &mv), 32.0);
    assert_eq!(sample(&text, metrics::NV_INFERENCE_EXEC_COUNT, &mv), 4.0);
    assert_eq!(sample(&text, "vigil_batch_size_count", &mv), 4.0);
    assert_eq!(sample(&text, "vigil_batch_size_sum", &mv), 32.0);
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "success")]
        ),
        32.0
    );
    assert_eq!(sample(&text, metrics::QUEUE_ENQUEUED_TOTAL, &mv), 32.0);
    assert_eq!(sample(&text, metrics::QUEUE_DEQUEUED_TOTAL, &mv), 32.0);
    assert_eq!(sample(&text, metrics::QUEUE_DEPTH, &mv), 0.0);
    assert_eq!(sample(&text, metrics::INFER_IN_FLIGHT, &[]), 0.0);
    infer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gives_each_request_the_same_answer_as_running_it_alone() {
    let infer = runtime(64, batch(8, Duration::ZERO));
    let m = infer.deployments().load(bundle("1")).await.unwrap();
    let (_, png) = tiles().remove(3);
    let alone = infer.classify(&name(), png.clone(), None).await.unwrap();
    // The same image as a tensor, and a tensor with the wrong shape.
    let t = Pipeline::new(m.manifest(), Limits::default())
        .run(&png)
        .unwrap();
    let tensor = infer
        .classify_tensor(
            &name(),
            Batch {
                shape: t.shape,
                data: t.data.clone(),
            },
            None,
        )
        .await
        .unwrap();
    let (a, b) = (
        &alone.outputs["probabilities"].data,
        &tensor.outputs["probabilities"].data,
    );
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    assert_eq!(alone.verdict, tensor.verdict);
    let wrong = infer
        .classify_tensor(
            &name(),
            Batch {
                shape: [1, 3, 128, 128],
                data: vec![0.0; 3 * 128 * 128],
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Invalid);
    assert!(
        matches!(&wrong, Error::Invalid(msg) if msg.contains("\"image\"") && msg.contains("[1, 3, 128, 128]")),
        "{wrong}"
    );
    // Two images in one tensor request: two rows, two decisions.
    let mut two = t.data.clone();
    two.extend_from_slice(&t.data);
    let c = infer
        .classify_tensor(
            &name(),
            Batch {
                shape: [2, 1, 128, 128],
                data: two,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(c.outputs["probabilities"].shape, vec![2, 4]);
    assert_eq!(c.decisions.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_max_in_flight_is_refused_at_once() {
    let infer = runtime(2, batch(1, Duration::ZERO));
    let (fake, gate, mut entered) = gated();
    infer
        .deployments()
        .load_with_backend(fake_bundle("1"), Box::new(fake))
        .await
        .unwrap();
    let png = tiles()[0].1.clone();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (infer, png) = (infer.clone(), png.clone());
            tokio::spawn(async move { infer.classify(&name(), png, None).await })
        })
        .collect();
    entered.recv().await.unwrap();
    until("two requests are in flight", || infer.in_flight() == 2).await;
    // Refused without waiting: the future is ready on its first poll.
    let refused = infer
        .classify(&name(), png.clone(), None)
        .now_or_never()
        .expect("admission must not wait");
    assert!(
        matches!(refused, Err(Error::Overloaded { max_in_flight: 2 })),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Overloaded);
    drop(gate);
    for h in held {
        h.await.unwrap().unwrap();
    }
    let text = infer.metrics().render();
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "overloaded")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            metrics::NV_INFERENCE_REQUEST_FAILURE,
            &[("reason", "REJECTED")]
        ),
        1.0
    );
    assert_eq!(infer.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_two_batches_at_once_and_a_third_goes_to_whichever_frees_first() {
    let infer = runtime(16, batch(1, Duration::ZERO));
    let (a, gate_a, mut entered_a) = gated();
    let (b, gate_b, mut entered_b) = gated();
    let d = infer
        .deployments()
        .prepare_with_backends(fake_bundle("1"), vec![Box::new(a), Box::new(b)])
        .await
        .unwrap();
    infer.deployments().install(d).unwrap();
    let png = tiles()[0].1.clone();
    let spawn = || {
        let (infer, png) = (infer.clone(), png.clone());
        tokio::spawn(async move { infer.classify(&name(), png, None).await })
    };
    let first = [spawn(), spawn()];
    // Both instances hold a batch at the same time: neither has been let go.
    assert_eq!(entered_a.recv().await, Some(1));
    assert_eq!(entered_b.recv().await, Some(1));
    // A third waits (prefetched) and runs on the instance that frees first, here B.
    let third = spawn();
    until("the third request is queued", || infer.in_flight() == 3).await;
    gate_b.send(()).unwrap();
    assert_eq!(entered_b.recv().await, Some(1));
    gate_b.send(()).unwrap();
    gate_a.send(()).unwrap();
    for h in first.into_iter().chain([third]) {
        assert_eq!(h.await.unwrap().unwrap().batch_size, 1);
    }
    assert!(entered_a.try_recv().is_err(), "A ran only the first batch");
    let text = infer.metrics().render();
    let mv = [("model", "weldnet"), ("version", "1")];
    assert_eq!(sample(&text, metrics::NV_INFERENCE_EXEC_COUNT, &mv), 3.0);
    infer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_is_skipped_not_run() {
    let infer = runtime(16, batch(1, Duration::ZERO));
    let (fake, gate, mut entered) = gated();
    infer
        .deployments()
        .load_with_backend(fake_bundle("1"), Box::new(fake))
        .await
        .unwrap();
    let png = tiles()[0].1.clone();
    let spawn = |infer: &vigil_runtime::Infer| {
        let (infer, png) = (infer.clone(), png.clone());
        tokio::spawn(async move { infer.classify(&name(), png, None).await })
    };
    let first = spawn(&infer);
    entered.recv().await.unwrap();
    // Two more wait behind the first: one prefetched for the engine, one in the queue.
    let dropped = [spawn(&infer), spawn(&infer)];
    until("three requests are queued", || {
        sample(
            &infer.metrics().render(),
            metrics::QUEUE_ENQUEUED_TOTAL,
            &[],
        ) == 3.0
    })
    .await;
    for d in &dropped {
        d.abort();
    }
    for d in dropped {
        assert!(d.await.unwrap_err().is_cancelled());
    }
    drop(gate);
    first.await.unwrap().unwrap();
    infer.classify(&name(), png.clone(), None).await.unwrap();
    let text = infer.metrics().render();
    assert_eq!(
        sample(
            &text,
            metrics::QUEUE_SKIPPED_TOTAL,
            &[("reason", "cancelled")]
        ),
        2.0
    );
    // Only the first and the last request reached the engine.
    assert_eq!(sample(&text, metrics::NV_INFERENCE_COUNT, &[]), 2.0);
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "cancelled")]
        ),
        2.0
    );
    assert_eq!(sample(&text, metrics::QUEUE_DEPTH, &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_image_is_a_typed_error_and_does_not_affect_others() {
    let infer = runtime(64, batch(4, Duration::ZERO));
    infer.deployments().load(bundle("1")).await.unwrap();
    let mut tasks = Vec::new();
    for (i, (_, png)) in tiles().into_iter().enumerate() {
        let infer = infer.clone();
        tasks.push(tokio::spawn(async move {
            infer.classify(&name(), png, None).await.map(|_| i)
        }));
    }
    let bad = infer
        .classify(&name(), Bytes::from_static(b"not an image at all"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(bad, Error::Engine(vigil_engine::Error::Decode(_))),
        "{bad:?}"
    );
    assert_eq!(bad.kind(), ErrorKind::Invalid);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let text = infer.metrics().render();
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "invalid")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "success")]
        ),
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_engine_answers_with_an_error_and_keeps_serving() {
    let infer = runtime(8, batch(1, Duration::ZERO));
    let fake = FakeBackend {
        gate: None,
        entered: None,
        panic_first: true,
        calls: 0,
    };
    infer
        .deployments()
        .load_with_backend(fake_bundle("1"), Box::new(fake))
        .await
        .unwrap();
    let png = tiles()[0].1.clone();
    let err = infer
        .classify(&name(), png.clone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Internal(m) if m.contains("fell over")),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Internal);
    let ok = infer.classify(&name(), png, None).await.unwrap();
    assert_eq!(ok.verdict.label.as_str(), "crack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_versions_under_load_fails_no_request() {
    let infer = runtime(64, batch(4, Duration::ZERO));
    let v1 = infer.deployments().load(bundle("1")).await.unwrap();
    let v1_weak = Arc::downgrade(&v1);
    drop(v1);
    let stop = Arc::new(AtomicBool::new(false));
    let images = tiles();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (infer, stop, images) = (infer.clone(), stop.clone(), images.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = w;
            // Bounded: stops when told, or after 5,000 requests.
            while !stop.load(Ordering::Relaxed) && seen.len() < 5_000 {
                let png = images[i % images.len()].1.clone();
                let c = infer.classify(&name(), png, None).await?;
                seen.push(c.version.as_str().parse::<u32>().unwrap());
                i += 1;
            }
            Ok::<_, Error>(seen)
        }));
    }
    let bundles: Vec<_> = ["2", "3", "4"].iter().map(|v| bundle(v)).collect();
    let mut previous = None;
    for b in bundles {
        // Let some requests run on the current version first.
        let before = infer.metrics().render();
        until("requests run between swaps", || {
            sample(
                &infer.metrics().render(),
                metrics::INFER_REQUESTS_TOTAL,
                &[],
            ) >= sample(&before, metrics::INFER_REQUESTS_TOTAL, &[]) + 4.0
        })
        .await;
        previous = infer.deployments().get(&name());
        infer.deployments().load(b).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut versions = BTreeSet::new();
    for w in workers {
        let seen = w.await.unwrap().expect("no request fails during a swap");
        assert!(
            seen.windows(2).all(|p| p[0] <= p[1]),
            "a request answered on an older version after a newer one: {seen:?}"
        );
        versions.extend(seen);
    }
    assert!(
        versions.iter().all(|v| (1..=4).contains(v)) && versions.contains(&1),
        "{versions:?}"
    );
    assert_eq!(
        infer.deployments().get(&name()).unwrap().version().as_str(),
        "4"
    );
    // The first version is gone once its requests finished: nothing holds it any more.
    assert!(v1_weak.upgrade().is_none());
    // Rollback is the same swap.
    let replaced = infer
        .deployments()
        .install(previous.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(replaced.version().as_str(), "4");
    let c = infer
        .classify(&name(), tiles()[0].1.clone(), None)
        .await
        .unwrap();
    assert_eq!(c.version.as_str(), "3");
    let text = infer.metrics().render();
    assert_eq!(
        sample(
            &text,
            metrics::NV_INFERENCE_REQUEST_FAILURE,
            &[("model", "weldnet")]
        ),
        0.0
    );
    infer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_golden_cases_do_not_reproduce_is_not_deployed() {
    let infer = runtime(8, batch(4, Duration::ZERO));
    infer.deployments().load(bundle("1")).await.unwrap();
    let mut bad = bundle("2");
    let mut set = GoldenSet::parse(&bad.files[GOLDEN_EXPECTED_FILE]).unwrap();
    let probs = set.cases[0].outputs.get_mut("probabilities").unwrap();
    probs.data[0] += 0.5;
    bad.files
        .insert(GOLDEN_EXPECTED_FILE.to_owned(), set.to_json());
    let err = infer.deployments().load(bad).await.unwrap_err();
    assert!(matches!(err, Error::GoldenCheck { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        infer.deployments().get(&name()).unwrap().version().as_str(),
        "1"
    );
    let unknown = infer
        .classify(&"other".parse().unwrap(), tiles()[0].1.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_admitted_requests_then_refuses_new_ones() {
    let infer = runtime(16, batch(1, Duration::ZERO));
    let (fake, gate, mut entered) = gated();
    infer
        .deployments()
        .load_with_backend(fake_bundle("1"), Box::new(fake))
        .await
        .unwrap();
    let png = tiles()[0].1.clone();
    let admitted: Vec<_> = (0..3)
        .map(|_| {
            let (infer, png) = (infer.clone(), png.clone());
            tokio::spawn(async move { infer.classify(&name(), png, None).await })
        })
        .collect();
    entered.recv().await.unwrap();
    until("three requests are queued", || {
        sample(
            &infer.metrics().render(),
            metrics::QUEUE_ENQUEUED_TOTAL,
            &[],
        ) == 3.0
    })
    .await;
    let stopping = {
        let infer = infer.clone();
        tokio::spawn(async move { infer.shutdown().await })
    };
    until("shutdown has begun", || infer.is_shutting_down()).await;
    let refused = infer
        .classify(&name(), png.clone(), None)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::ShuttingDown), "{refused:?}");
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    // Shutdown waits for the admitted requests, which wait for the engine.
    assert!(!stopping.is_finished());
    drop(gate);
    for a in admitted {
        a.await.unwrap().unwrap();
    }
    stopping.await.unwrap();
    assert!(matches!(
        infer.deployments().load(fake_bundle("2")).await,
        Err(Error::ShuttingDown)
    ));
    let text = infer.metrics().render();
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "success")]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_render_every_series_and_a_request_moves_the_request_counter() {
    let infer = runtime(8, batch(4, Duration::ZERO));
    infer.deployments().load(bundle("1")).await.unwrap();
    let success = [
        ("model", "weldnet"),
        ("version", "1"),
        ("outcome", "success"),
    ];
    let before = sample(
        &infer.metrics().render(),
        metrics::INFER_REQUESTS_TOTAL,
        &success,
    );
    let c = infer
        .classify(&name(), tiles()[2].1.clone(), None)
        .await
        .unwrap();
    let text = infer.metrics().render();
    assert_eq!(
        sample(&text, metrics::INFER_REQUESTS_TOTAL, &success),
        before + 1.0
    );
    assert_eq!(
        sample(
            &text,
            metrics::PREDICTIONS_TOTAL,
            &[("label", c.verdict.label.as_str())]
        ),
        1.0
    );
    for name in [
        metrics::INFER_REQUESTS_TOTAL,
        metrics::INFER_DURATION_SECONDS,
        metrics::INFER_PREPROCESS_DURATION_SECONDS,
        metrics::INFER_QUEUE_DURATION_SECONDS,
        metrics::INFER_INFERENCE_DURATION_SECONDS,
        metrics::INFER_IN_FLIGHT,
        metrics::BATCH_SIZE,
        metrics::QUEUE_DEPTH,
        metrics::QUEUE_ENQUEUED_TOTAL,
        metrics::QUEUE_DEQUEUED_TOTAL,
        metrics::PREDICTIONS_TOTAL,
        metrics::PREDICTION_CONFIDENCE,
        metrics::NV_INFERENCE_REQUEST_SUCCESS,
        metrics::NV_INFERENCE_COUNT,
        metrics::NV_INFERENCE_EXEC_COUNT,
        metrics::NV_INFERENCE_QUEUE_DURATION_US,
        metrics::NV_INFERENCE_COMPUTE_INFER_DURATION_US,
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
    }
    assert_eq!(
        sample(&text, metrics::NV_INFERENCE_REQUEST_SUCCESS, &[]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_film_is_scored_tile_by_tile_and_takes_its_most_positive_tile() {
    let infer = runtime(8, batch(8, Duration::ZERO));
    let mut m = manifest("1");
    m.preprocess = vec![
        vigil_core::bundle::Step::Decode,
        vigil_core::bundle::Step::Grey,
        vigil_core::bundle::Step::Tile {
            size: 128,
            stride: 128,
        },
        vigil_core::bundle::Step::Standardize { eps: 1e-6 },
        vigil_core::bundle::Step::Layout {
            order: vigil_core::bundle::Layout::Nchw,
        },
    ];
    let files = [(vigil_core::bundle::MODEL_FILE.to_owned(), model_bytes())]
        .into_iter()
        .collect();
    infer
        .deployments()
        .load(vigil_runtime::BundleFiles {
            manifest: m,
            digest: vigil_core::types::Sha256Digest::of(b"tiling"),
            files,
        })
        .await
        .unwrap();
    let film = std::fs::read(testdata().join("weld/films/bam5.png")).unwrap();
    let c = infer
        .classify(&name(), Bytes::from(film), None)
        .await
        .unwrap();
    let grid = c.grid.as_ref().unwrap();
    let n = grid.positions.len();
    assert!(n > 8, "{n} tiles");
    assert_eq!(c.outputs["probabilities"].shape, vec![n, 4]);
    assert_eq!(c.decisions.len(), n);
    let best = c.decisions.iter().map(|d| d.score).fold(f32::MIN, f32::max);
    assert_eq!(c.verdict.score, best);
    assert_eq!(c.decisions[c.verdict_row], c.verdict);
    // One request larger than a batch runs alone, in engine calls of at most 8 tiles.
    let text = infer.metrics().render();
    assert_eq!(sample(&text, metrics::NV_INFERENCE_COUNT, &[]), n as f64);
    assert_eq!(
        sample(&text, metrics::NV_INFERENCE_EXEC_COUNT, &[]),
        n.div_ceil(8) as f64
    );
    assert_eq!(sample(&text, "vigil_batch_size_count", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_fails_as_overloaded() {
    let infer = runtime(8, batch(1, Duration::ZERO));
    let (fake, gate, _entered) = gated();
    infer
        .deployments()
        .load_with_backend(fake_bundle("1"), Box::new(fake))
        .await
        .unwrap();
    // The engine is held, so the request cannot be answered before its deadline.
    let err = infer
        .classify(
            &name(),
            tiles()[0].1.clone(),
            Some(std::time::Instant::now()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    drop(gate);
    infer
        .classify(&name(), tiles()[0].1.clone(), None)
        .await
        .unwrap();
}

// A 9999 x 9999 16-bit PNG of 583 KB used to be decoded whatever the memory it took (2.36 GB
// peak; 8 at once reached 4.5 GB). Each image now reserves its peak from the memory budget,
// from its header, before it is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_reserves_its_memory_before_decoding_and_is_refused_when_it_cannot() {
    let (_, tile) = tiles().into_iter().next().unwrap();
    let peak = Pipeline::new(&manifest("1"), Limits::default())
        .peak_bytes(&tile)
        .unwrap();
    assert_eq!(
        peak,
        128 * 128 * vigil_engine::preprocess::PEAK_BYTES_PER_SAMPLE
    );
    let with_budget = |bytes: u64| {
        Infer::new(
            InferConfig {
                preprocess_threads: 1,
                memory_budget: bytes,
                ..InferConfig::default()
            },
            DeployConfig {
                engine: engine(),
                ..DeployConfig::default()
            },
        )
        .unwrap()
    };
    // Larger than the whole budget: the client's error, never retried.
    let small = with_budget(peak / 2);
    small.deployments().load(bundle("1")).await.unwrap();
    let err = small
        .classify(&name(), tile.clone(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("server.memory_budget"), "{err}");
    // Room for one image: a second one while the first holds its share is refused now
    // (503 with Retry-After), and served once the memory is given back.
    let one = with_budget(peak + peak / 2);
    one.deployments().load(bundle("1")).await.unwrap();
    let held = one.memory().try_reserve(peak, "another image").unwrap();
    let err = one.classify(&name(), tile.clone(), None).await.unwrap_err();
    assert!(matches!(err, Error::OverBudget { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    drop(held);
    one.classify(&name(), tile, None).await.unwrap();
    assert_eq!(one.memory().in_use(), 0, "every reservation is given back");
}
