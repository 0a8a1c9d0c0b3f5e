//! [`AccessStore`] on SQLite: tokens and sessions in the same `vigil.db`, written through the
//! same protocol (`BEGIN IMMEDIATE`, audit entry in the same transaction) as the registry.

use chrono::{DateTime, Utc};
use vigil_core::audit::{self, AuditRecord, format_time};
use vigil_core::auth::{MAX_NAME, Role};

use super::SqliteRegistry;
use super::monitor::{corrupt, time};
use crate::access::{AccessStore, NewToken, Session, TokenRow};
use crate::{Error, Result};

const TOKEN_COLUMNS: &str =
    "id, name, role, sha256, created_at, created_by, expires_at, revoked_at, revoked_by";

const SESSION_COLUMNS: &str = "id_sha256, token_sha256, name, role, csrf, created_at, expires_at";

type TokenTuple = (
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

type SessionTuple = (String, String, String, String, String, String, String);

fn role(column: &'static str, row: &str, text: &str) -> Result<Role> {
    text.parse().map_err(|e| corrupt(column, row, e))
}

fn token_row(t: TokenTuple) -> Result<TokenRow> {
    let (id, name, role_text, sha256, created_at, created_by, expires_at, revoked_at, revoked_by) =
        t;
    let row = format!("id {id}");
    let opt_time = |column, v: Option<String>| v.map(|v| time(column, &row, &v)).transpose();
    Ok(TokenRow {
        id,
        role: role("tokens.role", &row, &role_text)?,
        created_at: time("tokens.created_at", &row, &created_at)?,
        expires_at: opt_time("tokens.expires_at", expires_at)?,
        revoked_at: opt_time("tokens.revoked_at", revoked_at)?,
        name,
        sha256,
        created_by,
        revoked_by,
    })
}

fn session_row(s: SessionTuple) -> Result<Session> {
    let (id_sha256, token_sha256, name, role_text, csrf, created_at, expires_at) = s;
    let row = format!("session of {name:?}");
    Ok(Session {
        role: role("sessions.role", &row, &role_text)?,
        created_at: time("sessions.created_at", &row, &created_at)?,
        expires_at: time("sessions.expires_at", &row, &expires_at)?,
        id_sha256,
        token_sha256,
        name,
        csrf,
    })
}

fn check_digest(what: &str, hex: &str) -> Result<()> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} must be a SHA-256 digest (64 lowercase hex digits)"
        )))
    }
}

