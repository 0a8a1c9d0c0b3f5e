//! Several images in one native predict: a `multipart/form-data` body where each part is one
//! encoded image. This module reads the parts (HTTP only: part count, each part's content
//! type, the body limit through axum's extractor), classifies them through the same path as
//! a single image ([`super::predict`]), and shapes one result per part, in order.
//!
//! A part that fails (not an image type, cannot be decoded, refused by admission) gets its
//! own error entry; the others still succeed. Whole-request failures (malformed form, too
//! many parts, body over the limit, model not deployed) are an [`ApiError`] as usual. It must
//! not decode images itself: the runtime sniffs the format from the bytes, as for a raw body.

use axum::extract::Multipart;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use vigil_core::ErrorKind;
use vigil_core::types::ModelName;

use crate::error::ErrorBody;
use crate::routes::predict::{self, IMAGE_TYPES, PredictResponse};
use crate::{ApiError, AppState, CorrelationId, RequestId};

/// Most parts one request may carry; more is refused with 413 before anything is classified.
/// 64 tiles is a generous film strip; a whole film goes as one image (the bundle tiles it).
pub const MAX_PARTS: usize = 64;

/// Parts classified at once. Each part is admitted on its own, so running all 64 at once
/// could take every admission permit of a small `max_in_flight` and refuse the request's own
/// later parts; 8 keeps batches forming (parts of one request share a batch) without that.
const CONCURRENT_PARTS: usize = 8;

/// The answer to a multipart predict.
#[derive(Debug, Serialize)]
pub struct MultiPredictResponse {
    /// The request's id (also the `x-request-id` header).
    pub request_id: String,
    /// One entry per part, in the order the parts were sent.
    pub results: Vec<PartResult>,
}

/// The outcome of one part: the single-image answer, or an error body for that part alone.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PartResult {
    /// Classified: the same shape as the answer to a single-image predict.
    Predicted(Box<PredictResponse>),
    /// This part failed: `{ "error", "kind" }`, as a whole-request error body.
    Failed(ErrorBody),
}

/// One part as read: its bytes, or why it cannot be classified.
#[derive(Debug)]
pub struct Part(Result<Bytes, ApiError>);

/// Whether the request body is declared as `multipart/form-data`.
pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|raw| predict::essence(raw) == "multipart/form-data")
}

/// Reads every part: at least one, at most [`MAX_PARTS`]. A part without a content type is
/// taken as `application/octet-stream` (sniffed, as a raw body); a part declared as anything
/// but an image is kept as a per-part error.
pub async fn read(mut form: Multipart) -> Result<Vec<Part>, ApiError> {
    let mut parts = Vec::new();
    while let Some(field) = form.next_field().await? {
        if parts.len() == MAX_PARTS {
            return Err(ApiError::TooLarge {
                message: format!(
                    "more than {MAX_PARTS} parts; send at most {MAX_PARTS} images per request"
                ),
            });
        }
        let declared = field.content_type().map(str::to_owned);
        let label = field.file_name().or_else(|| field.name()).map_or_else(
            || format!("part {}", parts.len()),
            |n| format!("part {n:?}"),
        );
        // Read the bytes even of a refused part, so the body limit covers the whole form.
        let bytes = field.bytes().await?;
        let part = match declared {
            Some(t) if !predict::is_image_type(&t) => Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "{label} has content type {t:?}; each part must be one of {}",
                    IMAGE_TYPES.join(", ")
                ),
            }),
            _ => Ok(bytes),
        };
        parts.push(Part(part));
    }
    if parts.is_empty() {
        return Err(ApiError::invalid(
            "the multipart form has no parts; send one encoded image per part",
        ));
    }
    Ok(parts)
}

/// Classifies every part, a few at a time (see `CONCURRENT_PARTS`), and answers in the
/// parts' order.
pub async fn classify(
    state: &AppState,
    name: &ModelName,
    version: Option<&str>,
    (id, corr): (&RequestId, &CorrelationId),
    parts: Vec<Part>,
) -> Vec<PartResult> {
    let many = parts.len() > 1;
    futures::stream::iter(parts.into_iter().enumerate())
        .map(|(i, Part(part))| async move {
            let image = part?;
            // Each part is its own prediction in the log: `<request id>.<part index>`.
            let part_id = if many {
                RequestId(format!("{}.{i}", id.0))
            } else {
                id.clone()
            };
            predict::classify_one(state, name, version, (&part_id, corr), image)
                .await
                .map(|(answer, _)| answer)
        })
        .buffered(CONCURRENT_PARTS)
        .map(|result| match result {
            Ok(answer) => PartResult::Predicted(Box::new(answer)),
            Err(e) => PartResult::Failed(part_error(&e)),
        })
        .collect()
        .await
}

/// One part's error body. An internal error is logged here (the middleware only sees the
/// whole response, which succeeded) and the client gets the generic message.
fn part_error(e: &ApiError) -> ErrorBody {
    let kind = e.kind();
    let error = if matches!(kind, ErrorKind::Internal) {
        tracing::error!(error = %e, "A part of a multipart request failed with an internal error.");
        crate::error::INTERNAL_MESSAGE.to_owned()
    } else {
        e.to_string()
    };
    ErrorBody {
        error,
        kind: kind.as_str(),
        request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_form_data_is_multipart() {
        let mut h = HeaderMap::new();
        assert!(!is_multipart(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Multipart/Form-Data; boundary=x"),
        );
        assert!(is_multipart(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/mixed; boundary=x"),
        );
        assert!(!is_multipart(&h));
    }

    #[test]
    fn an_internal_part_error_hides_its_detail() {
        let e = ApiError::Kind {
            kind: ErrorKind::Internal,
            message: "secret".into(),
        };
        let body = part_error(&e);
        assert_eq!(body.kind, "internal");
        assert!(!body.error.contains("secret"));
        let body = part_error(&ApiError::invalid("cannot decode"));
        assert_eq!(body.error, "cannot decode");
    }
}
