//! `GET /login`, `POST /login`, `POST /logout`: signing a browser in with a token.
//!
//! The form takes the token's secret; a valid one opens a server-side session
//! ([`crate::session`]: the cookie holds only a random id, 12 hours, a shift) and the browser
//! goes back to the page it came from. The pages' own script then calls the JSON API with the
//! cookie and the session's CSRF value. Signing out (a form on every page, with the CSRF
//! value) deletes the session: the old cookie is refused from then on.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use vigil_core::auth::sha256_hex;

use super::{Nav, esc, layout, notice};
use crate::auth::safe_next;
use crate::{AppState, session};

/// `GET /login?next=/review`
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Where to go after signing in.
    pub next: Option<String>,
}

/// The form `POST /login` reads.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The token's secret.
    pub token: String,
    /// Where to go after signing in.
    pub next: Option<String>,
}

/// `GET /login`
pub async fn form(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    if !state.auth_enabled() {
        let body = format!(
            "<h1>Sign in</h1>{}",
            notice(
                "info",
                "This server does not ask for a sign-in: <code>[auth]</code> is off, so every \
                 page is open. <a href=\"/dashboard\">Go to the dashboard</a>."
            )
        );
        return layout("Sign in", Nav::Login, &body, "").into_response();
    }
    page(safe_next(q.next.as_deref()), None).into_response()
}

/// `POST /login`
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let Some(auth) = state.auth() else {
        return Redirect::to(next).into_response();
    };
    if !same_origin(&headers) {
        tracing::warn!("A sign-in posted from another site was refused.");
        return status_page(
            StatusCode::FORBIDDEN,
            next,
            "A sign-in must be posted from this server's own sign-in page.",
        );
    }
    let Some((caller, digest)) = auth.authenticate(f.token.trim()).await else {
        tracing::warn!("A sign-in with a token that is not valid here was refused.");
        return status_page(
            StatusCode::UNAUTHORIZED,
            next,
            "That token is not valid on this server (unknown, expired or revoked).",
        );
    };
    let Some(store) = auth.store() else {
        return status_page(
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            "This server keeps no sessions (it has no store): send the token as \
             `Authorization: Bearer vgl_...` instead.",
        );
    };
    let opened = match session::open(&caller, &digest, Utc::now()) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "Cannot open a session.");
            return status_page(StatusCode::INTERNAL_SERVER_ERROR, next, &e.to_string());
        }
    };
    if let Err(e) = store.create_session(&opened.session).await {
        tracing::error!(error = %e, "Cannot store a session.");
        return status_page(
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            "The sign-in could not be recorded (the store is unavailable); try again.",
        );
    }
    tracing::info!(caller = %caller.name, role = %caller.role, "Signed in.");
    let mut r = Redirect::to(next).into_response();
    if let Some(v) = session::set_cookie(&opened.cookie, behind_tls(&headers)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The form `POST /logout` reads.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    /// The session's CSRF value.
    pub csrf: Option<String>,
}

/// `POST /logout`: ends the session (deleted from the store, so the cookie is refused from
/// now on) and forgets the cookie. A sign-out without the session's CSRF value is refused
/// (another site must not be able to sign an inspector out mid-review).
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let store = state.auth().and_then(|a| a.store());
    if let (Some(store), Some(cookie)) = (store, session::presented(&headers)) {
        let id = sha256_hex(cookie);
        match store.session(&id, Utc::now()).await {
            Ok(Some(s)) if !session::csrf_matches(&s, f.csrf.as_deref()) => {
                tracing::warn!(caller = %s.name, "A sign-out without the session's CSRF value was refused.");
                return forbidden("A sign-out must come from this server's own pages.");
            }
            Ok(Some(s)) => {
                if let Err(e) = store.delete_session(&id).await {
                    tracing::error!(error = %e, "Cannot end a session.");
                    return status_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "/",
                        "The sign-out could not be recorded (the store is unavailable); try again.",
                    );
                }
                tracing::info!(caller = %s.name, "Signed out.");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "Cannot read a session at sign-out."),
        }
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(behind_tls(&headers)),
    );
    r
}

/// The sign-in form again with `message`, answered with `status`.
fn status_page(status: StatusCode, next: &str, message: &str) -> Response {
    let mut r = page(next, Some(message)).into_response();
    *r.status_mut() = status;
    r
}

/// Whether a form post came from this server's own page: a browser sends `Origin` with every
/// POST; its host must be the one the request was sent to. (No `Origin`: not a browser.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The page a signed-in browser gets where its token's role is too low (403).
pub fn forbidden(message: &str) -> Response {
    let body = format!(
        "<h1>Not for this token</h1>{}<p><a href=\"/login\">Sign in with another token</a></p>",
        notice("warn", &esc(message))
    );
    let mut r = layout("Not permitted", Nav::Login, &body, "").into_response();
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// Whether the request reached a TLS-terminating proxy first.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The sign-in form, with `error` above it.
fn page(next: &str, error: Option<&str>) -> axum::response::Html<String> {
    let error = error.map_or(String::new(), |e| notice("warn", &esc(e)));
    let body = format!(
        r#"<div class="login">
<form class="card" method="post" action="/login">
  <h1>Sign in</h1>
  {error}
  <p class="muted">Paste the token you were given (it starts with <code>vgl_</code>). Its name
  is what your verdicts and deployments are recorded under.</p>
  <input type="password" name="token" id="token" autocomplete="current-password" required
    placeholder="vgl_…" autofocus>
  <input type="hidden" name="next" value="{next}">
  <button type="submit" class="primary" id="sign-in">Sign in</button>
</form>
</div>"#,
        next = esc(next),
    );
    layout("Sign in", Nav::Login, &body, "")
}
