//! The request id and the one middleware every request passes: it gives every request a
//! server-generated id (a UUIDv7: unique, time-ordered, never the client's choice), keeps the
//! client's own `x-request-id` (or `x-correlation-id`) as the request's correlation id, runs
//! the request in a span that carries both, echoes them in the response headers
//! (`x-request-id`, `x-correlation-id`) and the id in JSON error bodies, and logs internal
//! errors once (the only place that does; `ApiError::into_response` never logs).
//!
//! The id keys the prediction log, review items and feedback joins: a client that chose it
//! could collide with another client's id, overwrite feedback joins or steer the QA sample,
//! which is drawn from the id. The correlation id is only recorded beside it.
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

/// The header that carries the request id to the client (and the client's own id to the
/// server, kept as the correlation id).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The header that carries the client's correlation id, both ways.
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// Longest client-supplied id kept; a longer one (or one with odd characters) is dropped,
/// so a kept id is always safe to log and to echo.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The id of the request being served (a request extension): made by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's own id for the request, when it sent a usable one (a request extension).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorrelationId(pub Option<String>);

impl RequestId {
    /// A fresh id: a UUIDv7, so ids sort by the time they were made.
    pub fn new() -> RequestId {
        RequestId(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl CorrelationId {
    /// The client's `x-correlation-id`, else its `x-request-id`, when usable: at most
    /// [`MAX_CLIENT_ID_LEN`] visible ASCII characters.
    fn from_headers(headers: &axum::http::HeaderMap) -> CorrelationId {
        let usable = |v: &HeaderValue| {
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= MAX_CLIENT_ID_LEN
                        && v.bytes().all(|b| b.is_ascii_graphic())
                })
                .map(str::to_owned)
        };
        CorrelationId(
            headers
                .get(&CORRELATION_ID_HEADER)
                .and_then(usable)
                .or_else(|| headers.get(&REQUEST_ID_HEADER).and_then(usable)),
        )
    }
}

/// The middleware: see the module docs.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = RequestId::new();
    let correlation = CorrelationId::from_headers(req.headers());
    // The route template, never the raw path (a bounded set, safe as a log field).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        correlation_id = correlation.0.as_deref().unwrap_or(""),
        method = %req.method(),
        route = %route,
    );
    req.extensions_mut().insert(id.clone());
    req.extensions_mut().insert(correlation.clone());
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
    if let Some(v) = correlation
        .0
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        response.headers_mut().insert(CORRELATION_ID_HEADER, v);
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

    // A client-sent x-request-id used to become the prediction's key.
    #[test]
    fn ids_are_the_servers_and_a_usable_client_id_is_kept_as_correlation() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 36, "a UUID");
        assert!(a.0 < b.0, "UUIDv7 ids sort by time");
        let mut h = axum::http::HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("film-42"));
        assert_eq!(
            CorrelationId::from_headers(&h).0.as_deref(),
            Some("film-42")
        );
        h.insert(CORRELATION_ID_HEADER, HeaderValue::from_static("line-3"));
        assert_eq!(CorrelationId::from_headers(&h).0.as_deref(), Some("line-3"));
        for bad in ["", "has space", &"x".repeat(MAX_CLIENT_ID_LEN + 1)] {
            let mut h = axum::http::HeaderMap::new();
            h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(CorrelationId::from_headers(&h).0, None, "{bad:?}");
        }
    }
}
