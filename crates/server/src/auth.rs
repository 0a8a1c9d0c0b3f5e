//! Who may call what: the `[auth]` settings, the per-route guard, and the caller's identity.
//!
//! Every route in [`crate::routes::table`] names its [`Access`]; `app()` wraps each handler in
//! [`guard`] with it, so the table is the one place that says what a route needs. With auth
//! off every route is open and no [`Caller`] is known. With auth on, a request proves who it
//! is with a token (`Authorization: Bearer vgl_...`) or, from the web pages, with a session
//! cookie that `POST /login` sets ([`crate::session`]). Tokens come from the store (`vigil
//! tokens create`, re-read at most a second old, so a new, revoked or expired token takes
//! effect within a second on a running server) and from `[auth].tokens` in the config. The
//! guard answers 401 without a valid credential (a page redirects to `/login`), 403 when the
//! role is too low or when a session's state-changing request lacks its CSRF value, and
//! otherwise hands the handler the [`Caller`], whose name the audit log and the review
//! verdicts then record ([`acting_as`]): a token cannot act under another name. A known
//! caller refused a route that needs operator or admin is also an `auth.refused` audit entry
//! (an anonymous refusal is only logged, so that no one can grow the audit chain from outside).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::ErrorKind;
use vigil_core::audit::AuditRecord;
use vigil_core::auth::{AuthError, Caller, Role, TokenEntry, Tokens, sha256_hex};
use vigil_store::access::{AccessStore, Session};

use crate::{ApiError, session};

/// How old the store's tokens may be when a request is checked against them.
pub const TOKEN_REREAD: Duration = Duration::from_secs(1);

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

/// Auth when it is on: the tokens (config and store), the sessions, and what else is
/// guarded.
#[derive(Debug)]
pub struct Auth {
    config_tokens: Tokens,
    store: Option<Arc<dyn AccessStore>>,
    audit: Option<Arc<dyn vigil_store::Registry>>,
    cache: tokio::sync::Mutex<StoreTokens>,
    guard_predictions: bool,
    guard_health: bool,
}

/// The store's tokens that are not revoked, by digest, as last read.
#[derive(Debug, Default)]
struct StoreTokens {
    read_at: Option<Instant>,
    by_digest: HashMap<String, (Caller, Option<DateTime<Utc>>)>,
}

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A token in the `Authorization` header.
    Bearer,
    /// A browser session's cookie.
    Session(Box<Session>),
}

/// A request's proven identity.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who, with the role of their token now.
    pub caller: Caller,
    /// With what.
    pub via: Credential,
}

/// What a page needs of its signed-in viewer: their name, and the CSRF value its forms and
/// its script send back. An extension on the requests the guard let through a session.
#[derive(Debug, Clone)]
pub struct PageUser {
    /// The token's holder.
    pub name: String,
    /// The session's CSRF value.
    pub csrf: String,
}