#[async_trait::async_trait]
impl AccessStore for SqliteRegistry {
    async fn create_token(&self, t: &NewToken) -> Result<TokenRow> {
        check_digest("a token's digest", &t.sha256)?;
        let name = t.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return Err(Error::Invalid(format!(
                "a token's name must be 1 to {MAX_NAME} printable characters"
            )));
        }
        let mut tx = self.begin_write().await?;
        let taken: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM tokens WHERE (name = ?1 AND revoked_at IS NULL) OR sha256 = ?2",
        )
        .bind(name)
        .bind(&t.sha256)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.db("checking a token's name"))?;
        if let Some((other,)) = taken {
            return Err(Error::Conflict(if other == name {
                format!(
                    "a token named {name:?} already exists and is not revoked; revoke it first \
                     (`vigil tokens revoke {name}`) or choose another name"
                )
            } else {
                "this secret is already stored for another token".into()
            }));
        }
        let (prev, at) = self.audit_tail(&mut tx).await?;
        let expires = t.expires_at.map(format_time);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (name, role, sha256, created_at, created_by, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(name)
        .bind(t.role.as_str())
        .bind(&t.sha256)
        .bind(&at)
        .bind(&t.created_by)
        .bind(&expires)
        .fetch_one(&mut *tx)
        .await
        .map_err(self.db("storing a token"))?;
        let details = serde_json::json!({
            "id": id,
            "role": t.role.as_str(),
            "expires_at": expires,
        });
        let entry = audit::chain(
            prev.as_ref(),
            at.clone(),
            AuditRecord {
                actor: t.created_by.clone(),
                action: "token.create".into(),
                subject: name.to_owned(),
                reason: String::new(),
                details: details.to_string(),
            },
        );
        self.insert_audit(&mut tx, &entry).await?;
        self.finish_write(tx).await?;
        Ok(TokenRow {
            id,
            name: name.to_owned(),
            role: t.role,
            sha256: t.sha256.clone(),
            created_at: time("tokens.created_at", "new token", &at)?,
            created_by: t.created_by.clone(),
            expires_at: t.expires_at,
            revoked_at: None,
            revoked_by: None,
        })
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows: Vec<TokenTuple> =
            sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
                .fetch_all(&self.pool)
                .await
                .map_err(self.db("reading tokens"))?;
        rows.into_iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id_or_name: &str, by: &str, reason: &str) -> Result<TokenRow> {
        let mut tx = self.begin_write().await?;
        let by_id = id_or_name.parse::<i64>().ok();
        let row: Option<TokenTuple> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens \
             WHERE id = ?1 OR (?1 IS NULL AND name = ?2 AND revoked_at IS NULL) \
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(by_id)
        .bind(id_or_name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.db("looking up a token"))?;
        let Some(row) = row else {
            return Err(Error::not_found(format!("token {id_or_name:?}")));
        };
        let mut token = token_row(row)?;
        if token.revoked_at.is_some() {
            return Err(Error::Conflict(format!(
                "token {} ({:?}) is already revoked",
                token.id, token.name
            )));
        }
        let (prev, at) = self.audit_tail(&mut tx).await?;
        sqlx::query("UPDATE tokens SET revoked_at = ?1, revoked_by = ?2 WHERE id = ?3")
            .bind(&at)
            .bind(by)
            .bind(token.id)
            .execute(&mut *tx)
            .await
            .map_err(self.db("revoking a token"))?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE token_sha256 = ?1")
            .bind(&token.sha256)
            .execute(&mut *tx)
            .await
            .map_err(self.db("ending a revoked token's sessions"))?
            .rows_affected();
        let entry = audit::chain(
            prev.as_ref(),
            at.clone(),
            AuditRecord {
                actor: by.to_owned(),
                action: "token.revoke".into(),
                subject: token.name.clone(),
                reason: reason.to_owned(),
                details: serde_json::json!({ "id": token.id, "sessions_ended": sessions })
                    .to_string(),
            },
        );
        self.insert_audit(&mut tx, &entry).await?;
        self.finish_write(tx).await?;
        token.revoked_at = Some(time("tokens.revoked_at", "revoked token", &at)?);
        token.revoked_by = Some(by.to_owned());
        Ok(token)
    }

    async fn create_session(&self, s: &Session) -> Result<()> {
        check_digest("a session id's digest", &s.id_sha256)?;
        check_digest("a session's token digest", &s.token_sha256)?;
        sqlx::query(&format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))
        .bind(&s.id_sha256)
        .bind(&s.token_sha256)
        .bind(&s.name)
        .bind(s.role.as_str())
        .bind(&s.csrf)
        .bind(format_time(s.created_at))
        .bind(format_time(s.expires_at))
        .execute(&self.pool)
        .await
        .map_err(self.db("storing a session"))?;
        Ok(())
    }

    async fn session(&self, id_sha256: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let row: Option<SessionTuple> = sqlx::query_as(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_sha256 = ?1 AND expires_at > ?2"
        ))
        .bind(id_sha256)
        .bind(format_time(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db("reading a session"))?;
        row.map(session_row).transpose()
    }

    async fn delete_session(&self, id_sha256: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM sessions WHERE id_sha256 = ?1")
            .bind(id_sha256)
            .execute(&self.pool)
            .await
            .map_err(self.db("ending a session"))?
            .rows_affected();
        Ok(n > 0)
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= ?1")
            .bind(format_time(now))
            .execute(&self.pool)
            .await
            .map_err(self.db("deleting ended sessions"))?
            .rows_affected())
    }
}
