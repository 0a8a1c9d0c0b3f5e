//! `GET /openapi.json`: the OpenAPI 3.1 document of every route the router serves, kept as a
//! static file beside this module (`openapi.json`) and served as it is. A test checks that
//! its `paths` are exactly [`crate::routes::table`] and that its schemas match real answers;
//! this module must not build or alter the document at run time.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document, compiled in.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json`
pub async fn document() -> Response {
    let mut r = DOCUMENT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