impl Auth {
    /// The auth `config` asks for, with tokens from the config only: `None` when it is off;
    /// an error for a bad token entry, or for auth on with no token.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Arc<Auth>>, AuthError> {
        Auth::new(config, None, None)
    }

    /// The auth `config` asks for, with tokens and sessions in `store` as well (`vigil
    /// tokens`), and refusals of operator and admin routes recorded in `audit`'s log. Auth on
    /// with no token in the config and no store is an error: nothing could be called.
    pub fn new(
        config: &AuthConfig,
        store: Option<Arc<dyn AccessStore>>,
        audit: Option<Arc<dyn vigil_store::Registry>>,
    ) -> Result<Option<Arc<Auth>>, AuthError> {
        let tokens = Tokens::new(config.tokens.clone())?;
        if !config.enabled {
            return Ok(None);
        }
        if tokens.is_empty() && store.is_none() {
            return Err(AuthError(
                "auth.enabled is true but auth.tokens is empty, so nothing could be called; \
                 make one with `vigil tokens create --name NAME --role admin`"
                    .into(),
            ));
        }
        Ok(Some(Arc::new(Auth {
            config_tokens: tokens,
            store,
            audit,
            cache: tokio::sync::Mutex::new(StoreTokens::default()),
            guard_predictions: config.guard_predictions,
            guard_health: config.guard_health,
        })))
    }

    /// The sessions' store, when there is one (signing in needs it).
    pub fn store(&self) -> Option<&Arc<dyn AccessStore>> {
        self.store.as_ref()
    }

    /// How many tokens can be used now (config and store), for the start-up check.
    pub async fn usable_tokens(&self) -> usize {
        let store = self.with_store_tokens(|t| t.len()).await;
        self.config_tokens.len() + store
    }

    /// Who `headers` say the caller is: the bearer token, else the session cookie. `Err`
    /// (401) when a credential is there but is not valid (or none is there).
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let secret = v
                .to_str()
                .ok()
                .and_then(|v| v.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, s)| s.trim())
                .ok_or_else(|| {
                    unauthenticated("send the token as `Authorization: Bearer vgl_...`")
                })?;
            let (caller, _) = self.authenticate(secret).await.ok_or_else(|| {
                unauthenticated(
                    "the token is not valid on this server (unknown, expired or revoked)",
                )
            })?;
            return Ok(Authenticated {
                caller,
                via: Credential::Bearer,
            });
        }
        let Some(cookie) = session::presented(headers) else {
            return Err(unauthenticated(
                "this server requires a token: send `Authorization: Bearer vgl_...`, or sign in at /login",
            ));
        };
        let ended = || {
            unauthenticated(
                "the session has ended (signed out, expired, or its token was revoked): sign in again at /login",
            )
        };
        let store = self.store.as_ref().ok_or_else(ended)?;
        let found = store
            .session(&sha256_hex(cookie), Utc::now())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(ended)?;
        // The token it was opened with must still be valid, and gives the role now.
        let caller = self
            .by_digest(&found.token_sha256)
            .await
            .ok_or_else(ended)?;
        Ok(Authenticated {
            caller,
            via: Credential::Session(Box::new(found)),
        })
    }

    /// The holder of the token whose secret is `secret`, with the secret's digest, if the
    /// token is valid now.
    pub async fn authenticate(&self, secret: &str) -> Option<(Caller, String)> {
        if let Some(c) = self.config_tokens.authenticate(secret) {
            return Some((c.clone(), sha256_hex(secret)));
        }
        let digest = sha256_hex(secret);
        self.by_digest(&digest).await.map(|c| (c, digest))
    }

    /// The holder of the token whose secret's digest is `digest`, if it is valid now.
    async fn by_digest(&self, digest: &str) -> Option<Caller> {
        if let Some(c) = self.config_tokens.by_digest(digest) {
            return Some(c.clone());
        }
        let now = Utc::now();
        self.with_store_tokens(|t| {
            t.get(digest)
                .filter(|(_, expires)| expires.is_none_or(|e| now < e))
                .map(|(c, _)| c.clone())
        })
        .await
    }

    /// Runs `f` on the store's tokens that are not revoked, re-reading them first when the
    /// last read is older than [`TOKEN_REREAD`]. A failed read keeps the last one (logged):
    /// a database that is briefly away must not lock everyone out.
    async fn with_store_tokens<T>(
        &self,
        f: impl FnOnce(&HashMap<String, (Caller, Option<DateTime<Utc>>)>) -> T,
    ) -> T {
        let mut cache = self.cache.lock().await;
        if let Some(store) = &self.store
            && cache.read_at.is_none_or(|t| t.elapsed() >= TOKEN_REREAD)
        {
            match store.tokens().await {
                Ok(rows) => {
                    cache.by_digest = rows
                        .into_iter()
                        .filter(|t| t.revoked_at.is_none())
                        .map(|t| {
                            let caller = Caller {
                                name: t.name,
                                role: t.role,
                            };
                            (t.sha256, (caller, t.expires_at))
                        })
                        .collect();
                    cache.read_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot re-read the tokens; using the last read.");
                }
            }
        }
        f(&cache.by_digest)
    }

    /// Records a refused request to a route that needs operator or admin.
    async fn audit_refusal(&self, who: &str, needed: Role, subject: &str, why: &str) {
        let (Some(audit), true) = (&self.audit, needed >= Role::Operator) else {
            return;
        };
        let record = AuditRecord {
            actor: who.to_owned(),
            action: "auth.refused".into(),
            subject: subject.to_owned(),
            reason: why.to_owned(),
            details: serde_json::json!({ "needed": needed.as_str() }).to_string(),
        };
        if let Err(e) = audit.append_audit(record).await {
            tracing::warn!(error = %e, "Cannot record a refused request in the audit log.");
        }
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::Kind {
        kind: ErrorKind::Unauthenticated,
        message: message.to_owned(),
    }
}

