//! Who may do what on a server: bearer tokens with roles.
//!
//! A token is a random secret (`vgl_` and 64 hex digits) handed to one person or one
//! service. The server's configuration holds only its SHA-256 digest, with a name (what the
//! audit log and the review verdicts record as the actor) and a [`Role`]. Roles are ordered:
//! each may do what the ones below it may.
//!
//! ```
//! use vigil_core::auth::{Role, Secret, TokenEntry, Tokens};
//!
//! let secret = Secret::generate().unwrap();
//! let tokens = Tokens::new(vec![TokenEntry {
//!     name: "alice".into(),
//!     role: Role::Inspector,
//!     sha256: secret.digest(),
//! }])
//! .unwrap();
//! let caller = tokens.authenticate(secret.expose()).unwrap();
//! assert_eq!(caller.name, "alice");
//! assert!(caller.role.allows(Role::Viewer) && !caller.role.allows(Role::Operator));
//! assert!(tokens.authenticate("vgl_guess").is_none());
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do. Ordered: a role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read: metrics, model lists, monitoring, drift, alerts, the dashboard and queue pages.
    Viewer,
    /// And review: claim items, give verdicts and feedback, see the images.
    Inspector,
    /// And deploy: move aliases (promote, roll back).
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Inspector, Role::Operator, Role::Admin];

    /// The role's name in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Inspector => "inspector",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Role, AuthError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                AuthError(format!(
                    "unknown role {s:?} (one of viewer, inspector, operator, admin)"
                ))
            })
    }
}

/// A configuration or parse error, for a person to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// What a secret starts with, so a leaked one is recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "vgl_";

/// Longest token name: the actor recorded in the audit log and on verdicts.
pub const MAX_NAME: usize = 80;

/// A token's secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// A new secret: 32 bytes from the operating system's generator.
    pub fn generate() -> Result<Secret, AuthError> {
        Ok(Secret(format!("{SECRET_PREFIX}{}", random_text()?)))
    }

    /// The secret itself, to hand to its holder once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest of the secret, in hex: what the configuration holds.
    pub fn digest(&self) -> String {
        hex::encode(sha256(&self.0))
    }
}

/// SHA-256 of a presented secret.
fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// SHA-256 of `secret`, in lowercase hex: what the store keeps of a token's secret or a
/// session's id.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(sha256(secret))
}

