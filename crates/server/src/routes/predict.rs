//! The native API: `POST /v1/models/{name}/predict` (and `.../versions/{version}/predict`)
//! with one encoded image as the body, or several as `multipart/form-data` (read by
//! [`super::multipart`]). The handlers parse HTTP; `predict` does the work (content type,
//! deployment lookup, `Infer::classify`, shaping the answer).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, FromRequest as _, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use vigil_core::review::Flag;
use vigil_core::types::ModelName;
use vigil_runtime::{Classified, Deployment, Timings};

use crate::routes::multipart;
use crate::routes::{check_version, deployment, model_name};
use crate::{ApiError, AppState, CorrelationId, RequestId};

/// Content types of encoded images the preprocessing decodes (it sniffs the format from the
/// bytes; the header only has to say "an image").
pub(crate) const IMAGE_TYPES: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "image/tiff",
    "image/bmp",
    "application/dicom",
    "application/octet-stream",
];

/// The native answer for one image.
#[derive(Debug, Serialize)]
pub struct PredictResponse {
    /// The request's id (also the `x-request-id` header).
    pub request_id: String,
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// That version's bundle identity (SHA-256 of its manifest).
    pub bundle: String,
    /// The decided label.
    pub label: String,
    /// The probability of each label, for the row the verdict came from.
    pub probabilities: BTreeMap<String, f32>,
    /// How sure the decision is.
    pub confidence: f32,
    /// Flags on the decision: `review` when the bundle's rule sends it to a person,
    /// `out_of_distribution` when the image does not resemble the training images.
    pub flags: Vec<&'static str>,
    /// Why this prediction was put in the review queue for an inspector (`review`,
    /// `out_of_distribution`, `drift`, `qa_sample`); empty when it was not (or the server
    /// keeps no queue).
    pub review: Vec<Flag>,
    /// How far the image is from the training images, when the bundle has a reference
    /// profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodResponse>,
    /// Stage times, in milliseconds (also `x-vigil-*-ms` headers).
    pub timings: TimingsResponse,
    /// Images in the engine batch this request ran in.
    pub batch_size: usize,
    /// For a tiled film: the tiles and each one's score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiles: Option<TilesResponse>,
}

/// The out-of-distribution score of an image.
#[derive(Debug, Serialize)]
pub struct OodResponse {
    /// Mahalanobis distance of the image's embedding to the training images'.
    pub distance: f64,
    /// The distance above which an image is out of distribution (a high quantile of the
    /// reference images' own distances).
    pub threshold: f64,
    /// `distance > threshold`.
    pub out_of_distribution: bool,
    /// In words.
    pub message: &'static str,
}

/// Stage times in milliseconds.
#[derive(Debug, Serialize)]
pub struct TimingsResponse {
    /// Decode and preprocessing.
    pub preprocess: f64,
    /// Waiting in the model's queue.
    pub queue: f64,
    /// Engine time of the batch.
    pub inference: f64,
    /// Admission to answer.
    pub total: f64,
}

/// The tiles of a whole film.
#[derive(Debug, Serialize)]
pub struct TilesResponse {
    /// How many tiles were scored.
    pub count: usize,
    /// Tiles per row, when the preprocessing reported a grid.
    pub columns: Option<u32>,
    /// Rows of tiles.
    pub rows: Option<u32>,
    /// The tile the verdict came from (row-major index).
    pub verdict_tile: usize,
    /// Each tile's score (the probability the decision rule tested), row-major.
    pub scores: Vec<f32>,
}

/// `POST /v1/models/{name}/predict`
pub async fn latest(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(id): Extension<RequestId>,
    Extension(corr): Extension<CorrelationId>,
    req: Request,
) -> Result<Response, ApiError> {
    predict(&state, &name, None, (id, corr), req).await
}

/// `POST /v1/models/{name}/versions/{version}/predict`
pub async fn versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Extension(id): Extension<RequestId>,
    Extension(corr): Extension<CorrelationId>,
    req: Request,
) -> Result<Response, ApiError> {
    predict(&state, &name, Some(&version), (id, corr), req).await
}

/// Reads the body as one encoded image or as a multipart form of several, and answers.
async fn predict(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    (id, corr): (RequestId, CorrelationId),
    req: Request,
) -> Result<Response, ApiError> {
    if multipart::is_multipart(req.headers()) {
        let name = model_name(name)?;
        // Not found before the parts are read: no point reading images for nobody.
        deployment(state.infer(), &name, version)?;
        let form = Multipart::from_request(req, state).await?;
        let parts = multipart::read(form).await?;
        let results = multipart::classify(state, &name, version, (&id, &corr), parts).await;
        return Ok(Json(multipart::MultiPredictResponse {
            request_id: id.0,
            results,
        })
        .into_response());
    }
    let headers = req.headers().clone();
    let body = Bytes::from_request(req, state).await?;
    check_content_type(&headers)?;
    let name = model_name(name)?;
    let (body, timings) = classify_one(state, &name, version, (&id, &corr), body).await?;
    let mut response = Json(body).into_response();
    timing_headers(response.headers_mut(), &timings);
    Ok(response)
}