/// Whether `method` can change state (and so needs a session's CSRF value).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
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
    // What a refusal's audit entry names (the request itself cannot be held across an await).
    let subject = format!("{} {}", req.method(), req.uri().path());
    let who = match auth.identify(req.headers()).await {
        Ok(who) => who,
        Err(e) => {
            // Not audited: anyone who reaches the port could otherwise grow the audit chain
            // one write per request. Refusals of known callers are audited below.
            if needed >= Role::Operator {
                tracing::warn!(path = %subject, "Refused: no valid credential.");
            }
            return match g.access {
                Access::Page(_) => Redirect::to(&login_location(&req)).into_response(),
                _ => e.into_response(),
            };
        }
    };
    let caller = who.caller;
    let refuse = |message: String| match g.access {
        Access::Page(_) => crate::pages::login::forbidden(&message),
        _ => ApiError::Kind {
            kind: ErrorKind::Forbidden,
            message,
        }
        .into_response(),
    };
    if !caller.role.allows(needed) {
        tracing::warn!(caller = %caller.name, role = %caller.role, needed = %needed,
            "Refused: the token's role is too low.");
        let message = format!(
            "the token of {:?} has the role {}; this needs {needed} or above",
            caller.name, caller.role
        );
        auth.audit_refusal(&caller.name, needed, &subject, &message)
            .await;
        return refuse(message);
    }
    if let Credential::Session(s) = &who.via {
        let sent = req
            .headers()
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if changes_state(req.method()) && !session::csrf_matches(s, sent) {
            tracing::warn!(caller = %caller.name, path = %req.uri().path(),
                "Refused: a session's request without its CSRF value.");
            let message = format!(
                "this request came with a session cookie but without the session's CSRF \
                 value in the {} header; reload the page and try again",
                session::CSRF_HEADER
            );
            auth.audit_refusal(&caller.name, needed, &subject, &message)
                .await;
            return refuse(message);
        }
        req.extensions_mut().insert(PageUser {
            name: caller.name.clone(),
            csrf: s.csrf.clone(),
        });
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

    #[tokio::test]
    async fn a_bearer_token_identifies_and_a_secret_in_a_cookie_does_not() {
        let s = Secret::generate().unwrap();
        let auth = auth_with(&s, Role::Inspector);
        let mut h = HeaderMap::new();
        assert_eq!(
            auth.identify(&h).await.unwrap_err().kind(),
            ErrorKind::Unauthenticated
        );
        // The old cookie held the secret itself: no longer a credential.
        let cookie = format!("theme=dark; vigil_token={}", s.expose());
        h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        assert!(auth.identify(&h).await.is_err());
        // A session cookie without a store behind it is no session.
        let cookie = format!("{}={}", session::COOKIE, s.expose());
        h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let err = auth.identify(&h).await.unwrap_err();
        assert!(err.to_string().contains("sign in again"), "{err}");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer vgl_00"),
        );
        let err = auth.identify(&h).await.unwrap_err();
        assert!(err.to_string().contains("not valid"), "{err}");
        let bearer = format!("bearer {}", s.expose());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&bearer).unwrap(),
        );
        let who = auth.identify(&h).await.unwrap();
        assert_eq!(
            (who.caller.name.as_str(), who.caller.role),
            ("alice", Role::Inspector)
        );
        assert!(matches!(who.via, Credential::Bearer));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(auth.identify(&h).await.is_err());
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
