//! The audit log: chained, append-only, and tamper-evident.

use vigil_core::audit::{AuditRecord, Problem, verify};

use crate::common::{Fixture, alias, bundle, name, push, set_alias};

async fn busy_fixture() -> Fixture {
    let fx = Fixture::new().await;
    let r = &fx.registry;
    for v in ["1.0", "1.1", "1.2"] {
        push(r, &bundle("weldnet", v, v.as_bytes())).await.unwrap();
    }
    push(r, &bundle("anomaly", "1", b"x")).await.unwrap();
    set_alias(r, "weldnet", "production", "1.0").await.unwrap();
    set_alias(r, "weldnet", "candidate", "1.2").await.unwrap();
    set_alias(r, "weldnet", "production", "1.2").await.unwrap();
    r.remove_alias(&name("weldnet"), &alias("candidate"), "bob", "promoted")
        .await
        .unwrap();
    fx
}

#[tokio::test]
async fn the_log_verifies_after_many_operations() {
    let fx = busy_fixture().await;
    let entry = fx
        .registry
        .append_audit(AuditRecord {
            actor: "reviewer".into(),
            action: "review.verdict".into(),
            subject: "weldnet:1.2".into(),
            reason: "looks right".into(),
            details: r#"{"verdict":"defect"}"#.into(),
        })
        .await
        .unwrap();
    let log = fx.registry.audit_log().await.unwrap();
    assert_eq!(log.len(), 9);
    assert_eq!(log.last(), Some(&entry));
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    assert!(verify(&log, Some(&entry.hash)).is_empty());
    let actions: Vec<_> = log.iter().map(|e| e.record.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "model.push",
            "model.push",
            "model.push",
            "model.push",
            "alias.set",
            "alias.set",
            "alias.set",
            "alias.remove",
            "review.verdict"
        ]
    );
    // Text order is time order.
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn the_database_refuses_updates_and_deletes() {
    let fx = busy_fixture().await;
    let raw = fx.raw_db().await;
    let err = sqlx::query("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 2")
        .execute(&raw)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&raw)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(verify(&fx.registry.audit_log().await.unwrap(), None).is_empty());
}

async fn drop_triggers(raw: &sqlx::SqlitePool) {
    for trigger in ["audit_log_no_update", "audit_log_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER {trigger}"))
            .execute(raw)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_edited_entry_is_found() {
    let fx = busy_fixture().await;
    let raw = fx.raw_db().await;
    drop_triggers(&raw).await;
    sqlx::query("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 5")
        .execute(&raw)
        .await
        .unwrap();
    let log = fx.registry.audit_log().await.unwrap();
    assert_eq!(verify(&log, None), [Problem::Edited { seq: 5 }]);
}

#[tokio::test]
async fn a_deleted_entry_is_found() {
    let fx = busy_fixture().await;
    let raw = fx.raw_db().await;
    drop_triggers(&raw).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 4")
        .execute(&raw)
        .await
        .unwrap();
    let log = fx.registry.audit_log().await.unwrap();
    assert_eq!(verify(&log, None), [Problem::Missing { from: 4, to: 4 }]);
}

#[tokio::test]
async fn concurrent_writers_keep_the_chain_intact() {
    let fx = Fixture::new().await;
    let a = fx.registry.clone();
    let b = fx.another_handle().await;
    for v in ["1", "2"] {
        push(&a, &bundle("weldnet", v, v.as_bytes())).await.unwrap();
    }
    for round in 0..10 {
        let (va, vb) = (format!("a{round}"), format!("b{round}"));
        let (pa, pb) = (
            bundle("weldnet", &va, va.as_bytes()),
            bundle("weldnet", &vb, vb.as_bytes()),
        );
        let target = if round % 2 == 0 { "1" } else { "2" };
        let (r1, r2, r3, r4) = tokio::join!(
            push(&a, &pa),
            push(&b, &pb),
            set_alias(&a, "weldnet", "production", target),
            set_alias(&b, "weldnet", "candidate", target),
        );
        r1.unwrap();
        r2.unwrap();
        r3.unwrap();
        r4.unwrap();
    }
    let log = b.audit_log().await.unwrap();
    assert_eq!(log.len(), 2 + 10 * 4);
    assert!(verify(&log, None).is_empty(), "{:?}", verify(&log, None));
    assert_eq!(a.list_versions(&name("weldnet")).await.unwrap().len(), 22);
}
