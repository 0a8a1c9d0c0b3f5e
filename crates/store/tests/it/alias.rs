//! Aliases: set, move, remove, history and "which version was it at time T".

use std::time::Duration;

use chrono::TimeDelta;
use vigil_core::ErrorKind;
use vigil_store::{AliasChange, AliasOutcome, Error};

use crate::common::{
    Fixture, alias, bundle, name, push, set_alias, snapshot_db, snapshot_dir, version,
};

async fn fixture_with_versions(versions: &[&str]) -> Fixture {
    let fx = Fixture::new().await;
    for v in versions {
        push(&fx.registry, &bundle("weldnet", v, v.as_bytes()))
            .await
            .unwrap();
    }
    fx
}

#[tokio::test]
async fn alias_set_move_remove_with_history_and_alias_at() {
    let fx = fixture_with_versions(&["1.0", "2.0"]).await;
    let r = &fx.registry;
    let (weldnet, production) = (name("weldnet"), alias("production"));

    let out = set_alias(r, "weldnet", "production", "1.0").await.unwrap();
    assert_eq!(out, AliasOutcome::Moved { from: None });
    // Keep the three events at distinct microseconds so times between them exist.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let out = set_alias(r, "weldnet", "production", "2.0").await.unwrap();
    assert_eq!(
        out,
        AliasOutcome::Moved {
            from: Some(version("1.0"))
        }
    );
    set_alias(r, "weldnet", "candidate", "2.0").await.unwrap();

    let prod = r
        .resolve(&"weldnet@production".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(prod.version, version("2.0"));
    assert_eq!(prod.aliases, [alias("candidate"), alias("production")]);
    let models = r.list_models().await.unwrap();
    assert_eq!(models[0].aliases["production"], version("2.0"));
    assert_eq!(models[0].aliases["candidate"], version("2.0"));

    tokio::time::sleep(Duration::from_millis(2)).await;
    let removed = r
        .remove_alias(&weldnet, &production, "carol", "rollback drill")
        .await
        .unwrap();
    assert_eq!(removed, version("2.0"));
    let err = r
        .resolve(&"weldnet@production".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let history = r.alias_history(&weldnet, Some(&production)).await.unwrap();
    let moves: Vec<_> = history
        .iter()
        .map(|e| (e.from.clone(), e.to.clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (None, Some(version("1.0"))),
            (Some(version("1.0")), Some(version("2.0"))),
            (Some(version("2.0")), None),
        ]
    );
    assert_eq!(history[2].actor, "carol");
    assert_eq!(history[2].reason, "rollback drill");
    assert_eq!(r.alias_history(&weldnet, None).await.unwrap().len(), 4);

    // Each event points at its own audit entry.
    let log = r.audit_log().await.unwrap();
    for event in &history {
        let entry = &log[usize::try_from(event.audit_seq - 1).unwrap()];
        assert_eq!(entry.seq, event.audit_seq);
        assert_eq!(entry.record.subject, "weldnet@production");
        assert_eq!(entry.at, vigil_core::audit::format_time(event.at));
    }
    assert_eq!(
        log[history[0].audit_seq as usize - 1].record.action,
        "alias.set"
    );
    assert_eq!(
        log[history[2].audit_seq as usize - 1].record.action,
        "alias.remove"
    );
    assert_eq!(
        log[history[1].audit_seq as usize - 1].record.details,
        r#"{"from":"1.0","to":"2.0"}"#
    );

    let micro = TimeDelta::microseconds(1);
    let (w, p) = (&weldnet, &production);
    let at = |t| async move { r.alias_at(w, p, t).await.unwrap() };
    assert_eq!(at(history[0].at - micro).await, None, "before it existed");
    assert_eq!(at(history[0].at).await, Some(version("1.0")));
    assert_eq!(at(history[1].at - micro).await, Some(version("1.0")));
    assert_eq!(at(history[1].at).await, Some(version("2.0")));
    assert_eq!(at(history[2].at - micro).await, Some(version("2.0")));
    assert_eq!(at(history[2].at).await, None, "after removal");
    assert_eq!(
        r.alias_at(&weldnet, &alias("candidate"), history[2].at)
            .await
            .unwrap(),
        Some(version("2.0"))
    );
    let err = r
        .alias_at(&name("nothing"), &production, history[0].at)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn alias_to_a_missing_version_is_not_found_and_changes_nothing() {
    let fx = fixture_with_versions(&["1.0"]).await;
    set_alias(&fx.registry, "weldnet", "production", "1.0")
        .await
        .unwrap();
    let raw = fx.raw_db().await;
    let rows_before = snapshot_db(&raw).await;
    let files_before = snapshot_dir(&fx.artifacts());

    let err = set_alias(&fx.registry, "weldnet", "production", "9.9")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "version weldnet:9.9 not found");
    let err = set_alias(&fx.registry, "nothing", "production", "1.0")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "model \"nothing\" not found");

    assert_eq!(snapshot_db(&raw).await, rows_before);
    assert_eq!(snapshot_dir(&fx.artifacts()), files_before);
}

#[tokio::test]
async fn setting_an_alias_where_it_points_is_unchanged_without_an_audit_entry() {
    let fx = fixture_with_versions(&["1.0"]).await;
    set_alias(&fx.registry, "weldnet", "production", "1.0")
        .await
        .unwrap();
    let before = fx.registry.audit_log().await.unwrap();
    let out = fx
        .registry
        .set_alias(AliasChange {
            name: &name("weldnet"),
            alias: &alias("production"),
            version: &version("1.0"),
            actor: "someone",
            reason: "again",
        })
        .await
        .unwrap();
    assert_eq!(out, AliasOutcome::Unchanged);
    assert_eq!(fx.registry.audit_log().await.unwrap(), before);
    let history = fx
        .registry
        .alias_history(&name("weldnet"), None)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
}

#[tokio::test]
async fn removing_a_missing_alias_is_not_found() {
    let fx = fixture_with_versions(&["1.0"]).await;
    let err = fx
        .registry
        .remove_alias(&name("weldnet"), &alias("production"), "a", "b")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "alias weldnet@production not found");
    assert_eq!(fx.registry.audit_log().await.unwrap().len(), 1);
    let err = fx
        .registry
        .alias_history(&name("nothing"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
