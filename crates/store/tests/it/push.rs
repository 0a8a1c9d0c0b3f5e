//! Pushing, listing, resolving and fetching versions.

use vigil_core::ErrorKind;
use vigil_core::types::{ModelRef, Sha256Digest};
use vigil_store::{Error, PushOutcome};

use crate::common::{Fixture, bundle, name, push, snapshot_db, snapshot_dir, version};

#[tokio::test]
async fn push_list_show_fetch_round_trip() {
    let fx = Fixture::new().await;
    let r = &fx.registry;
    let v1 = bundle("weldnet", "1.0.0", b"weights one").signed(b"a signature");
    let v2 = bundle("weldnet", "1.1.0", b"weights two");
    let other = bundle("anomaly", "0.1", b"other weights");

    let PushOutcome::Created(info) = push(r, &v1).await.unwrap() else {
        panic!("first push must create");
    };
    assert_eq!(info.name, name("weldnet"));
    assert_eq!(info.version, version("1.0.0"));
    assert_eq!(info.digest, v1.digest());
    assert_eq!(info.pushed_by, "alice");
    assert!(info.signed);
    assert_eq!(info.created_at, v1.manifest.model.created_at);
    let paths: Vec<_> = info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["labels.txt", "model.onnx"]);
    let model = info.files.iter().find(|f| f.path == "model.onnx").unwrap();
    assert_eq!(model.digest, Sha256Digest::of(b"weights one"));
    assert_eq!(model.size, 11);

    assert!(matches!(
        push(r, &v2).await.unwrap(),
        PushOutcome::Created(_)
    ));
    assert!(matches!(
        push(r, &other).await.unwrap(),
        PushOutcome::Created(_)
    ));

    let models = r.list_models().await.unwrap();
    let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["anomaly", "weldnet"], "sorted by name");
    assert_eq!(models[1].versions, 2);
    assert_eq!(models[1].latest, Some(version("1.1.0")));
    assert!(models[1].aliases.is_empty());

    let versions = r.list_versions(&name("weldnet")).await.unwrap();
    let listed: Vec<_> = versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(listed, ["1.0.0", "1.1.0"], "push order");
    assert_eq!(versions[0], info, "listing shows what the push returned");
    assert!(!versions[1].signed);

    let latest = r
        .resolve(&"weldnet".parse::<ModelRef>().unwrap())
        .await
        .unwrap();
    assert_eq!(latest.version, version("1.1.0"));
    let exact = r.resolve(&"weldnet:1.0.0".parse().unwrap()).await.unwrap();
    assert_eq!(exact, info);

    let fetched = r.fetch(&name("weldnet"), &version("1.0.0")).await.unwrap();
    assert_eq!(fetched.info, info);
    assert_eq!(fetched.manifest_bytes, v1.manifest_bytes);
    assert_eq!(fetched.signature.as_deref(), Some(&b"a signature"[..]));
    assert_eq!(fetched.files, v1.files);
    let fetched = r.fetch(&name("weldnet"), &version("1.1.0")).await.unwrap();
    assert_eq!(fetched.signature, None);
    assert_eq!(fetched.files, v2.files);
}

#[tokio::test]
async fn shared_files_are_stored_once() {
    let fx = Fixture::new().await;
    push(&fx.registry, &bundle("weldnet", "1", b"a"))
        .await
        .unwrap();
    push(&fx.registry, &bundle("weldnet", "2", b"b"))
        .await
        .unwrap();
    let blobs = snapshot_dir(&fx.artifacts())
        .into_values()
        .filter(Option::is_some)
        .count();
    // Two manifests, two models, one shared labels.txt.
    assert_eq!(blobs, 5);
}

#[tokio::test]
async fn identical_repush_is_unchanged_without_an_audit_entry() {
    let fx = Fixture::new().await;
    let b = bundle("weldnet", "1.0.0", b"weights");
    let PushOutcome::Created(created) = push(&fx.registry, &b).await.unwrap() else {
        panic!("first push must create");
    };
    let before = fx.registry.audit_log().await.unwrap();
    let PushOutcome::Unchanged(again) = push(&fx.registry, &b).await.unwrap() else {
        panic!("identical push must be unchanged");
    };
    assert_eq!(again, created);
    assert_eq!(fx.registry.audit_log().await.unwrap(), before);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].record.action, "model.push");
    assert_eq!(before[0].record.subject, "weldnet:1.0.0");
    assert!(before[0].record.details.contains(&b.digest().to_hex()));
}

