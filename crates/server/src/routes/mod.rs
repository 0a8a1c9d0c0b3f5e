//! The route handlers, one module per API: `predict` (native; `multipart` for several
//! images), `ops` (health, readiness, metrics, model list), `admin` (alias moves) and `v2`
//! (Open Inference Protocol). The route table ([`table`], the one list `app()` and the
//! OpenAPI test read) and shared lookups live here.

pub mod admin;
pub mod alerts;
pub mod monitor;
pub mod multipart;
pub mod ops;
pub mod predict;
pub mod review;
pub mod v2;
pub mod v2_infer;
pub mod window;

use std::sync::Arc;

use axum::handler::Handler;
use axum::routing::{MethodRouter, get, post, put};
use vigil_core::types::{ModelName, ModelVersion};
use vigil_runtime::{Deployment, Infer};

use vigil_core::auth::Role;

use crate::auth::Access;
use crate::{ApiError, AppState, pages};

/// A JSON request body whose refusals are the API's own errors (a JSON `Error` body: 415
/// without `Content-Type: application/json`, 400 for a body that does not parse or fit),
/// where axum's `Json` answers in plain text with 415 or 422. The body must be a JSON object,
/// as every body of this API is documented to be: serde would otherwise also read a struct
/// from an array of its fields in order (`[null, null]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(ApiError::from)?;
        if !value.is_object() {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("the request body does not fit: {e}")))
    }
}

/// A query string whose refusals are the API's own errors (a JSON `Error` body, 400), where
/// axum's `Query` answers in plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|r| ApiError::invalid(r.body_text()))
    }
}

/// The HTTP methods the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
}

impl Method {
    /// The method as OpenAPI names it in a path item (`get`, `post`, `put`).
    pub fn as_openapi(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
        }
    }
}

/// One route: a method on a path template, what it needs from its caller, and its handler.
#[derive(Debug)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template, in axum's (and OpenAPI's) `{param}` syntax.
    pub path: &'static str,
    /// Who may call it when auth is on.
    pub access: Access,
    /// The handler, as a method router for `method` only.
    pub handler: MethodRouter<AppState>,
}

