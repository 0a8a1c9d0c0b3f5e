//! The review queue: enqueue, work order, images, claims, skips, verdicts and what they settle.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use vigil_core::audit::verify;
use vigil_core::monitor::PredictionRecord;
use vigil_core::review::{Flag, ItemState, SecondOpinion};
use vigil_core::types::Sha256Digest;
use vigil_store::{
    Error, MonitorStore, NewReviewItem, NewVerdict, OpenOptions, Registry, ReviewImage,
    ReviewQuery, ReviewStore, SqliteRegistry, VerdictSource,
};

const LEASE: StdDuration = StdDuration::from_secs(600);

struct Review {
    dir: tempfile::TempDir,
    store: Arc<SqliteRegistry>,
}

async fn review() -> Review {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteRegistry::open(&OpenOptions::new(dir.path()))
        .await
        .unwrap();
    Review {
        dir,
        store: Arc::new(store),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap() + Duration::microseconds(123_456)
}

fn item(id: &str, flags: &[Flag], minutes: i64) -> NewReviewItem {
    NewReviewItem {
        request_id: id.to_owned(),
        model: "weldnet".to_owned(),
        version: "1.0".to_owned(),
        at: t0() + Duration::minutes(minutes),
        label: "ok".to_owned(),
        confidence: 0.6,
        probabilities: vec![0.6, 0.4],
        labels: vec!["ok".to_owned(), "defect".to_owned()],
        flags: flags.to_vec(),
        image: None,
        details: serde_json::json!({ "ood": 1.5 }),
    }
}

fn with_image(mut i: NewReviewItem, bytes: &[u8]) -> NewReviewItem {
    i.image = Some(ReviewImage {
        content_type: "image/png".to_owned(),
        bytes: bytes.to_vec(),
    });
    i
}

fn feedback(request_id: &str, inspector: &str, label: &str) -> NewVerdict {
    NewVerdict {
        request_id: request_id.to_owned(),
        inspector: inspector.to_owned(),
        label: label.to_owned(),
        comment: format!("{inspector} says {label}"),
        time_spent_ms: Some(1_500),
        source: VerdictSource::Feedback,
        claim_token: None,
    }
}

fn queued(request_id: &str, inspector: &str, label: &str, token: &str) -> NewVerdict {
    NewVerdict {
        source: VerdictSource::Queue,
        claim_token: Some(token.to_owned()),
        ..feedback(request_id, inspector, label)
    }
}

fn prediction(id: &str, at: DateTime<Utc>) -> PredictionRecord {
    PredictionRecord {
        request_id: id.to_owned(),
        correlation_id: Some(format!("client-{id}")),
        at,
        model: "weldnet".to_owned(),
        version: "1.0".to_owned(),
        bundle: "ab".repeat(32),
        source: "serve".to_owned(),
        label: "ok".to_owned(),
        confidence: 0.9,
        probabilities: vec![0.9, 0.1],
        flags: Vec::new(),
        stats: None,
        embedding: None,
        ood_distance: None,
        preprocess_us: 1,
        queue_us: 1,
        inference_us: 1,
        total_us: 3,
    }
}

async fn all_items(s: &SqliteRegistry) -> Vec<String> {
    s.review_items(&ReviewQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.request_id)
        .collect()
}

#[tokio::test]
async fn enqueue_skips_duplicates_and_refuses_unflagged_items_before_writing() {
    let r = review().await;
    let s = &r.store;
    let a = item("a", &[Flag::Review], 0);
    let b = item("b", &[Flag::Drift], 1);
    assert_eq!(s.enqueue(&[a.clone(), b]).await.unwrap(), 2);
    assert_eq!(
        s.enqueue(&[a.clone(), item("c", &[Flag::QaSample], 2)])
            .await
            .unwrap(),
        1
    );
    // Twice in one batch counts once.
    let d = item("d", &[Flag::Review], 3);
    assert_eq!(s.enqueue(&[d.clone(), d]).await.unwrap(), 1);

    let unflagged = with_image(item("f", &[], 5), b"never stored");
    let err = s
        .enqueue(&[item("e", &[Flag::Review], 4), unflagged])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert_eq!(all_items(s).await, ["a", "d", "b", "c"]);
    assert!(s.review_item_by_request("e").await.unwrap().is_none());

    let stored = s.review_item_by_request("a").await.unwrap().unwrap();
    assert_eq!(stored.state, ItemState::Open);
    assert_eq!(stored.at, a.at);
    assert_eq!(stored.probabilities, a.probabilities);
    assert_eq!(stored.details, a.details);
    assert_eq!(stored.claim, None);
    assert_eq!(s.review_item(stored.id).await.unwrap().unwrap(), stored);
}

#[tokio::test]
async fn the_queue_is_worked_by_priority_then_oldest_first() {
    let r = review().await;
    let s = &r.store;
    s.enqueue(&[
        item("qa", &[Flag::QaSample], 0),
        item("drift", &[Flag::Drift], 1),
        item("review", &[Flag::Review], 3),
        item("ood", &[Flag::QaSample, Flag::OutOfDistribution], 2),
    ])
    .await
    .unwrap();
    assert_eq!(all_items(s).await, ["ood", "review", "drift", "qa"]);
    let ood = s.review_item_by_request("ood").await.unwrap().unwrap();
    assert_eq!(ood.flags, [Flag::OutOfDistribution, Flag::QaSample]);
    assert_eq!(ood.priority, 0);

    let limited = s
        .review_items(&ReviewQuery {
            limit: 2,
            ..ReviewQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);

    let mut order = Vec::new();
    while let Some(i) = s.claim_next("ann", Some("weldnet"), LEASE).await.unwrap() {
        order.push(i.request_id);
    }
    assert_eq!(order, ["ood", "review", "drift", "qa"]);
    assert!(
        s.claim_next("bob", Some("other"), LEASE)
            .await
            .unwrap()
            .is_none()
    );
    let summary = s.queue_summary(None).await.unwrap();
    assert_eq!(summary.claimed, 4);
    assert_eq!(summary.by_state["open"], 4);
    assert_eq!(summary.open_by_flag["qa_sample"], 2);
    assert_eq!(summary.oldest_open_at, Some(t0()));
}

#[tokio::test]
async fn images_round_trip_and_retention_drops_them_but_keeps_the_items() {
    let r = review().await;
    let s = &r.store;
    let shared = b"shared radiograph".as_slice();
    s.enqueue(&[
        with_image(item("old", &[Flag::Review], 0), shared),
        with_image(item("new", &[Flag::Review], 10), shared),
        with_image(item("own", &[Flag::Drift], 1), b"its own"),
    ])
    .await
    .unwrap();
    let old = s.review_item_by_request("old").await.unwrap().unwrap();
    let image = old.image.clone().unwrap();
    assert_eq!(image.sha256, Sha256Digest::of(shared).to_hex());
    assert_eq!(image.bytes, shared.len() as u64);
    assert_eq!(image.content_type, "image/png");
    assert_eq!(s.review_image(&image.sha256).await.unwrap(), shared);
    let unknown = Sha256Digest::of(b"never kept").to_hex();
    assert!(matches!(
        s.review_image(&unknown).await,
        Err(Error::NotFound { .. })
    ));

    // `old` and `own` are older than the cutoff; `new` keeps the shared blob alive.
    let own_sha = Sha256Digest::of(b"its own").to_hex();
    let dropped = s
        .delete_review_images_before(t0() + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(dropped, 2);
    assert_eq!(s.review_image(&image.sha256).await.unwrap(), shared);
    assert!(matches!(
        s.review_image(&own_sha).await,
        Err(Error::NotFound { .. })
    ));
    let old = s.review_item_by_request("old").await.unwrap().unwrap();
    assert_eq!(old.image, None);

    s.delete_review_images_before(t0() + Duration::hours(1))
        .await
        .unwrap();
    assert!(matches!(
        s.review_image(&image.sha256).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(all_items(s).await.len(), 3);
}

#[tokio::test]
async fn concurrent_claims_never_share_an_item() {
    let r = review().await;
    let items: Vec<_> = (0..6)
        .map(|i| item(&format!("r{i}"), &[Flag::Review], i))
        .collect();
    r.store.enqueue(&items).await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = Arc::clone(&r.store);
            tokio::spawn(async move {
                store
                    .claim_next(&format!("inspector-{i}"), None, LEASE)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        let claimed = t.await.unwrap().unwrap();
        assert!(claimed.claim.is_some());
        ids.push(claimed.id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "two inspectors got the same item");
    assert!(
        r.store
            .claim_next("late", None, LEASE)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_expired_claim_can_be_taken_and_its_token_no_longer_counts() {
    let r = review().await;
    let s = &r.store;
    s.enqueue(&[item("a", &[Flag::Review], 0)]).await.unwrap();
    let ann = s
        .claim_next("ann", None, StdDuration::from_millis(20))
        .await
        .unwrap()
        .unwrap();
    let ann_token = ann.claim.unwrap().token;
    assert!(s.claim_next("bob", None, LEASE).await.unwrap().is_none());
    assert!(matches!(
        s.claim(ann.id, "bob", LEASE).await,
        Err(Error::Conflict(_))
    ));
    tokio::time::sleep(StdDuration::from_millis(60)).await;
    assert_eq!(s.review_item(ann.id).await.unwrap().unwrap().claim, None);

    let bob = s.claim_next("bob", None, LEASE).await.unwrap().unwrap();
    assert_eq!(bob.id, ann.id);
    let audit_before = s.audit_log().await.unwrap().len();
    let err = s
        .record_verdict(
            &queued("a", "ann", "defect", &ann_token),
            SecondOpinion::Never,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(s.verdicts_for("a").await.unwrap().is_empty());
    assert_eq!(s.audit_log().await.unwrap().len(), audit_before);
    assert!(matches!(
        s.release(ann.id, &ann_token).await,
        Err(Error::Conflict(_))
    ));

    // Bob's claim is his: renewing gives a new token, releasing frees the item.
    let renewed = s.claim(bob.id, "bob", LEASE).await.unwrap();
    let token = renewed.claim.unwrap().token;
    assert_ne!(token, bob.claim.unwrap().token);
    s.release(bob.id, &token).await.unwrap();
    assert!(s.claim_next("ann", None, LEASE).await.unwrap().is_some());
}

#[tokio::test]
async fn a_skip_hides_the_item_from_that_inspector_only() {
    let r = review().await;
    let s = &r.store;
    s.enqueue(&[item("a", &[Flag::Review], 0)]).await.unwrap();
    let ann = s.claim_next("ann", None, LEASE).await.unwrap().unwrap();
    let token = ann.claim.unwrap().token;
    assert!(matches!(
        s.skip(ann.id, &token, "bob").await,
        Err(Error::Conflict(_))
    ));
    s.skip(ann.id, &token, "ann").await.unwrap();
    assert!(s.claim_next("ann", None, LEASE).await.unwrap().is_none());
    let bob = s.claim_next("bob", None, LEASE).await.unwrap().unwrap();
    assert_eq!(bob.id, ann.id);
    assert_eq!(bob.skipped_by, ["ann"]);
}

#[tokio::test]
async fn refused_verdicts_write_nothing() {
    let r = review().await;
    let s = &r.store;
    s.enqueue(&[item("a", &[Flag::Review], 0)]).await.unwrap();
    let audit_before = s.audit_log().await.unwrap().len();
    let err = s
        .record_verdict(&feedback("nope", "ann", "ok"), SecondOpinion::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = s
        .record_verdict(&feedback("a", "ann", "porosity"), SecondOpinion::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let err = s
        .record_verdict(&feedback("a", " ", "ok"), SecondOpinion::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let err = s
        .record_verdict(&queued("a", "ann", "ok", "forged"), SecondOpinion::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(s.verdicts_for("a").await.unwrap().is_empty());
    assert!(s.verdicts_for("nope").await.unwrap().is_empty());
    assert_eq!(s.audit_log().await.unwrap().len(), audit_before);
    let a = s.review_item_by_request("a").await.unwrap().unwrap();
    assert_eq!(a.state, ItemState::Open);
}

#[tokio::test]
async fn a_changed_verdict_is_a_new_row_that_supersedes_the_old() {
    let r = review().await;
    let s = &r.store;
    s.enqueue(&[item("a", &[Flag::Review], 0)]).await.unwrap();
    let first = s
        .record_verdict(&feedback("a", "ann", "defect"), SecondOpinion::Never)
        .await
        .unwrap();
    assert_eq!(first.verdict.supersedes, None);
    let item = first.item.unwrap();
    assert_eq!(
        (item.state, item.resolved_label.as_deref()),
        (ItemState::Done, Some("defect"))
    );
    let second = s
        .record_verdict(&feedback("a", "ann", "ok"), SecondOpinion::Never)
        .await
        .unwrap();
    assert_eq!(second.verdict.supersedes, Some(first.verdict.id));
    assert_eq!(second.item.unwrap().resolved_label.as_deref(), Some("ok"));
    let rows = s.verdicts_for("a").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], first.verdict);
    assert_eq!(rows[1].predicted, "ok");
    assert_eq!(rows[1].time_spent_ms, Some(1_500));

    // Every verdict is in the audit log, which still verifies.
    let log = s.audit_log().await.unwrap();
    let verdicts: Vec<_> = log
        .iter()
        .filter(|e| e.record.action == "review.verdict")
        .collect();
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[1].record.actor, "ann");
    assert_eq!(verdicts[1].record.subject, "weldnet:1.0/a");
    assert_eq!(verdicts[1].record.reason, "ann says ok");
    let details: serde_json::Value = serde_json::from_str(&verdicts[1].record.details).unwrap();
    assert_eq!(details["supersedes"], first.verdict.id);
    assert_eq!(details["source"], "feedback");
    assert!(verify(&log, None).is_empty());
}

#[tokio::test]
async fn an_overturning_verdict_waits_for_a_second_inspector() {
    let r = review().await;
    let s = &r.store;
    let p = SecondOpinion::WhenOverturned;
    s.enqueue(&[item("a", &[Flag::Review], 0), item("b", &[Flag::Drift], 1)])
        .await
        .unwrap();

    let claimed = s.claim_next("ann", None, LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.request_id, "a");
    let token = claimed.claim.unwrap().token;
    let out = s
        .record_verdict(&queued("a", "ann", "defect", &token), p)
        .await
        .unwrap();
    let a = out.item.unwrap();
    assert_eq!(a.state, ItemState::AwaitingSecond);
    assert_eq!(a.claim, None);
    assert_eq!(out.verdict.source, VerdictSource::Queue);
    assert_eq!(out.verdict.item_id, Some(a.id));

    // Ann is offered the next item, never `a` again.
    let next = s.claim_next("ann", None, LEASE).await.unwrap().unwrap();
    assert_eq!(next.request_id, "b");
    assert!(s.claim_next("ann", None, LEASE).await.unwrap().is_none());

    let bob = s.claim_next("bob", None, LEASE).await.unwrap().unwrap();
    assert_eq!(bob.request_id, "a");
    let out = s
        .record_verdict(&queued("a", "bob", "defect", &bob.claim.unwrap().token), p)
        .await
        .unwrap();
    let a = out.item.unwrap();
    assert_eq!(
        (a.state, a.resolved_label.as_deref()),
        (ItemState::Done, Some("defect"))
    );
    assert_eq!(a.verdicts.len(), 2);
    assert!(matches!(
        s.claim(a.id, "cy", LEASE).await,
        Err(Error::Conflict(_))
    ));

    // On `b`, Ann overturns and Bob disagrees.
    s.record_verdict(&queued("b", "ann", "defect", &next.claim.unwrap().token), p)
        .await
        .unwrap();
    let out = s
        .record_verdict(&feedback("b", "bob", "ok"), p)
        .await
        .unwrap();
    assert_eq!(out.item.unwrap().state, ItemState::Disputed);
    let summary = s.queue_summary(Some("weldnet")).await.unwrap();
    assert_eq!(summary.by_state["done"], 1);
    assert_eq!(summary.by_state["disputed"], 1);
    assert_eq!(summary.open_by_flag.get("review"), None);
    assert_eq!(summary.open_by_flag["drift"], 1);
}

#[tokio::test]
async fn feedback_on_a_logged_prediction_is_ground_truth() {
    let r = review().await;
    let s = &r.store;
    MonitorStore::append_predictions(&**s, &[prediction("logged", t0())])
        .await
        .unwrap();
    s.enqueue(&[item("queued", &[Flag::Review], 0)])
        .await
        .unwrap();
    let before = Utc::now() - Duration::seconds(1);

    let out = s
        .record_verdict(&feedback("logged", "ann", "defect"), SecondOpinion::Never)
        .await
        .unwrap();
    assert_eq!(out.item, None);
    assert_eq!(out.verdict.item_id, None);
    assert_eq!(out.verdict.predicted, "ok");
    assert_eq!(out.verdict.version, "1.0");
    // Only the latest feedback counts.
    s.record_verdict(&feedback("logged", "bob", "ok"), SecondOpinion::Never)
        .await
        .unwrap();
    s.record_verdict(&feedback("queued", "ann", "defect"), SecondOpinion::Never)
        .await
        .unwrap();

    let settled = s.settled("weldnet", None, None).await.unwrap();
    let got: Vec<_> = settled
        .iter()
        .map(|x| {
            (
                x.request_id.as_str(),
                x.predicted.as_str(),
                x.actual.as_str(),
            )
        })
        .collect();
    assert_eq!(got, [("logged", "ok", "ok"), ("queued", "ok", "defect")]);
    assert!(settled[0].settled_at <= settled[1].settled_at);
    assert!(settled[0].settled_at >= before);
    assert!(
        s.settled("weldnet", Some(Utc::now() + Duration::seconds(1)), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.settled("weldnet", None, Some(before))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.settled("other", None, None).await.unwrap().is_empty());

    // A queue verdict on a prediction never queued has no claim to present.
    let err = s
        .record_verdict(&queued("logged", "cy", "ok", "token"), SecondOpinion::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(verify(&s.audit_log().await.unwrap(), None).is_empty());
}

#[tokio::test]
async fn open_review_shares_the_database() {
    let r = review().await;
    r.store
        .enqueue(&[item("a", &[Flag::Review], 0)])
        .await
        .unwrap();
    let other = vigil_store::open_review(&OpenOptions::new(r.dir.path()))
        .await
        .unwrap();
    assert!(other.review_item_by_request("a").await.unwrap().is_some());
}

#[tokio::test]
async fn feedback_that_settles_a_claimed_item_ends_the_claim() {
    let r = review().await;
    let s = &r.store;
    s.enqueue(&[item("a", &[Flag::Review], 0)]).await.unwrap();
    let ann = s.claim_next("ann", None, LEASE).await.unwrap().unwrap();
    let token = ann.claim.unwrap().token;
    let out = s
        .record_verdict(&feedback("a", "bob", "ok"), SecondOpinion::Never)
        .await
        .unwrap();
    let a = out.item.unwrap();
    assert_eq!(
        (a.state, a.claim, a.resolved_label.as_deref()),
        (ItemState::Done, None, Some("ok"))
    );
    let err = s
        .record_verdict(&queued("a", "ann", "defect", &token), SecondOpinion::Never)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(s.claim_next("ann", None, LEASE).await.unwrap().is_none());
    // More feedback on a settled item settles it again from all verdicts.
    let out = s
        .record_verdict(&feedback("a", "cy", "defect"), SecondOpinion::Never)
        .await
        .unwrap();
    assert_eq!(out.item.unwrap().resolved_label.as_deref(), Some("defect"));
    assert_eq!(s.verdicts_for("a").await.unwrap().len(), 2);
}

#[tokio::test]
async fn image_retention_keeps_a_blob_a_bundle_still_uses() {
    let r = review().await;
    let s = &r.store;
    let b = crate::common::bundle("weldnet", "1.0", b"onnx bytes that double as an image");
    let registry: Arc<dyn Registry> = s.clone();
    crate::common::push(&registry, &b).await.unwrap();
    let bytes = b.files["model.onnx"].clone();
    s.enqueue(&[with_image(item("a", &[Flag::Review], 0), &bytes)])
        .await
        .unwrap();
    assert_eq!(
        s.delete_review_images_before(t0() + Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    let sha = Sha256Digest::of(&bytes).to_hex();
    // No item keeps it any more, but the bundle's file is intact.
    assert!(matches!(
        s.review_image(&sha).await,
        Err(Error::NotFound { .. })
    ));
    let fetched = registry.fetch(b.name(), b.version()).await.unwrap();
    assert_eq!(fetched.files["model.onnx"], bytes);
}
