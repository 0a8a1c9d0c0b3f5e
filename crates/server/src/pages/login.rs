//! `GET /login`, `POST /login`, `POST /logout`: signing a browser in with a token.
//!
//! The form takes the token's secret; a valid one is set as the `vigil_token` cookie
//! (`HttpOnly`, so page script cannot read it; `SameSite=Strict`, so another site cannot
//! send it along with a forged form; `Secure` behind a TLS proxy; 12 hours, a shift) and the
//! browser goes back to the page it came from. The pages' own script then calls the JSON
//! API with the cookie like any other client.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Nav, esc, layout, notice};
use crate::AppState;
use crate::auth::{COOKIE, safe_next};

/// How long a sign-in lasts: a shift.
const COOKIE_MAX_AGE_S: u32 = 12 * 3600;

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
    match auth.authenticate(f.token.trim()) {
        Some(caller) => {
            tracing::info!(caller = %caller.name, role = %caller.role, "Signed in.");
            let secure = if behind_tls(&headers) { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_S}{secure}",
                f.token.trim()
            );
            let mut r = Redirect::to(next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => {
            tracing::warn!("A sign-in with a token that is not valid here was refused.");
            let mut r = page(next, Some("That token is not valid on this server.")).into_response();
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

/// `POST /logout`: forgets the cookie.
pub async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vigil_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// The page a signed-in browser gets where its token's role is too low (403).
pub fn forbidden(message: &str) -> Response {
    let body = format!(
        "<h1>Not for this token</h1>{}<form method=\"post\" action=\"/logout\">\
         <button type=\"submit\">Sign in with another token</button></form>",
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
