//! Content-addressed blobs in an [`ObjectStore`]: `sha256/<first 2 hex>/<hex>`.
//!
//! This module owns blob naming, create-only writes and re-hashing on read. It works through
//! the `ObjectStore` trait only, so S3 can replace the local folder without touching callers;
//! it must not know about the database or decide when a blob is garbage.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use vigil_core::types::Sha256Digest;

use crate::{Error, Result};

/// Blobs named by their SHA-256.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    store: Arc<dyn ObjectStore>,
}

/// Where a blob lives: two hex digits of fan-out keep folders small on local disks.
fn location(digest: &Sha256Digest) -> Path {
    let hex = digest.to_hex();
    Path::from(format!("sha256/{}/{hex}", &hex[..2]))
}

fn blob_err(path: &Path) -> impl FnOnce(object_store::Error) -> Error {
    let path = path.to_string();
    move |source| Error::Blob { path, source }
}

impl BlobStore {
    pub(crate) fn new(store: Arc<dyn ObjectStore>) -> Self {
        BlobStore { store }
    }

    /// Stores `data` under `digest` unless a blob is already there. Returns whether this call
    /// created it. The caller has checked that `data` hashes to `digest`.
    pub(crate) async fn put_if_absent(&self, digest: &Sha256Digest, data: &[u8]) -> Result<bool> {
        let path = location(digest);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        match self.store.put_opts(&path, payload, opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(blob_err(&path)(e)),
        }
    }

    /// Whether a blob is stored under `digest`.
    pub(crate) async fn exists(&self, digest: &Sha256Digest) -> Result<bool> {
        let path = location(digest);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(blob_err(&path)(e)),
        }
    }

    /// Reads a blob and checks that it still hashes to its name.
    pub(crate) async fn get(&self, digest: &Sha256Digest) -> Result<Vec<u8>> {
        let path = location(digest);
        let data = self
            .store
            .get(&path)
            .await
            .map_err(blob_err(&path))?
            .bytes()
            .await
            .map_err(blob_err(&path))?;
        let actual = Sha256Digest::of(&data);
        if actual != *digest {
            return Err(Error::BlobCorrupt {
                digest: *digest,
                actual,
            });
        }
        Ok(data.to_vec())
    }

    /// Deletes a blob; one that is already gone is not an error.
    pub(crate) async fn delete(&self, digest: &Sha256Digest) -> Result<()> {
        let path = location(digest);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(blob_err(&path)(e)),
        }
    }
}
