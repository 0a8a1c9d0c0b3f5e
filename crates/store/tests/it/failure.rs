//! Damage and misconfiguration: corrupt blobs, corrupt databases, unusable data directories.

use vigil_core::ErrorKind;
use vigil_store::{Error, OpenOptions};

use crate::common::{Fixture, bundle, push};

#[tokio::test]
async fn a_modified_blob_is_refused_on_fetch() {
    let fx = Fixture::new().await;
    let b = bundle("weldnet", "1.0", b"the real weights");
    let info = push(&fx.registry, &b).await.unwrap().info().clone();
    let model = info.files.iter().find(|f| f.path == "model.onnx").unwrap();
    let hex = model.digest.to_hex();
    let path = fx.artifacts().join("sha256").join(&hex[..2]).join(&hex);
    std::fs::write(&path, b"tampered weights").unwrap();

    let err = fx.registry.fetch(b.name(), b.version()).await.unwrap_err();
    match &err {
        Error::BlobCorrupt { digest, actual } => {
            assert_eq!(*digest, model.digest);
            assert_eq!(
                *actual,
                vigil_core::types::Sha256Digest::of(b"tampered weights")
            );
        }
        other => panic!("expected BlobCorrupt, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn a_garbage_database_file_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(vigil_store::DB_FILE), vec![0xAB; 8192]).unwrap();
    let err = vigil_store::open(&OpenOptions::new(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let msg = err.to_string();
    assert!(msg.contains("is not a valid Vigil database"), "{msg}");
    assert!(msg.contains("restore it from a backup"), "{msg}");
}

#[tokio::test]
async fn an_unusable_data_dir_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, b"not a folder").unwrap();
    let data_dir = file.join("sub");
    let err = vigil_store::open(&OpenOptions::new(&data_dir))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DataDir { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let msg = err.to_string();
    assert!(msg.contains(&*data_dir.to_string_lossy()), "{msg}");
    assert!(msg.contains("VIGIL__STORE__DATA_DIR"), "{msg}");
}
