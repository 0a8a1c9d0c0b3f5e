//! Who may call what: the `[auth]` settings, the per-route guard, and the caller's identity.
//!
//! Every route in [`crate::routes::table`] names its [`Access`]; `app()` wraps each handler in
//! [`guard`] with it, so the table is the one place that says what a route needs. With auth
//! off (the default: the embedded server listens on 127.0.0.1) every route is open and no
//! [`Caller`] is known. With auth on, a request carries a token as `Authorization: Bearer
//! vgl_...` or, from the web pages, in the `vigil_token` cookie that `POST /login` sets; the
//! guard answers 401 without a valid one (a page redirects to `/login`), 403 when its role
//! is too low, and otherwise hands the handler the [`Caller`], whose name the audit log and
//! the review verdicts then record ([`acting_as`]): a token cannot act under another name.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use vigil_core::ErrorKind;
use vigil_core::auth::{AuthError, Caller, Role, TokenEntry, Tokens};

use crate::ApiError;

/// The cookie the login page sets: the token's secret, `HttpOnly`, `SameSite=Strict`.
pub const COOKIE: &str = "vigil_token";

/// `[auth]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require tokens.
    pub enabled: bool,
    /// Require a token (any role) for prediction too.
    pub guard_predictions: bool,
    /// Require a token (any role) for health and readiness too.
    pub guard_health: bool,
    /// The tokens.
    pub tokens: Vec<TokenEntry>,
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Always open: the API document, the page assets, the login page.
    Public,
    /// Open unless `guard_health`: liveness and readiness, for probes and load balancers.
    Health,
    /// Open unless `guard_predictions`: the inference routes.
    Predict,
    /// A JSON route needing this role: 401 or 403 as a JSON error.
    Api(Role),
    /// A web page needing this role: without a token the browser goes to `/login`.
    Page(Role),
}

impl Access {
    /// The role needed under `auth`, `None` when the route is open.
    fn needs(self, auth: &Auth) -> Option<Role> {
        match self {
            Access::Public => None,
            Access::Health => auth.guard_health.then_some(Role::Viewer),
            Access::Predict => auth.guard_predictions.then_some(Role::Viewer),
            Access::Api(role) | Access::Page(role) => Some(role),
        }
    }

    /// How the OpenAPI document names it (`x-vigil-access`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Health => "health",
            Access::Predict => "predict",
            Access::Api(role) | Access::Page(role) => role.as_str(),
        }
    }
}

/// Auth when it is on: the checked tokens and what else is guarded.
#[derive(Debug)]
pub struct Auth {
    tokens: Tokens,
    guard_predictions: bool,
    guard_health: bool,
}

impl Auth {
    /// The auth `config` asks for: `None` when it is off; an error for a bad token entry,
    /// or for auth on with no token (nobody could call anything).
    pub fn from_config(config: &AuthConfig) -> Result<Option<Arc<Auth>>, AuthError> {
        let tokens = Tokens::new(config.tokens.clone())?;
        if !config.enabled {
            return Ok(None);
        }
        if tokens.is_empty() {
            return Err(AuthError(
                "auth.enabled is true but auth.tokens is empty, so nothing could be called; \
                 make one with `vigil auth token --name NAME --role admin`"
                    .into(),
            ));
        }
        Ok(Some(Arc::new(Auth {
            tokens,
            guard_predictions: config.guard_predictions,
            guard_health: config.guard_health,
        })))
    }

    /// The caller `headers` identify: the bearer token, else the login cookie. `Err` when a
    /// credential is there but matches no token (or none is there).
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let secret = presented_secret(headers).ok_or_else(|| {
            unauthenticated("this server requires a token: send `Authorization: Bearer vgl_...`")
        })?;
        self.authenticate(secret)
            .ok_or_else(|| unauthenticated("the token is not valid on this server"))
    }

    /// The holder of the token whose secret is `secret`, if any.
    pub fn authenticate(&self, secret: &str) -> Option<Caller> {
        self.tokens.authenticate(secret).cloned()
    }
}

/// The secret a request carries: `Authorization: Bearer ...`, else the login cookie.
fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, secret) = v.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(secret.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE).then_some(v)
        })
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::Kind {
        kind: ErrorKind::Unauthenticated,
        message: message.to_owned(),
    }
}

/// The guard's state: the server's auth and the route's access. (With auth off, `app()`
/// puts no guard on the routes.)
#[derive(Debug, Clone)]
pub struct Guard {
    /// The tokens.
    pub auth: Arc<Auth>,
    /// What the route needs.
    pub access: Access,
}

