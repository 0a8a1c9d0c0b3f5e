//! The request id and the one middleware every request passes: it takes the client's
//! `x-request-id` (or makes one), runs the request in a span that carries it, echoes it in
//! the response header and in JSON error bodies, and logs internal errors once (the only
//! place that does; `ApiError::into_response` never logs).
//!
//! The span's `request_id` field is what puts the id on every log line of the request: the
//! JSON formatter (`log.format = "json"`) writes the current span's fields under `span` and
//! `spans` (tested in `tests/it/logs.rs`).

use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::error::{ErrorBody, InternalDetail};

/// The header that carries the request id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; a longer one (or one with odd characters) is replaced,
/// so the id is always safe to log and to echo.
const MAX_CLIENT_ID_LEN: usize = 128;

/// The id of the request being served (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The client's id when it is usable, else a fresh UUID.
    fn from_header(value: Option<&HeaderValue>) -> RequestId {
        let client = value
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_CLIENT_ID_LEN
                    && v.bytes().all(|b| b.is_ascii_graphic())
            });
        match client {
            Some(id) => RequestId(id.to_owned()),
            None => RequestId(uuid::Uuid::new_v4().to_string()),
        }
    }
}

/// The middleware: see the module docs.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = RequestId::from_header(req.headers().get(&REQUEST_ID_HEADER));
    // The route template, never the raw path (a bounded set, safe as a log field).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %req.method(),
        route = %route,
    );
    req.extensions_mut().insert(id.clone());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let _entered = span.enter();

    if let Some(InternalDetail(detail)) = response.extensions_mut().remove::<InternalDetail>() {
        tracing::error!(error = %detail, "Request failed with an internal error.");
    }
    if let Some(mut body) = response.extensions_mut().remove::<ErrorBody>() {
        // Rebuild the error body with the id; status and headers stay as they were.
        body.request_id = Some(id.0.clone());
        let (mut parts, _) = response.into_parts();
        let fresh = Json(body).into_response();
        let (fresh_parts, fresh_body) = fresh.into_parts();
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        parts.headers.extend(fresh_parts.headers);
        response = Response::from_parts(parts, fresh_body);
    }
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    tracing::debug!(
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "Request answered."
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_others_are_replaced() {
        let kept = RequestId::from_header(Some(&HeaderValue::from_static("film-42")));
        assert_eq!(kept.0, "film-42");
        for bad in ["", "has space", &"x".repeat(MAX_CLIENT_ID_LEN + 1)] {
            let v = HeaderValue::from_str(bad).ok();
            let id = RequestId::from_header(v.as_ref());
            assert_ne!(id.0, bad);
            assert_eq!(id.0.len(), 36, "a UUID");
        }
    }
}
