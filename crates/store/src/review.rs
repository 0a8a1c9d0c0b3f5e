//! The review queue's interface: flagged predictions waiting for an inspector, claims so two
//! inspectors never work the same item, verdicts (appended, never overwritten) and what they
//! settle. The decisions (priority, when an item is settled) are `vigil_core::review`'s; this
//! is where they are stored. SQLite implements it now (`sqlite/review.rs`); PostgreSQL will
//! implement the same trait.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::review::{Flag, ItemState, SecondOpinion};

use crate::Result;

/// A flagged prediction to put in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewReviewItem {
    /// The prediction's request id; unique in the queue.
    pub request_id: String,
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// When the prediction was made.
    pub at: DateTime<Utc>,
    /// The model's label.
    pub label: String,
    /// Its confidence.
    pub confidence: f32,
    /// Probabilities in the order of `labels`.
    pub probabilities: Vec<f32>,
    /// The bundle's labels: the labels a verdict may give.
    pub labels: Vec<String>,
    /// Why it was flagged (at least one).
    pub flags: Vec<Flag>,
    /// The image as the client sent it, when kept.
    pub image: Option<ReviewImage>,
    /// What else the review page shows (out-of-distribution score, tile scores of a
    /// film); opaque to the store.
    pub details: serde_json::Value,
}

/// An image kept for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewImage {
    /// Its media type (`image/png`, `image/tiff`, `application/dicom`, ...).
    pub content_type: String,
    /// The encoded bytes.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// A kept image's identity, as an item refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// SHA-256 of the bytes, hex (the artifact store's key).
    pub sha256: String,
    /// Its media type.
    pub content_type: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// An inspector's hold on an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Who holds it.
    pub inspector: String,
    /// The token a verdict, skip or release must present.
    pub token: String,
    /// When the hold lapses unless a verdict comes first.
    pub expires_at: DateTime<Utc>,
}

/// How a verdict reached Vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    /// From the review queue, under a claim.
    Queue,
    /// From `POST /v1/feedback` (an existing inspection system), no claim.
    Feedback,
}

impl VerdictSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictSource::Queue => "queue",
            VerdictSource::Feedback => "feedback",
        }
    }
}

/// A verdict to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVerdict {
    /// The prediction it is about.
    pub request_id: String,
    /// Who gave it.
    pub inspector: String,
    /// The label (the caller has checked it is one of the bundle's).
    pub label: String,
    /// Free text.
    pub comment: String,
    /// Time the inspector spent on it, milliseconds.
    pub time_spent_ms: Option<u64>,
    /// Queue or feedback.
    pub source: VerdictSource,
    /// For [`VerdictSource::Queue`]: the claim's token, which must be the item's current,
    /// unexpired claim held by `inspector`.
    pub claim_token: Option<String>,
}

/// A stored verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRow {
    /// Its id (increasing).
    pub id: i64,
    /// The prediction.
    pub request_id: String,
    /// The queue item, when the prediction was in the queue.
    pub item_id: Option<i64>,
    /// The model.
    pub model: String,
    /// The version that made the prediction.
    pub version: String,
    /// The model's label.
    pub predicted: String,
    /// The inspector's label.
    pub label: String,
    /// Who.
    pub inspector: String,
    /// Free text.
    pub comment: String,
    /// When (microseconds).
    pub at: DateTime<Utc>,
    /// Time spent, milliseconds.
    pub time_spent_ms: Option<u64>,
    /// Queue or feedback.
    pub source: VerdictSource,
    /// The same inspector's earlier verdict on the same prediction that this one replaces.
    pub supersedes: Option<i64>,
}

/// One queue item as stored, with its verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// Its id (increasing).
    pub id: i64,
    /// The prediction's request id.
    pub request_id: String,
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// When the prediction was made.
    pub at: DateTime<Utc>,
    /// The model's label.
    pub label: String,
    /// Its confidence.
    pub confidence: f32,
    /// Probabilities in the order of `labels`.
    pub probabilities: Vec<f32>,
    /// The labels a verdict may give.
    pub labels: Vec<String>,
    /// Why it was flagged, most urgent first.
    pub flags: Vec<Flag>,
    /// `vigil_core::review::priority` of the flags: lower is worked first.
    pub priority: u8,
    /// The kept image, if any (read it with [`ReviewStore::review_image`]).
    pub image: Option<StoredImage>,
    /// What the review page shows besides; as enqueued.
    pub details: serde_json::Value,
    /// Where it stands.
    pub state: ItemState,
    /// The settled label once [`ItemState::Done`].
    pub resolved_label: Option<String>,
    /// The current claim, if one is held and unexpired.
    pub claim: Option<Claim>,
    /// Every verdict on it, oldest first, superseded ones included.
    pub verdicts: Vec<VerdictRow>,
    /// Inspectors who skipped it (they are not offered it again).
    pub skipped_by: Vec<String>,
}

/// Which items to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReviewQuery {
    /// Only this model.
    pub model: Option<String>,
    /// Only these states (empty: all).
    pub states: Vec<ItemState>,
    /// At most this many, in work order (priority, then oldest first).
    pub limit: usize,
}

