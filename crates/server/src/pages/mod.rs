//! The inspector-facing web pages: the dashboard (`GET /dashboard`, `GET /` redirects to
//! it), the review queue (`GET /review/queue`) and the review page (`GET /review`), all
//! rendered here as HTML strings around one [`layout`], with their stylesheet and script
//! compiled into the binary and served from `GET /assets/{file}` ([`asset`]).
//!
//! Pages are server-rendered from the runtime and the stores; only the review page runs
//! script (`assets/review.js`), and it speaks the JSON review API like any other client.
//! Nothing is loaded from outside the server (no CDN, no web fonts): a line may be
//! air-gapped. A backend piece that is not configured (no review store, no monitoring
//! store) is a sentence on the page, never a 500. This module must not reach a store
//! except through the traits `AppState` hands out.

pub mod chart;
pub mod dashboard;
pub mod login;
pub mod queue;
pub mod review;

use std::fmt::Write as _;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};

use crate::auth::PageUser;

/// Which entry of the header navigation a page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/dashboard`
    Dashboard,
    /// `/review/queue`
    Queue,
    /// `/review`
    Review,
    /// `/login` (not in the navigation)
    Login,
}

impl Nav {
    const ALL: [(Nav, &'static str, &'static str); 3] = [
        (Nav::Dashboard, "/dashboard", "Dashboard"),
        (Nav::Queue, "/review/queue", "Review queue"),
        (Nav::Review, "/review", "Review"),
    ];
}

/// The one page layout: the document head (stylesheet from `/assets`), the header with the
/// navigation (`active` marked), and `body` in the main area. `title` is escaped; `body`
/// is HTML the caller built (escaping what it took from data with [`esc`]). `extra_head`
/// goes into `<head>` as it is (a page's script tag).
pub fn layout(title: &str, active: Nav, body: &str, extra_head: &str) -> Html<String> {
    layout_for(None, title, active, body, extra_head)
}

/// [`layout`] for a signed-in viewer: their name and a sign-out button in the header, and
/// the session's CSRF value in `<meta name="csrf-token">` for the page's script.
pub fn layout_for(
    user: Option<&PageUser>,
    title: &str,
    active: Nav,
    body: &str,
    extra_head: &str,
) -> Html<String> {
    let (who, csrf_meta) = match user {
        Some(u) => (
            format!(
                r#"<form class="signout" method="post" action="/logout"><span class="who">{}</span><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="sign-out">Sign out</button></form>"#,
                esc(&u.name),
                csrf = esc(&u.csrf),
            ),
            format!(r#"<meta name="csrf-token" content="{}">"#, esc(&u.csrf)),
        ),
        None => (String::new(), String::new()),
    };
    let mut nav = String::new();
    for (item, href, label) in Nav::ALL {
        let current = if item == active {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(nav, r#"<a href="{href}"{current}>{label}</a>"#);
    }
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Vigil</title>
<link rel="stylesheet" href="/assets/vigil.css">
<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">
{csrf_meta}
{extra_head}
</head>
<body class="page-{page}">
<header class="top"><a class="brand" href="/dashboard"><span class="mark">◆</span> Vigil</a><nav>{nav}</nav><span class="top-note">{now}</span>{who}</header>
<main>
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
        page = match active {
            Nav::Dashboard => "dashboard",
            Nav::Queue => "queue",
            Nav::Review => "review",
            Nav::Login => "login",
        },
        now = Utc::now().format("%Y-%m-%d %H:%M UTC"),
    ))
}

/// `text` escaped for HTML text and double-quoted attribute values (the one escaping the
/// drift report and the evaluation report use too).
pub use vigil_core::escape_html as esc;

/// A share in `[0, 1]` as a percentage with one decimal; `–` for `None` or a non-finite
/// value.
pub fn pct(share: Option<f64>) -> String {
    match share {
        Some(s) if s.is_finite() => format!("{:.1}%", s * 100.0),
        _ => "–".to_owned(),
    }
}

/// How long ago `at` was, in the largest sensible unit: `42 s`, `5 min`, `3 h 10 min`,
/// `2 d 4 h`.
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `text` percent-encoded for a query value (model names are plain, but the page must not
/// trust that).
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A notice box: `kind` is `info`, `warn` or `empty`; `html` is trusted markup.
pub fn notice(kind: &str, html: &str) -> String {
    format!(r#"<div class="notice notice-{kind}">{html}</div>"#)
}

/// The Content-Security-Policy of every HTML answer: everything from this server only, no
/// inline script (the one script is `/assets/review.js`), no framing, forms only to this
/// server. Inline `style` attributes are allowed: the bar widths and legend colours are data.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the browser protections to every answer: `nosniff` everywhere, and on HTML the CSP,
/// no framing (`X-Frame-Options` for browsers without `frame-ancestors`) and no referrer to
/// other sites (page URLs carry model names and item ids). `same-origin`, not `no-referrer`:
/// under `no-referrer` a browser sends `Origin: null` on the pages' own form posts, and the
/// sign-in checks the origin.
pub async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = next.run(req).await;
    let html = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    r
}

/// `GET /`: to the dashboard.
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// The assets compiled into the binary: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "vigil.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vigil.css"),
    ),
    (
        "review.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/review.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/favicon.svg"),
    ),
];

/// `GET /assets/{file}`: a compiled-in asset with its content type. Cached for an hour
/// and revalidated after: the assets change only with the binary, and an hour keeps a
/// shift's page loads off the server without pinning an old script after an upgrade.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600, must-revalidate"),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn ages_use_the_largest_sensible_unit() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(42), now), "42 s");
        assert_eq!(age(now - chrono::Duration::seconds(300), now), "5 min");
        assert_eq!(
            age(now - chrono::Duration::seconds(11_400), now),
            "3 h 10 min"
        );
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0 s");
        assert_eq!(pct(Some(0.1234)), "12.3%");
        assert_eq!(pct(None), "–");
        assert_eq!(url_encode("weld net/1"), "weld%20net%2F1");
    }
}
