//! Tokens and sessions: stored as digests, revoked for good, audited, sessions ended with
//! their token.

use chrono::{Duration, Utc};
use vigil_core::ErrorKind;
use vigil_core::auth::Role;
use vigil_store::OpenOptions;
use vigil_store::access::{NewToken, Session};

fn digest(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn token(name: &str, sha: &str) -> NewToken {
    NewToken {
        name: name.into(),
        role: Role::Inspector,
        sha256: sha.into(),
        expires_at: None,
        created_by: "admin".into(),
    }
}

fn session(id: &str, token_sha: &str, expires_in: Duration) -> Session {
    let now = Utc::now();
    Session {
        id_sha256: id.into(),
        token_sha256: token_sha.into(),
        name: "alice".into(),
        role: Role::Inspector,
        csrf: "c".repeat(43),
        created_at: now,
        expires_at: now + expires_in,
    }
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_once_with_audit_entries() {
    let dir = tempfile::tempdir().unwrap();
    let stores = vigil_store::open_stores(&OpenOptions::new(dir.path()))
        .await
        .unwrap();
    let access = &stores.access;
    let alice = access
        .create_token(&token("alice", &digest('a')))
        .await
        .unwrap();
    assert_eq!(
        (alice.name.as_str(), alice.role),
        ("alice", Role::Inspector)
    );
    assert!(alice.is_active(Utc::now()));

    // One live token per name; one row per secret.
    let err = access
        .create_token(&token("alice", &digest('b')))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("vigil tokens revoke alice"),
        "{err}"
    );
    let err = access
        .create_token(&token("bob", &digest('a')))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // Not a digest: refused before anything is written.
    let err = access
        .create_token(&token("carol", "not-a-digest"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");

    let expired = access
        .create_token(&NewToken {
            expires_at: Some(Utc::now() - Duration::seconds(1)),
            ..token("old", &digest('c'))
        })
        .await
        .unwrap();
    assert_eq!(expired.status(Utc::now()), "expired");

    // Revoking by name ends the token and its sessions; a second revocation is a conflict.
    access
        .create_session(&session(&digest('1'), &digest('a'), Duration::hours(1)))
        .await
        .unwrap();
    let revoked = access
        .revoke_token("alice", "admin", "left the company")
        .await
        .unwrap();
    assert_eq!(revoked.status(Utc::now()), "revoked");
    assert_eq!(revoked.revoked_by.as_deref(), Some("admin"));
    assert!(
        access
            .session(&digest('1'), Utc::now())
            .await
            .unwrap()
            .is_none(),
        "a revoked token's session lives on"
    );
    let err = access
        .revoke_token(&alice.id.to_string(), "admin", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let err = access
        .revoke_token("nobody", "admin", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // The name is free again once revoked.
    access
        .create_token(&token("alice", &digest('d')))
        .await
        .unwrap();

    let all = access.tokens().await.unwrap();
    let summary: Vec<(&str, &str)> = all
        .iter()
        .map(|t| (t.name.as_str(), t.status(Utc::now())))
        .collect();
    assert_eq!(
        summary,
        [
            ("alice", "revoked"),
            ("old", "expired"),
            ("alice", "active")
        ]
    );

    // Each creation and the revocation are in the audit chain, which still verifies.
    let log = stores.registry.audit_log().await.unwrap();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e.record.action.as_str(), e.record.subject.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("token.create", "alice"),
            ("token.create", "old"),
            ("token.revoke", "alice"),
            ("token.create", "alice"),
        ]
    );
    assert!(vigil_core::audit::verify(&log, None).is_empty());
    // Secrets are not stored: only digests.
    let raw = std::fs::read(dir.path().join(vigil_store::DB_FILE)).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("vgl_"));
}

#[tokio::test]
async fn sessions_end_when_they_expire_or_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let access = vigil_store::open_access(&OpenOptions::new(dir.path()))
        .await
        .unwrap();
    let live = digest('1');
    access
        .create_session(&session(&live, &digest('a'), Duration::hours(1)))
        .await
        .unwrap();
    access
        .create_session(&session(&digest('2'), &digest('a'), Duration::seconds(-1)))
        .await
        .unwrap();
    let s = access.session(&live, Utc::now()).await.unwrap().unwrap();
    assert_eq!((s.name.as_str(), s.role), ("alice", Role::Inspector));
    assert_eq!(s.csrf.len(), 43);
    assert!(
        access
            .session(&digest('2'), Utc::now())
            .await
            .unwrap()
            .is_none(),
        "an expired session is no session"
    );
    // Later than its end, the live one is gone too.
    assert!(
        access
            .session(&live, Utc::now() + Duration::hours(2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(access.purge_sessions(Utc::now()).await.unwrap(), 1);
    assert!(access.delete_session(&live).await.unwrap());
    assert!(!access.delete_session(&live).await.unwrap());
    assert!(access.session(&live, Utc::now()).await.unwrap().is_none());
}