/// The queue at a glance (the queue page).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueSummary {
    /// Items per state.
    pub by_state: std::collections::BTreeMap<String, u64>,
    /// Items still needing an inspector, per flag (an item with two flags counts twice).
    pub open_by_flag: std::collections::BTreeMap<String, u64>,
    /// Items held by an unexpired claim.
    pub claimed: u64,
    /// When the oldest item still needing an inspector was predicted.
    pub oldest_open_at: Option<DateTime<Utc>>,
}

/// A prediction with its ground truth: the model's label against the settled verdict (a
/// queue item's resolution, or the latest feedback on a prediction never queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// The prediction.
    pub request_id: String,
    /// The model.
    pub model: String,
    /// The version that predicted.
    pub version: String,
    /// The model's label.
    pub predicted: String,
    /// The ground truth.
    pub actual: String,
    /// When the verdict that settled it was given.
    pub settled_at: DateTime<Utc>,
}

/// What [`ReviewStore::record_verdict`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictOutcome {
    /// The verdict as stored.
    pub verdict: VerdictRow,
    /// The item after it, when the prediction is in the queue.
    pub item: Option<ReviewItem>,
}

/// The review queue and the verdicts.
#[async_trait::async_trait]
pub trait ReviewStore: Send + Sync + std::fmt::Debug {
    /// Adds flagged predictions to the queue in one transaction, keeping their images in
    /// the artifact store. An item whose request id is already queued is skipped; returns
    /// how many were added. An item without flags is refused with `Error::Invalid` before
    /// anything is written.
    async fn enqueue(&self, items: &[NewReviewItem]) -> Result<u64>;

    /// A kept image's bytes by its SHA-256 (hex); `Error::NotFound` when it is not kept
    /// (never was, or retention removed it).
    async fn review_image(&self, sha256: &str) -> Result<Vec<u8>>;

    /// Items matching `q` in work order: priority, then oldest prediction first.
    async fn review_items(&self, q: &ReviewQuery) -> Result<Vec<ReviewItem>>;

    /// One item by id.
    async fn review_item(&self, id: i64) -> Result<Option<ReviewItem>>;

    /// One item by its prediction's request id.
    async fn review_item_by_request(&self, request_id: &str) -> Result<Option<ReviewItem>>;

    /// Claims the next item `inspector` may work (of `model`, when given) for `lease`: the
    /// first in work order that needs an inspector, is not held by an unexpired claim, and
    /// that `inspector` has neither skipped nor already given a verdict on. Atomic: two
    /// inspectors claiming at once never get the same item. `None` when nothing is left.
    async fn claim_next(
        &self,
        inspector: &str,
        model: Option<&str>,
        lease: Duration,
    ) -> Result<Option<ReviewItem>>;

    /// Claims one item. `Error::NotFound` for an unknown id; `Error::Conflict` when it is
    /// settled or held by another inspector's unexpired claim. The same inspector claiming
    /// again renews the claim (new token, new expiry).
    async fn claim(&self, id: i64, inspector: &str, lease: Duration) -> Result<ReviewItem>;

    /// Gives a claim back. `Error::Conflict` when `token` is not the item's current claim.
    async fn release(&self, id: i64, token: &str) -> Result<()>;

    /// Skips a claimed item: the claim is released and `inspector` is not offered it again.
    /// `Error::Conflict` when `token` is not the item's current claim held by `inspector`.
    async fn skip(&self, id: i64, token: &str, inspector: &str) -> Result<()>;

    /// Records a verdict, settling its item per `policy`
    /// (`vigil_core::review::resolve`), and appends it to the audit log, all in one
    /// transaction. A verdict by an inspector who already gave one on the prediction is a
    /// new row that supersedes the earlier one (nothing is overwritten).
    ///
    /// Feedback (no claim) is accepted on any logged prediction, queued or not, settled or
    /// not: on a settled item it is one more verdict and the item is settled again from all
    /// of them. A queue verdict releases the claim.
    ///
    /// Refused, with nothing written: `Error::NotFound` when the request id is neither
    /// queued nor in the prediction log; `Error::Conflict` for a queue verdict whose token
    /// is not the item's current unexpired claim held by the inspector (a settled item
    /// cannot be claimed); `Error::Invalid` for a label not among the item's labels or an
    /// empty inspector.
    async fn record_verdict(&self, v: &NewVerdict, policy: SecondOpinion)
    -> Result<VerdictOutcome>;

    /// Every verdict on a prediction, oldest first.
    async fn verdicts_for(&self, request_id: &str) -> Result<Vec<VerdictRow>>;

    /// The queue at a glance, for one model or all.
    async fn queue_summary(&self, model: Option<&str>) -> Result<QueueSummary>;

    /// Predictions of `model` with a ground truth settled in `[since, until)`, oldest first.
    async fn settled(
        &self,
        model: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Settled>>;

    /// Drops the kept images of items predicted before `cutoff` (the items and verdicts
    /// stay); returns how many images were dropped.
    async fn delete_review_images_before(&self, cutoff: DateTime<Utc>) -> Result<u64>;
}
