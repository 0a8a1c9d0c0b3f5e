//! The review API: the queue, one item (its image, and its pixels for the review page's
//! window/level), claims, verdicts and skips, `POST /v1/feedback` for verdicts from an
//! existing inspection system, and `GET /v1/models/{name}/performance`.
//!
//! Every refusal changes nothing: an unknown item or request id is 404, an unknown label or
//! a missing inspector 400, a stale claim 409 (the store checks claims and writes each
//! verdict with its audit entry in one transaction).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::auth::Caller;
use vigil_core::review::ItemState;
use vigil_store::{
    NewVerdict, QueueSummary, ReviewItem, ReviewQuery, VerdictOutcome, VerdictSource,
};

use crate::auth::acting_as;
use crate::review::{Performance, ReviewState, performance};
use crate::routes::model_name;
use crate::routes::{ApiJson, ApiQuery};
use crate::{ApiError, AppState};

/// Longest inspector name accepted.
const MAX_INSPECTOR: usize = 100;
/// Longest comment accepted.
const MAX_COMMENT: usize = 4_000;

fn review(state: &AppState) -> Result<&ReviewState, ApiError> {
    state.review().ok_or_else(|| ApiError::Kind {
        kind: vigil_core::ErrorKind::Unavailable,
        message: "this server keeps no review queue (no store, or review disabled)".into(),
    })
}

/// The inspector a request acts as: the token's holder when auth is on (a body naming
/// someone else is refused), else the body's `inspector`.
fn inspector(
    caller: Option<Extension<Caller>>,
    claimed: Option<String>,
) -> Result<String, ApiError> {
    let raw = acting_as(caller.as_ref().map(|c| &c.0), claimed, "inspector")?.unwrap_or_default();
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_INSPECTOR {
        return Err(ApiError::invalid(format!(
            "inspector must be a name of 1 to {MAX_INSPECTOR} characters"
        )));
    }
    Ok(name.to_owned())
}

fn comment(raw: Option<String>) -> Result<String, ApiError> {
    let c = raw.unwrap_or_default();
    if c.chars().count() > MAX_COMMENT {
        return Err(ApiError::invalid(format!(
            "comment is longer than {MAX_COMMENT} characters"
        )));
    }
    Ok(c)
}

fn check_label(label: &str, labels: &[String]) -> Result<(), ApiError> {
    if labels.iter().any(|l| l == label) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "label {label:?} is not one of the model's labels ({})",
            labels.join(", ")
        )))
    }
}

async fn item_or_404(r: &ReviewState, id: i64) -> Result<ReviewItem, ApiError> {
    r.store
        .review_item(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("review item {id} does not exist")))
}

/// Query of `GET /v1/review/queue`.
#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    /// Only this model.
    pub model: Option<String>,
    /// Only items in this state (`open`, `awaiting_second`, `disputed`, `done`), or
    /// `needs_inspector` for all but `done` (the default).
    pub state: Option<String>,
    /// At most this many items (default 50, 1 to 1,000; outside: 400).
    pub limit: Option<usize>,
}

/// The answer of `GET /v1/review/queue`.
#[derive(Debug, Serialize)]
pub struct QueueResponse {
    /// Counts by state and flag, the oldest waiting item.
    pub summary: QueueSummary,
    /// Items in work order.
    pub items: Vec<ReviewItem>,
}

