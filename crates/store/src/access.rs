//! Who may call a server: API tokens and browser sessions, kept in the store so that a token
//! can be made, listed and revoked while servers run, and a sign-out ends a session for good.
//!
//! Secrets are never stored: a token row holds the SHA-256 of its secret, a session row the
//! SHA-256 of its cookie value. Creating and revoking a token each append an audit entry in the
//! same transaction (`token.create`, `token.revoke`). Sessions are not audited one by one
//! (every page load would be); the sign-in and sign-out are in the server's log.
//! SQLite implements it now (`sqlite/access.rs`); PostgreSQL will implement the same trait,
//! and every replica then sees a revocation on its next read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::auth::Role;

use crate::Result;

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Who or what holds it: recorded as the actor of everything done with it. Unique
    /// among the tokens that are not revoked.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret, 64 lowercase hex digits.
    pub sha256: String,
    /// When it stops working; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who made it (the audit entry's actor).
    pub created_by: String,
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Its number, for `vigil tokens revoke`.
    pub id: i64,
    /// Its holder's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret.
    #[serde(skip)]
    pub sha256: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

impl TokenRow {
    /// Whether it lets a caller in at `now`: not revoked and not expired.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    /// `active`, `expired` or `revoked`, for listings.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.is_active(now) {
            "active"
        } else {
            "expired"
        }
    }
}

/// A browser session to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the cookie's value (the session id); the key.
    #[serde(skip)]
    pub id_sha256: String,
    /// SHA-256 of the token it was opened with: revoking that token ends the session.
    #[serde(skip)]
    pub token_sha256: String,
    /// The token's name.
    pub name: String,
    /// The token's role when the session was opened.
    pub role: Role,
    /// The value every form and every state-changing request of the session must carry.
    #[serde(skip)]
    pub csrf: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// The tokens and sessions.
#[async_trait::async_trait]
pub trait AccessStore: Send + Sync + std::fmt::Debug {
    /// Stores a token and appends a `token.create` audit entry, in one transaction.
    /// [`crate::Error::Conflict`] when a token that is not revoked already has this name, or
    /// when the secret's digest is already stored.
    async fn create_token(&self, token: &NewToken) -> Result<TokenRow>;

    /// Every token ever made, revoked and expired ones too, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRow>>;

    /// Revokes the token with this id, or the one not yet revoked with this name, and appends
    /// a `token.revoke` audit entry, in one transaction. Revoking a revoked token is
    /// [`crate::Error::Conflict`]; an unknown one [`crate::Error::NotFound`]. Its sessions
    /// are deleted with it.
    async fn revoke_token(&self, id_or_name: &str, by: &str, reason: &str) -> Result<TokenRow>;

    /// Stores a new session.
    async fn create_session(&self, session: &Session) -> Result<()>;

    /// The session with this id digest, if it exists and has not ended at `now`.
    async fn session(&self, id_sha256: &str, now: DateTime<Utc>) -> Result<Option<Session>>;

    /// Deletes the session with this id digest; whether there was one.
    async fn delete_session(&self, id_sha256: &str) -> Result<bool>;

    /// Deletes the sessions that ended before `now`; how many.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64>;
}