/// 32 random bytes from the operating system as 64 hex digits: a session id or a CSRF value.
pub fn random_text() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError(format!("no randomness from the operating system: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One configured token: who holds it, what it may do, and its secret's SHA-256 (64 hex
/// digits; `vigil auth token` makes the secret and prints the entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The holder's name: the actor the audit log and the review verdicts record.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
}

/// Who made a request: the name and role of the token it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

/// The configured tokens, checked: names are unique and usable as actors, digests are
/// unique and well-formed.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

impl Tokens {
    /// Checks `entries`; the first problem is the error, naming the entry.
    pub fn new(entries: Vec<TokenEntry>) -> Result<Tokens, AuthError> {
        let mut names = BTreeSet::new();
        let mut checked: Vec<([u8; 32], Caller)> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let which = format!("token {} ({:?})", i + 1, e.name);
            let name = e.name.trim();
            if name.is_empty() || name.chars().count() > MAX_NAME || name != e.name {
                return Err(AuthError(format!(
                    "{which}: the name must be 1 to {MAX_NAME} characters, without surrounding \
                     spaces"
                )));
            }
            if name.chars().any(char::is_control) {
                return Err(AuthError(format!(
                    "{which}: the name has control characters"
                )));
            }
            if !names.insert(e.name.clone()) {
                return Err(AuthError(format!(
                    "{which}: the name is used by another token (names are what the audit log \
                     records, so each must be one holder's)"
                )));
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(e.sha256.trim(), &mut digest).map_err(|_| {
                AuthError(format!(
                    "{which}: sha256 must be the 64 hex digits of the secret's SHA-256 \
                     (`vigil auth token` prints it), not the secret itself"
                ))
            })?;
            if checked.iter().any(|(d, _)| *d == digest) {
                return Err(AuthError(format!(
                    "{which}: the same secret is configured twice"
                )));
            }
            checked.push((
                digest,
                Caller {
                    name: e.name,
                    role: e.role,
                },
            ));
        }
        Ok(Tokens { entries: checked })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller whose token's secret has the SHA-256 `digest` (hex), if any.
    pub fn by_digest(&self, digest: &str) -> Option<&Caller> {
        let mut wanted = [0u8; 32];
        hex::decode_to_slice(digest, &mut wanted).ok()?;
        self.entries
            .iter()
            .find(|(d, _)| constant_time_eq(d, &wanted))
            .map(|(_, c)| c)
    }

    /// The caller whose token's secret is `secret`, if any. Every entry is compared, each
    /// in constant time, so the answer's timing says nothing about which digest came close.
    pub fn authenticate(&self, secret: &str) -> Option<&Caller> {
        let presented = sha256(secret);
        let mut found = None;
        for (digest, caller) in &self.entries {
            if constant_time_eq(digest, &presented) {
                found = Some(caller);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, secret: &Secret) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role,
            sha256: secret.digest(),
        }
    }

    #[test]
    fn roles_are_ordered_and_round_trip_their_names() {
        for (i, r) in Role::ALL.into_iter().enumerate() {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            for (j, other) in Role::ALL.into_iter().enumerate() {
                assert_eq!(r.allows(other), i >= j, "{r} allows {other}");
            }
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert!(
            err.0.contains("root") && err.0.contains("operator"),
            "{err}"
        );
    }

    #[test]
    fn each_secret_finds_its_own_holder_and_nothing_else_finds_anyone() {
        let (a, b) = (Secret::generate().unwrap(), Secret::generate().unwrap());
        assert_ne!(a, b);
        assert!(a.expose().starts_with(SECRET_PREFIX) && a.expose().len() == 68);
        let tokens = Tokens::new(vec![
            entry("alice", Role::Inspector, &a),
            entry("deploy-bot", Role::Operator, &b),
        ])
        .unwrap();
        assert_eq!(tokens.len(), 2);
        let alice = tokens.authenticate(a.expose()).unwrap();
        assert_eq!(
            (alice.name.as_str(), alice.role),
            ("alice", Role::Inspector)
        );
        assert_eq!(tokens.authenticate(b.expose()).unwrap().name, "deploy-bot");
        // The digest is not a secret that works, nor is a near miss or nothing.
        assert!(tokens.authenticate(&a.digest()).is_none());
        assert!(tokens.authenticate(&a.expose()[..67]).is_none());
        assert!(tokens.authenticate("").is_none());
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
        // By digest: what a session remembers of the token it was opened with.
        assert_eq!(tokens.by_digest(&a.digest()).unwrap().name, "alice");
        assert_eq!(sha256_hex(a.expose()), a.digest());
        assert!(tokens.by_digest(&sha256_hex("vgl_other")).is_none());
        assert!(tokens.by_digest("not hex").is_none());
        let (r1, r2) = (random_text().unwrap(), random_text().unwrap());
        assert_ne!(r1, r2);
        assert_eq!(r1.len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry() {
        let s = Secret::generate().unwrap();
        let t = Secret::generate().unwrap();
        let cases: Vec<(Vec<TokenEntry>, &str)> = vec![
            (vec![entry("", Role::Admin, &s)], "token 1"),
            (vec![entry(" alice", Role::Admin, &s)], "surrounding"),
            (vec![entry(&"x".repeat(81), Role::Admin, &s)], "1 to 80"),
            (vec![entry("a\u{7}", Role::Admin, &s)], "control"),
            (
                vec![
                    entry("alice", Role::Viewer, &s),
                    entry("alice", Role::Admin, &t),
                ],
                "token 2 (\"alice\"): the name is used",
            ),
            (
                vec![
                    entry("alice", Role::Viewer, &s),
                    entry("bob", Role::Admin, &s),
                ],
                "configured twice",
            ),
            (
                vec![TokenEntry {
                    name: "alice".into(),
                    role: Role::Viewer,
                    sha256: s.expose().to_owned(),
                }],
                "not the secret itself",
            ),
        ];
        for (entries, expected) in cases {
            let err = Tokens::new(entries).unwrap_err();
            assert!(err.0.contains(expected), "{err} lacks {expected:?}");
        }
    }
}