/// `GET /v1/review/queue`
pub async fn queue(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<QueueResponse>, ApiError> {
    let r = review(&state)?;
    let states = ItemState::filter(q.state.as_deref().unwrap_or("needs_inspector"))
        .map_err(ApiError::invalid)?;
    let query = ReviewQuery {
        model: q.model.clone(),
        states,
        limit: super::limit(q.limit, 50, 1_000)?,
    };
    Ok(Json(QueueResponse {
        summary: r.store.queue_summary(q.model.as_deref()).await?,
        items: r.store.review_items(&query).await?,
    }))
}

/// `GET /v1/review/items/{id}`
pub async fn item(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ReviewItem>, ApiError> {
    Ok(Json(item_or_404(review(&state)?, id).await?))
}

/// `GET /v1/review/items/{id}/image`: the image as the client sent it.
pub async fn image(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let r = review(&state)?;
    let item = item_or_404(r, id).await?;
    let kept = item
        .image
        .ok_or_else(|| ApiError::not_found(format!("review item {id} has no kept image")))?;
    let bytes = r.store.review_image(&kept.sha256).await?;
    let mut resp = Response::new(Body::from(bytes));
    if let Ok(v) = HeaderValue::from_str(&kept.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// `GET /v1/review/items/{id}/pixels`: the image decoded to grey values in its own range,
/// little-endian `u16`, row-major, with `x-width`, `x-height` and `x-bit-depth` headers:
/// what the review page's window/level works on (a browser cannot show 16-bit PNG, TIFF
/// or DICOM faithfully).
pub async fn pixels(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let r = review(&state)?;
    let item = item_or_404(r, id).await?;
    let kept = item
        .image
        .ok_or_else(|| ApiError::not_found(format!("review item {id} has no kept image")))?;
    let bytes = r.store.review_image(&kept.sha256).await?;
    let decoded = tokio::task::spawn_blocking(move || {
        vigil_engine::preprocess::decode_for_display(
            &bytes,
            &vigil_engine::preprocess::Limits::default(),
        )
    })
    .await
    .map_err(|e| ApiError::Kind {
        kind: vigil_core::ErrorKind::Internal,
        message: format!("decoding the kept image failed: {e}"),
    })?
    .map_err(|e| ApiError::Kind {
        kind: vigil_core::ErrorKind::Invalid,
        message: format!("the kept image cannot be decoded: {e}"),
    })?;
    let mut body = Vec::with_capacity(decoded.pixels.len() * 2);
    for p in &decoded.pixels {
        body.extend_from_slice(&p.to_le_bytes());
    }
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("x-width", HeaderValue::from(decoded.width));
    h.insert("x-height", HeaderValue::from(decoded.height));
    h.insert(
        "x-bit-depth",
        HeaderValue::from(u16::from(decoded.bit_depth)),
    );
    Ok(resp)
}

/// Body of `POST /v1/review/claim`.
#[derive(Debug, Deserialize)]
pub struct ClaimNextRequest {
    /// Who is claiming.
    /// With auth on: the token's holder, and may be left out.
    #[serde(default)]
    pub inspector: Option<String>,
    /// Only items of this model.
    pub model: Option<String>,
}

/// `POST /v1/review/claim`: the next item this inspector may work, held for the claim
/// lease; 204 when nothing is left for them.
pub async fn claim_next(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(body): ApiJson<ClaimNextRequest>,
) -> Result<Response, ApiError> {
    let r = review(&state)?;
    let who = inspector(caller, body.inspector)?;
    match r
        .store
        .claim_next(&who, body.model.as_deref(), r.config.claim_lease)
        .await?
    {
        Some(item) => Ok(Json(item).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Body of `POST /v1/review/items/{id}/claim`.
#[derive(Debug, Deserialize)]
pub struct ClaimRequest {
    /// Who is claiming.
    /// With auth on: the token's holder, and may be left out.
    #[serde(default)]
    pub inspector: Option<String>,
}

/// `POST /v1/review/items/{id}/claim`: one item; 409 while another inspector holds it or
/// once it is settled.
pub async fn claim(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> Result<Json<ReviewItem>, ApiError> {
    let r = review(&state)?;
    let who = inspector(caller, body.inspector)?;
    Ok(Json(r.store.claim(id, &who, r.config.claim_lease).await?))
}

/// Body of `POST /v1/review/items/{id}/release`.
#[derive(Debug, Deserialize)]
pub struct ReleaseRequest {
    /// The claim's token.
    pub token: String,
}

/// `POST /v1/review/items/{id}/release`: gives the claim back (204).
pub async fn release(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<ReleaseRequest>,
) -> Result<StatusCode, ApiError> {
    let r = review(&state)?;
    item_or_404(r, id).await?;
    r.store.release(id, &body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/review/items/{id}/skip`.
#[derive(Debug, Deserialize)]
pub struct SkipRequest {
    /// The claim's token.
    pub token: String,
    /// Who skips.
    /// With auth on: the token's holder, and may be left out.
    #[serde(default)]
    pub inspector: Option<String>,
}

/// `POST /v1/review/items/{id}/skip`: releases the claim; the item is not offered to this
/// inspector again (204).
pub async fn skip(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<SkipRequest>,
) -> Result<StatusCode, ApiError> {
    let r = review(&state)?;
    let who = inspector(caller, body.inspector)?;
    item_or_404(r, id).await?;
    r.store.skip(id, &body.token, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/review/items/{id}/verdict`.
#[derive(Debug, Deserialize)]
pub struct VerdictRequest {
    /// The claim's token.
    pub token: String,
    /// Who decides.
    /// With auth on: the token's holder, and may be left out.
    #[serde(default)]
    pub inspector: Option<String>,
    /// The inspector's label: one of the item's labels.
    pub label: String,
    /// Free text.
    pub comment: Option<String>,
    /// Time spent on the item, milliseconds.
    pub time_spent_ms: Option<u64>,
}

/// `POST /v1/review/items/{id}/verdict`: the verdict, under the inspector's claim.
pub async fn verdict(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<VerdictRequest>,
) -> Result<Json<VerdictOutcome>, ApiError> {
    let r = review(&state)?;
    let who = inspector(caller, body.inspector)?;
    let item = item_or_404(r, id).await?;
    check_label(&body.label, &item.labels)?;
    let v = NewVerdict {
        request_id: item.request_id,
        inspector: who,
        label: body.label,
        comment: comment(body.comment)?,
        time_spent_ms: body.time_spent_ms,
        source: VerdictSource::Queue,
        claim_token: Some(body.token),
    };
    let outcome = r.store.record_verdict(&v, r.config.second_opinion).await?;
    r.after_verdict(&state, &outcome).await;
    Ok(Json(outcome))
}

/// Body of `POST /v1/feedback`.
#[derive(Debug, Deserialize)]
pub struct FeedbackRequest {
    /// The prediction's request id (the `x-request-id` of its answer).
    pub request_id: String,
    /// The ground truth: one of the model's labels.
    pub label: String,
    /// Who (a person, or the inspection system's name). With auth on: the token's holder,
    /// and may be left out.
    #[serde(default)]
    pub inspector: Option<String>,
    /// Free text.
    pub comment: Option<String>,
    /// Time spent, milliseconds.
    pub time_spent_ms: Option<u64>,
}

/// `POST /v1/feedback`: a verdict on any logged prediction, queued or not (201).
pub async fn feedback(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(body): ApiJson<FeedbackRequest>,
) -> Result<(StatusCode, Json<VerdictOutcome>), ApiError> {
    let r = review(&state)?;
    let who = inspector(caller, body.inspector)?;
    let labels = match r.store.review_item_by_request(&body.request_id).await? {
        Some(item) => item.labels,
        None => logged_labels(&state, &body.request_id).await?,
    };
    check_label(&body.label, &labels)?;
    let v = NewVerdict {
        request_id: body.request_id,
        inspector: who,
        label: body.label,
        comment: comment(body.comment)?,
        time_spent_ms: body.time_spent_ms,
        source: VerdictSource::Feedback,
        claim_token: None,
    };
    let outcome = r.store.record_verdict(&v, r.config.second_opinion).await?;
    r.after_verdict(&state, &outcome).await;
    Ok((StatusCode::CREATED, Json(outcome)))
}

/// The labels of a logged prediction that is not in the queue: those of its model as
/// deployed, when they match the prediction's probabilities.
async fn logged_labels(state: &AppState, request_id: &str) -> Result<Vec<String>, ApiError> {
    let log = state.monitor_store().ok_or_else(|| ApiError::Kind {
        kind: vigil_core::ErrorKind::Unavailable,
        message: "this server keeps no prediction log (no store)".into(),
    })?;
    let record = log.prediction(request_id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no prediction with request id {request_id:?} is in the log"
        ))
    })?;
    let labels = model_name(&record.model)
        .map(|m| crate::review::deployed_labels(state, &m))
        .unwrap_or_default();
    if !labels.is_empty() && labels.len() == record.probabilities.len() {
        return Ok(labels);
    }
    Err(ApiError::Kind {
        kind: vigil_core::ErrorKind::Conflict,
        message: format!(
            "the labels of {}:{} cannot be checked: deploy the model to give feedback on it",
            record.model, record.version
        ),
    })
}

/// Query of `GET /v1/models/{name}/performance`.
#[derive(Debug, Deserialize)]
pub struct PerformanceQuery {
    /// Look back this far (`24h`, `7d`); default `review.performance_window`.
    pub window: Option<String>,
}

/// `GET /v1/models/{name}/performance`: realised (from verdicts) and estimated (from
/// probabilities) performance per version.
pub async fn model_performance(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PerformanceQuery>,
) -> Result<Json<Performance>, ApiError> {
    let name = model_name(&name)?;
    let since: Option<DateTime<Utc>> = match q.window.as_deref() {
        None => None,
        Some(raw) => {
            let d = super::window::span_only(raw)?;
            // A span reaching back before 1970 (the grammar allows thousands of years) is
            // all of history: nothing Vigil logged is older.
            let since = chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .map_or(DateTime::UNIX_EPOCH, |t| t.max(DateTime::UNIX_EPOCH));
            Some(since)
        }
    };
    Ok(Json(performance(&state, &name, since).await?))
}