/// A route of `handler` for `method` on `path`, open to `access`.
fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let handler = match method {
        Method::Get => get(handler),
        Method::Post => post(handler),
        Method::Put => put(handler),
    };
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route the server serves, and who may call it: the one list `app()` registers
/// (each handler behind [`crate::auth::guard`] with its access), so that what is
/// documented (`/openapi.json`, checked against this list by a test) cannot drift from what
/// is served or guarded.
pub fn table() -> Vec<Route> {
    use Access::{Api, Health, Page, Predict, Public};
    use Method::{Get, Post, Put};
    use Role::{Inspector, Operator, Viewer};
    vec![
        route(Get, "/healthz", Health, ops::healthz),
        route(Get, "/readyz", Health, ops::readyz),
        route(Get, "/metrics", Api(Viewer), ops::metrics),
        route(Get, "/openapi.json", Public, crate::openapi::document),
        route(Get, "/v1/models", Api(Viewer), ops::models),
        route(Post, "/v1/models/{name}/predict", Predict, predict::latest),
        route(
            Post,
            "/v1/models/{name}/versions/{version}/predict",
            Predict,
            predict::versioned,
        ),
        route(
            Put,
            "/v1/models/{name}/aliases/{alias}",
            Api(Operator),
            admin::set_alias,
        ),
        route(
            Get,
            "/v1/models/{name}/monitoring",
            Api(Viewer),
            monitor::monitoring,
        ),
        route(Get, "/v1/models/{name}/drift", Api(Viewer), monitor::drift),
        route(
            Get,
            "/v1/predictions/{request_id}",
            Api(Viewer),
            monitor::prediction,
        ),
        route(Get, "/v1/alerts", Api(Viewer), alerts::alerts),
        route(Get, "/v1/review/queue", Api(Viewer), review::queue),
        route(Post, "/v1/review/claim", Api(Inspector), review::claim_next),
        route(Get, "/v1/review/items/{id}", Api(Inspector), review::item),
        route(
            Get,
            "/v1/review/items/{id}/image",
            Api(Inspector),
            review::image,
        ),
        route(
            Get,
            "/v1/review/items/{id}/pixels",
            Api(Inspector),
            review::pixels,
        ),
        route(
            Post,
            "/v1/review/items/{id}/claim",
            Api(Inspector),
            review::claim,
        ),
        route(
            Post,
            "/v1/review/items/{id}/release",
            Api(Inspector),
            review::release,
        ),
        route(
            Post,
            "/v1/review/items/{id}/skip",
            Api(Inspector),
            review::skip,
        ),
        route(
            Post,
            "/v1/review/items/{id}/verdict",
            Api(Inspector),
            review::verdict,
        ),
        route(Post, "/v1/feedback", Api(Inspector), review::feedback),
        route(
            Get,
            "/v1/models/{name}/performance",
            Api(Viewer),
            review::model_performance,
        ),
        route(Get, "/", Page(Viewer), pages::root),
        route(Get, "/dashboard", Page(Viewer), pages::dashboard::dashboard),
        route(Get, "/review", Page(Inspector), pages::review::review),
        route(Get, "/review/queue", Page(Viewer), pages::queue::queue),
        route(Get, "/assets/{file}", Public, pages::asset),
        route(Get, "/login", Public, pages::login::form),
        route(Post, "/login", Public, pages::login::login),
        route(Post, "/logout", Public, pages::login::logout),
        route(Get, "/v2", Health, v2::server_metadata),
        route(Get, "/v2/health/live", Health, v2::live),
        route(Get, "/v2/health/ready", Health, v2::ready),
        route(Get, "/v2/models/{name}", Api(Viewer), v2::model_metadata),
        route(
            Get,
            "/v2/models/{name}/versions/{version}",
            Api(Viewer),
            v2::model_metadata_versioned,
        ),
        route(Get, "/v2/models/{name}/ready", Health, v2::model_ready),
        route(
            Get,
            "/v2/models/{name}/versions/{version}/ready",
            Health,
            v2::model_ready_versioned,
        ),
        route(Get, "/v2/models/{name}/stats", Api(Viewer), v2::model_stats),
        route(
            Get,
            "/v2/models/{name}/versions/{version}/stats",
            Api(Viewer),
            v2::model_stats_versioned,
        ),
        route(Post, "/v2/models/{name}/infer", Predict, v2_infer::infer),
        route(
            Post,
            "/v2/models/{name}/versions/{version}/infer",
            Predict,
            v2_infer::infer_versioned,
        ),
    ]
}

/// A list's `limit` query parameter: `default` when absent, refused (400) outside 1..=`max`,
/// as `openapi.json` states with `minimum` and `maximum`.
pub fn limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match asked.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// Parses a model name from the path; a name that cannot exist is not found.
pub fn model_name(raw: &str) -> Result<ModelName, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("model {raw:?} is not deployed")))
}

/// The deployment answering for `name` now, checked against `version` when one was asked
/// for: any other version is not found (only the deployed one is served).
pub fn deployment(
    infer: &Infer,
    name: &ModelName,
    version: Option<&str>,
) -> Result<Arc<Deployment>, ApiError> {
    let d = infer
        .deployments()
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("model {name} is not deployed")))?;
    check_version(name, d.version(), version)?;
    Ok(d)
}

/// Not found unless `asked` (when given) is `served`.
pub fn check_version(
    name: &ModelName,
    served: &ModelVersion,
    asked: Option<&str>,
) -> Result<(), ApiError> {
    match asked {
        Some(v) if v != served.as_str() => Err(ApiError::not_found(format!(
            "version {v} of model {name} is not deployed (version {served} is)"
        ))),
        _ => Ok(()),
    }
}
