//! Browser sessions, kept server-side: signing in with a token opens a session in the store
//! and sets a cookie holding only its random id (`vigil_session`: `HttpOnly`, so page script
//! cannot read it; `SameSite=Strict`, so another site's page cannot send it; `Secure` when
//! the server or its proxy speaks TLS). The store keeps the id's SHA-256, the token's digest,
//! the holder's name and role, a CSRF value and the end time. Signing out deletes the row, so
//! a copied cookie stops working at once; revoking the token deletes its sessions; a session
//! also ends when its token expires.
//!
//! Every state-changing request a session makes must carry the session's CSRF value: the
//! `x-csrf-token` header (the review page's script sends it, read from the page's
//! `<meta name="csrf-token">`) or the `csrf` field of a form (sign-out). A request with a
//! bearer token needs none: another site cannot make a browser send one.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use vigil_core::auth::{AuthError, Caller, constant_time_eq, random_text, sha256_hex};
use vigil_store::access::Session;

/// The session cookie's name.
pub const COOKIE: &str = "vigil_session";
/// The header a session's state-changing request carries its CSRF value in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a session's form post carries its CSRF value in.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts: a shift.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A session just opened: the cookie value to hand the browser (once; only its digest is
/// stored) and the row to store.
#[derive(Debug)]
pub struct Opened {
    /// The cookie's value.
    pub cookie: String,
    /// What the store keeps.
    pub session: Session,
}

/// Opens a session for `caller`, who signed in with the token whose digest is
/// `token_sha256`.
pub fn open(caller: &Caller, token_sha256: &str, now: DateTime<Utc>) -> Result<Opened, AuthError> {
    let cookie = random_text()?;
    let lifetime = chrono::Duration::from_std(LIFETIME).unwrap_or(chrono::Duration::hours(12));
    Ok(Opened {
        session: Session {
            id_sha256: sha256_hex(&cookie),
            token_sha256: token_sha256.to_owned(),
            name: caller.name.clone(),
            role: caller.role,
            csrf: random_text()?,
            created_at: now,
            expires_at: now + lifetime,
        },
        cookie,
    })
}

/// The session cookie's value in `headers`, if any.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then_some(v)
        })
}

/// The `Set-Cookie` value that hands the browser `value` for the session's lifetime.
pub fn set_cookie(value: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    ))
    .ok()
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "vigil_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("vigil_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// Whether `presented` is the session's CSRF value (compared in constant time).
pub fn csrf_matches(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), session.csrf.as_bytes()))
}

#[cfg(test)]
mod tests {
    use vigil_core::auth::Role;

    use super::*;

    #[test]
    fn a_session_stores_digests_and_its_cookie_is_strict() {
        let caller = Caller {
            name: "alice".into(),
            role: Role::Inspector,
        };
        let now = Utc::now();
        let a = open(&caller, &"a".repeat(64), now).unwrap();
        let b = open(&caller, &"a".repeat(64), now).unwrap();
        assert_ne!(a.cookie, b.cookie, "ids are random");
        assert_ne!(a.session.csrf, b.session.csrf);
        assert_eq!(a.session.id_sha256, sha256_hex(&a.cookie));
        assert_ne!(a.session.id_sha256, a.cookie);
        assert_eq!(a.session.expires_at - now, chrono::Duration::hours(12));
        let cookie = set_cookie(&a.cookie, true).unwrap();
        let cookie = cookie.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie} lacks {part}");
        }
        assert!(
            !set_cookie(&a.cookie, false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Secure")
        );

        let mut h = HeaderMap::new();
        let sent = format!("theme=dark; {COOKIE}={}", a.cookie);
        h.insert(header::COOKIE, HeaderValue::from_str(&sent).unwrap());
        assert_eq!(presented(&h), Some(a.cookie.as_str()));
        assert!(csrf_matches(&a.session, Some(&a.session.csrf)));
        assert!(!csrf_matches(&a.session, Some(&b.session.csrf)));
        assert!(!csrf_matches(&a.session, None));
        assert!(!csrf_matches(&a.session, Some("")));
    }
}