/// The per-route middleware (see the module docs).
pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let auth = g.auth;
    let Some(needed) = g.access.needs(&auth) else {
        return next.run(req).await;
    };
    let caller = match auth.caller(req.headers()) {
        Ok(c) => c,
        Err(e) => {
            return match g.access {
                Access::Page(_) => Redirect::to(&login_location(&req)).into_response(),
                _ => e.into_response(),
            };
        }
    };
    if !caller.role.allows(needed) {
        tracing::warn!(caller = %caller.name, role = %caller.role, needed = %needed,
            "Refused: the token's role is too low.");
        let message = format!(
            "the token of {:?} has the role {}; this needs {needed} or above",
            caller.name, caller.role
        );
        return match g.access {
            Access::Page(_) => crate::pages::login::forbidden(&message),
            _ => ApiError::Kind {
                kind: ErrorKind::Forbidden,
                message,
            }
            .into_response(),
        };
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// `/login?next=<this page>`.
fn login_location(req: &Request) -> String {
    let here = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    format!("/login?next={}", crate::pages::url_encode(&here))
}

/// The name a request acts under. Authenticated: the token's name, and a `claimed` name
/// (an `inspector` or `actor` field) must be that name or absent. Without auth: `claimed`.
pub fn acting_as(
    caller: Option<&Caller>,
    claimed: Option<String>,
    field: &str,
) -> Result<Option<String>, ApiError> {
    match (caller, claimed) {
        (None, claimed) => Ok(claimed),
        (Some(c), Some(claimed)) if claimed.trim() != c.name => Err(ApiError::Kind {
            kind: ErrorKind::Forbidden,
            message: format!(
                "this request's token is {:?}'s; it cannot act as {field} {claimed:?}",
                c.name
            ),
        }),
        (Some(c), _) => Ok(Some(c.name.clone())),
    }
}

/// Where a login may send the browser afterwards: a path on this server, else `/`.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use vigil_core::auth::Secret;

    use super::*;

    fn auth_with(secret: &Secret, role: Role) -> Arc<Auth> {
        Auth::from_config(&AuthConfig {
            enabled: true,
            tokens: vec![TokenEntry {
                name: "alice".into(),
                role,
                sha256: secret.digest(),
            }],
            ..AuthConfig::default()
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn off_is_none_and_on_without_tokens_is_refused() {
        assert!(Auth::from_config(&AuthConfig::default()).unwrap().is_none());
        let err = Auth::from_config(&AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(err.0.contains("auth.tokens is empty"), "{err}");
        // A bad entry is refused even while auth is off: it would fail the day it is turned on.
        let bad = AuthConfig {
            tokens: vec![TokenEntry {
                name: "a".into(),
                role: Role::Admin,
                sha256: "zz".into(),
            }],
            ..AuthConfig::default()
        };
        assert!(Auth::from_config(&bad).is_err());
    }

    #[test]
    fn the_bearer_header_wins_over_the_cookie_and_a_wrong_one_is_not_valid() {
        let s = Secret::generate().unwrap();
        let auth = auth_with(&s, Role::Inspector);
        let mut h = HeaderMap::new();
        assert_eq!(
            auth.caller(&h).unwrap_err().kind(),
            ErrorKind::Unauthenticated
        );
        let cookie = format!("theme=dark; {COOKIE}={}", s.expose());
        h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        assert_eq!(auth.caller(&h).unwrap().name, "alice");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer vgl_00"),
        );
        let err = auth.caller(&h).unwrap_err();
        assert!(err.to_string().contains("not valid"), "{err}");
        let bearer = format!("bearer {}", s.expose());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&bearer).unwrap(),
        );
        assert_eq!(auth.caller(&h).unwrap().role, Role::Inspector);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(auth.caller(&h).is_err());
    }

    #[test]
    fn a_token_acts_under_its_own_name_only() {
        let alice = Caller {
            name: "alice".into(),
            role: Role::Inspector,
        };
        assert_eq!(acting_as(None, None, "inspector").unwrap(), None);
        assert_eq!(
            acting_as(None, Some("bob".into()), "inspector").unwrap(),
            Some("bob".into())
        );
        assert_eq!(
            acting_as(Some(&alice), None, "inspector").unwrap(),
            Some("alice".into())
        );
        assert_eq!(
            acting_as(Some(&alice), Some("alice".into()), "inspector").unwrap(),
            Some("alice".into())
        );
        let err = acting_as(Some(&alice), Some("bob".into()), "inspector").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        assert!(err.to_string().contains("cannot act as inspector \"bob\""));
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/review?model=w")), "/review?model=w");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil",
            "review",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
