//! Ed25519 keys and the detached signature over a bundle's manifest.
//!
//! The manifest lists the SHA-256 of every other file, so signing its bytes signs the whole
//! bundle. The signature is a separate file (`signature`) that is not listed in the manifest,
//! so a bundle can be signed after it is made without changing its identity.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::types::Sha256Digest;

const SECRET_PREFIX: &str = "vigil-ed25519-secret:";
const PUBLIC_PREFIX: &str = "vigil-ed25519-public:";

/// A private signing key. Its `Debug` never shows the key.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({} [redacted])", self.public().key_id())
    }
}

/// A public verification key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            Error::Signature(format!("no randomness from the operating system: {e}"))
        })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Parses the text of a key file.
    pub fn parse(text: &str) -> Result<SecretKey> {
        let hex_part = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            Error::Signature(format!(
                "not a secret key file (expected `{SECRET_PREFIX}...`)"
            ))
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut seed)
            .map_err(|_| Error::Signature("the secret key is not 64 hex digits".into()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// The text of a key file.
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", hex::encode(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message` (a manifest's bytes).
    pub fn sign(&self, message: &[u8], signed_by: &str) -> Signature {
        let sig = self.0.sign(message);
        let public = self.public();
        Signature {
            algorithm: "ed25519".into(),
            key_id: public.key_id(),
            public_key: hex::encode(public.0.to_bytes()),
            signature: hex::encode(sig.to_bytes()),
            signed_by: signed_by.to_owned(),
            signed_at: Utc::now(),
        }
    }
}

impl PublicKey {
    /// Parses the text of a public key file.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let hex_part = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(|| {
            Error::Signature(format!(
                "not a public key file (expected `{PUBLIC_PREFIX}...`)"
            ))
        })?;
        Self::from_hex(hex_part)
    }

    fn from_hex(hex_part: &str) -> Result<PublicKey> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| Error::Signature("the public key is not 64 hex digits".into()))?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| Error::Signature("the public key is not a valid ed25519 point".into()))
    }

    /// The text of a public key file.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}\n", hex::encode(self.0.to_bytes()))
    }

    /// A short identifier: the first 16 hex digits of the key's SHA-256.
    pub fn key_id(&self) -> String {
        Sha256Digest::of(self.0.as_bytes()).to_hex()[..16].to_owned()
    }
}

/// The detached signature file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's key id.
    pub key_id: String,
    /// The signer's public key, hex.
    pub public_key: String,
    /// The signature over the manifest bytes, hex.
    pub signature: String,
    /// Who signed (informational; trust comes from the key).
    pub signed_by: String,
    /// When.
    pub signed_at: DateTime<Utc>,
}

/// The outcome of checking a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// There is no signature.
    Unsigned,
    /// The signature is valid for the manifest.
    Valid {
        /// The signing key's id.
        key_id: String,
        /// Whether the key is one of the trusted keys given.
        trusted: bool,
        /// Who signed.
        signed_by: String,
    },
}

impl Signature {
    /// Parses a signature file.
    pub fn parse(bytes: &[u8]) -> Result<Signature> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Signature(format!("the signature file is malformed: {e}")))
    }

    /// Renders the signature file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v =
            serde_json::to_vec_pretty(self).expect("signatures always serialise; this is a bug");
        v.push(b'\n');
        v
    }

    /// Verifies the signature over `message`; an invalid signature is an error.
    pub fn check(&self, message: &[u8], trusted: &[PublicKey]) -> Result<SignatureCheck> {
        if self.algorithm != "ed25519" {
            return Err(Error::Signature(format!(
                "unsupported algorithm {:?}",
                self.algorithm
            )));
        }
        let key = PublicKey::from_hex(&self.public_key)?;
        if key.key_id() != self.key_id {
            return Err(Error::Signature(
                "the key id does not match the public key".into(),
            ));
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig)
            .map_err(|_| Error::Signature("the signature is not 128 hex digits".into()))?;
        key.0
            .verify(message, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| {
                Error::Signature(format!(
                    "INVALID: the signature by key {} does not match the manifest (the manifest was changed after signing, or the signature is corrupt)",
                    self.key_id
                ))
            })?;
        Ok(SignatureCheck::Valid {
            key_id: self.key_id.clone(),
            trusted: trusted.contains(&key),
            signed_by: self.signed_by.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_message_does_not() {
        let key = SecretKey::generate().unwrap();
        let sig = key.sign(b"manifest", "alice");
        let parsed = Signature::parse(&sig.to_bytes()).unwrap();
        let check = parsed.check(b"manifest", &[key.public()]).unwrap();
        assert!(matches!(check, SignatureCheck::Valid { trusted: true, .. }));
        let other = SecretKey::generate().unwrap();
        let check = parsed.check(b"manifest", &[other.public()]).unwrap();
        assert!(matches!(
            check,
            SignatureCheck::Valid { trusted: false, .. }
        ));
        let err = parsed.check(b"manifesT", &[]).unwrap_err();
        assert!(err.to_string().contains("INVALID"), "{err}");
    }

    #[test]
    fn key_files_round_trip_and_secrets_are_not_printed() {
        let key = SecretKey::generate().unwrap();
        let back = SecretKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(
            PublicKey::parse(&key.public().to_file_text()).unwrap(),
            key.public()
        );
        let secret_hex = key.to_file_text();
        assert!(!format!("{key:?}").contains(secret_hex.trim().trim_start_matches(SECRET_PREFIX)));
        assert!(PublicKey::parse(&key.to_file_text()).is_err());
    }
}