#[tokio::test]
async fn conflicting_push_is_refused_and_changes_nothing() {
    let fx = Fixture::new().await;
    let original = bundle("weldnet", "1.0.0", b"weights");
    push(&fx.registry, &original).await.unwrap();
    let raw = fx.raw_db().await;
    let rows_before = snapshot_db(&raw).await;
    let files_before = snapshot_dir(&fx.artifacts());

    let changed = bundle("weldnet", "1.0.0", b"retrained weights").signed(b"sig");
    let err = push(&fx.registry, &changed).await.unwrap_err();
    match &err {
        Error::VersionConflict {
            name: n,
            version: v,
            existing,
            pushed,
        } => {
            assert_eq!(n, &name("weldnet"));
            assert_eq!(v, &version("1.0.0"));
            assert_eq!(*existing, original.digest());
            assert_eq!(*pushed, changed.digest());
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let msg = err.to_string();
    assert!(
        msg.contains("immutable") && msg.contains("bump the version"),
        "{msg}"
    );

    assert_eq!(snapshot_db(&raw).await, rows_before);
    assert_eq!(snapshot_dir(&fx.artifacts()), files_before);
}

#[tokio::test]
async fn concurrent_conflicting_pushes_leave_only_the_winner() {
    let fx = Fixture::new().await;
    let other = fx.another_handle().await;
    for round in 0..5 {
        let v = format!("1.{round}");
        let a = bundle("weldnet", &v, format!("a{round}").as_bytes());
        let b = bundle("weldnet", &v, format!("b{round}").as_bytes());
        let (ra, rb) = tokio::join!(push(&fx.registry, &a), push(&other, &b));
        let winner = match (ra, rb) {
            (Ok(PushOutcome::Created(_)), Err(Error::VersionConflict { .. })) => &a,
            (Err(Error::VersionConflict { .. }), Ok(PushOutcome::Created(_))) => &b,
            (ra, rb) => panic!("expected one winner and one conflict, got {ra:?} / {rb:?}"),
        };
        let stored = fx
            .registry
            .fetch(&name("weldnet"), &version(&v))
            .await
            .unwrap();
        assert_eq!(stored.files, winner.files);
    }
    // Only the winners' blobs remain: five manifests, five models, one shared labels.txt,
    // and no fan-out folder emptied by a loser's clean-up.
    let snapshot = snapshot_dir(&fx.artifacts());
    let blobs: Vec<&String> = snapshot
        .iter()
        .filter(|(_, c)| c.is_some())
        .map(|(p, _)| p)
        .collect();
    assert_eq!(blobs.len(), 11);
    for (folder, _) in snapshot.iter().filter(|(_, c)| c.is_none()) {
        assert!(
            blobs.iter().any(|b| b.starts_with(folder.as_str())),
            "{folder} is empty"
        );
    }
    let log = fx.registry.audit_log().await.unwrap();
    assert_eq!(log.len(), 5);
    assert!(vigil_core::audit::verify(&log, None).is_empty());
}

#[tokio::test]
async fn push_with_missing_changed_or_extra_files_is_invalid() {
    let fx = Fixture::new().await;
    let good = bundle("weldnet", "1.0.0", b"weights");

    let mut missing = good.clone();
    missing.files.remove("model.onnx");
    let mut changed = good.clone();
    changed.files.insert("model.onnx".into(), b"other".to_vec());
    let mut extra = good.clone();
    extra.files.insert("notes.txt".into(), b"hi".to_vec());

    for (bad, needle) in [
        (&missing, "missing"),
        (&changed, "checksum"),
        (&extra, "not listed"),
    ] {
        let err = push(&fx.registry, bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(snapshot_dir(&fx.artifacts()).is_empty());
    assert!(fx.registry.list_models().await.unwrap().is_empty());
    assert!(fx.registry.audit_log().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_models_versions_and_aliases_are_not_found() {
    let fx = Fixture::new().await;
    let r = &fx.registry;
    push(r, &bundle("weldnet", "1.0.0", b"w")).await.unwrap();

    let cases = [
        ("nothing", "model \"nothing\" not found"),
        ("weldnet:2.0", "version weldnet:2.0 not found"),
        ("weldnet@production", "alias weldnet@production not found"),
    ];
    for (reference, message) in cases {
        let err = r.resolve(&reference.parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), message);
    }
    let err = r.list_versions(&name("nothing")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = r.fetch(&name("weldnet"), &version("9")).await.unwrap_err();
    assert_eq!(err.to_string(), "version weldnet:9 not found");
}

#[tokio::test]
async fn data_survives_reopening() {
    let fx = Fixture::new().await;
    let b = bundle("weldnet", "1.0.0", b"w");
    push(&fx.registry, &b).await.unwrap();
    let reopened = fx.another_handle().await;
    let fetched = reopened.fetch(b.name(), b.version()).await.unwrap();
    assert_eq!(fetched.files, b.files);
    assert_eq!(reopened.audit_log().await.unwrap().len(), 1);
}
