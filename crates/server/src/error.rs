//! [`ApiError`]: every failure a route can answer with, as a JSON body
//! `{ "error": msg, "kind": "overloaded", "request_id": ".." }` and the status code its
//! [`ErrorKind`] maps to, in one exhaustive match ([`status_for`]).
//!
//! `IntoResponse` never logs: an internal error's detail rides in a response extension
//! ([`InternalDetail`]) and the request-id middleware logs it once, with the request id, and
//! strips it; the client sees a generic message. The middleware also adds the request id to
//! the body ([`ErrorBody`] travels as an extension for that).

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vigil_core::ErrorKind;

/// What the client is told for an internal error; the detail goes to the log only.
pub(crate) const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// An error of the shared vocabulary, with the message for the client.
    Kind {
        /// What the caller can do about it.
        kind: ErrorKind,
        /// The message (for `Internal`, logged, never sent).
        message: String,
    },
    /// The body is over the configured size limit (413).
    TooLarge {
        /// Why, as the body reader said it.
        message: String,
    },
    /// The body's content type is not one the route reads (415).
    UnsupportedMediaType {
        /// What was sent and what is accepted.
        message: String,
    },
}

impl ApiError {
    /// A `NotFound` error.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::Kind {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// An `Invalid` error.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Kind {
            kind: ErrorKind::Invalid,
            message: message.into(),
        }
    }

    /// The kind of the error in the shared vocabulary (413 and 415 are invalid input).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Kind { kind, .. } => *kind,
            ApiError::TooLarge { .. } | ApiError::UnsupportedMediaType { .. } => ErrorKind::Invalid,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Kind { kind, .. } => status_for(*kind),
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Kind { message, .. }
            | ApiError::TooLarge { message }
            | ApiError::UnsupportedMediaType { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for ApiError {}

/// The one mapping from the shared error vocabulary to HTTP; no `_` arm, so a new kind
/// cannot be forgotten.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<vigil_runtime::Error> for ApiError {
    fn from(e: vigil_runtime::Error) -> Self {
        use vigil_runtime::Error as E;
        match e {
            // Over a size limit: 413, which tells the client not to retry as it is.
            E::TooLarge(_) | E::Engine(vigil_engine::Error::TooLarge(_)) => ApiError::TooLarge {
                message: e.to_string(),
            },
            e => ApiError::Kind {
                kind: e.kind(),
                message: e.to_string(),
            },
        }
    }
}

impl From<vigil_store::Error> for ApiError {
    fn from(e: vigil_store::Error) -> Self {
        ApiError::Kind {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(r: MultipartRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        // 413 when the form is over the body limit, else a malformed form (400).
        rejection(e.status(), e.body_text())
    }
}

/// Maps one of axum's extractor rejections by its status.
fn rejection(status: StatusCode, message: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge { message },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType { message },
        s if s.is_server_error() => ApiError::Kind {
            kind: ErrorKind::Internal,
            message,
        },
        _ => ApiError::invalid(message),
    }
}

/// The JSON error body, before the middleware adds the request id.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// What the caller can do about it (`ErrorKind::as_str`).
    pub kind: &'static str,
    /// The request's id (filled in by the middleware).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An internal error's real message, for the log only (the middleware removes it).
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.kind();
        let internal = matches!(kind, ErrorKind::Internal);
        let body = ErrorBody {
            error: if internal {
                INTERNAL_MESSAGE.to_owned()
            } else {
                self.to_string()
            },
            kind: kind.as_str(),
            request_id: None,
        };
        let mut response = (status, Json(body.clone())).into_response();
        match kind {
            // One second: long enough for the in-flight requests to drain, short enough
            // that a client's retry does not idle the server.
            ErrorKind::Overloaded => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // A store that refuses writes or a server restarting: the log's retries back off
            // up to five seconds, so asking sooner would mostly be refused again.
            ErrorKind::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        if matches!(kind, ErrorKind::Unauthenticated) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
        }
        response.extensions_mut().insert(body);
        if internal {
            response
                .extensions_mut()
                .insert(InternalDetail(self.to_string()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses() {
        let cases = [
            (ErrorKind::NotFound, 404),
            (ErrorKind::Invalid, 400),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Overloaded, 429),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Unauthenticated, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::Internal, 500),
        ];
        for (kind, code) in cases {
            assert_eq!(status_for(kind).as_u16(), code, "{kind}");
        }
    }

    #[test]
    fn overloaded_says_when_to_retry_and_internal_hides_the_detail() {
        let r =
            ApiError::from(vigil_runtime::Error::Overloaded { max_in_flight: 1 }).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");

        let r =
            ApiError::from(vigil_runtime::Error::Internal("secret detail".into())).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.extensions().get::<ErrorBody>().map(|b| b.error.clone());
        assert_eq!(body.as_deref(), Some(INTERNAL_MESSAGE));
        let detail = r.extensions().get::<InternalDetail>().map(|d| d.0.clone());
        assert!(detail.is_some_and(|d| d.contains("secret detail")));
    }
}