/// Classifies one encoded image and shapes its answer; the timings come back for headers.
pub(crate) async fn classify_one(
    state: &AppState,
    name: &ModelName,
    version: Option<&str>,
    (id, corr): (&RequestId, &CorrelationId),
    image: Bytes,
) -> Result<(PredictResponse, Timings), ApiError> {
    let infer = state.infer();
    let before = deployment(infer, name, version)?;
    let c = infer.classify(name, image.clone(), None).await?;
    check_version(name, &c.version, version)?;
    let queued = crate::review::record_prediction(state, &id.0, corr, &c, Some(&image)).await?;
    // The labels of the version that answered: normally the one looked up before, unless
    // a swap happened while the request ran.
    let d = if c.version == *before.version() {
        before
    } else {
        deployment(infer, name, Some(c.version.as_str()))?
    };
    Ok((answer(&d, id, &c, queued), c.timings))
}

/// The native answer for one classified image, labelled by the deployment that answered.
fn answer(d: &Deployment, id: &RequestId, c: &Classified, review: Vec<Flag>) -> PredictResponse {
    let labels = &d.manifest().model.labels;
    let probabilities = c
        .outputs
        .get(&d.manifest().roles.probabilities)
        .map(|t| t.item(c.verdict_row))
        .unwrap_or_default();
    PredictResponse {
        request_id: id.0.clone(),
        model: c.model.to_string(),
        version: c.version.to_string(),
        bundle: c.bundle.to_string(),
        label: c.verdict.label.to_string(),
        probabilities: labels
            .iter()
            .zip(probabilities)
            .map(|(l, p)| (l.to_string(), *p))
            .collect(),
        confidence: c.verdict.confidence,
        flags: c.flags(),
        review,
        ood: c.ood.map(|o| OodResponse {
            distance: o.distance,
            threshold: o.threshold,
            out_of_distribution: o.out_of_distribution,
            message: if o.out_of_distribution {
                "does not resemble the training images"
            } else {
                "resembles the training images"
            },
        }),
        timings: TimingsResponse {
            preprocess: ms(c.timings.preprocess),
            queue: ms(c.timings.queue),
            inference: ms(c.timings.inference),
            total: ms(c.timings.total),
        },
        batch_size: c.batch_size,
        tiles: tiles(c),
    }
}

/// 415 unless the body is declared as an image this server decodes.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if is_image_type(raw) {
        return Ok(());
    }
    let got = if raw.is_empty() {
        "no content type".to_owned()
    } else {
        format!("content type {raw:?}")
    };
    Err(ApiError::UnsupportedMediaType {
        message: format!(
            "{got}: send the encoded image as the body with one of {}, \
             or several as multipart/form-data",
            IMAGE_TYPES.join(", ")
        ),
    })
}

/// Whether `raw` (a content type, parameters allowed) names an image this server decodes.
pub(crate) fn is_image_type(raw: &str) -> bool {
    IMAGE_TYPES.contains(&essence(raw).as_str())
}

/// A content type without its parameters, lower-cased.
pub(crate) fn essence(raw: &str) -> String {
    raw.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The tile map of a film (more than one row); `None` for a single image.
fn tiles(c: &Classified) -> Option<TilesResponse> {
    (c.decisions.len() > 1).then(|| TilesResponse {
        count: c.decisions.len(),
        columns: c.grid.as_ref().map(|g| g.columns),
        rows: c.grid.as_ref().map(|g| g.rows),
        verdict_tile: c.verdict_row,
        scores: c.decisions.iter().map(|d| d.score).collect(),
    })
}

/// Each stage time as an `x-vigil-<stage>-ms` header.
pub(crate) fn timing_headers(headers: &mut HeaderMap, t: &Timings) {
    let stages = [
        ("x-vigil-preprocess-ms", t.preprocess),
        ("x-vigil-queue-ms", t.queue),
        ("x-vigil-inference-ms", t.inference),
        ("x-vigil-total-ms", t.total),
    ];
    for (name, d) in stages {
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", ms(d))) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_content_types_are_accepted_with_parameters_and_others_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Image/PNG; q=1"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            check_content_type(&h),
            Err(ApiError::UnsupportedMediaType { .. })
        ));
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
