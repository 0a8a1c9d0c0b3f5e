//! Domain names and identifiers: model names, versions, aliases, labels, digests and the
//! `NAME[:VERSION|@ALIAS]` reference syntax. Each is validated once, when it is made.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Why a name, version, alias, reference or digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseError {
    /// What was being parsed ("model name", "version", ...).
    pub what: &'static str,
    /// The offending text.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// The rules one kind of name follows.
struct Rules {
    /// Longest accepted length, in characters.
    max: usize,
    /// Whether the first character is acceptable, and why not.
    first: (fn(char) -> bool, &'static str),
    /// Whether every character is acceptable, and why not.
    each: (fn(char) -> bool, &'static str),
}

fn check(what: &'static str, s: &str, rules: &Rules) -> Result<(), ParseError> {
    let err = |reason| {
        Err(ParseError {
            what,
            value: s.to_owned(),
            reason,
        })
    };
    let len = s.chars().count();
    if len == 0 || len > rules.max {
        return err("must be 1 to 64 characters long");
    }
    if !s.chars().next().is_some_and(rules.first.0) {
        return err(rules.first.1);
    }
    if !s.chars().all(rules.each.0) {
        return err(rules.each.1);
    }
    Ok(())
}

/// Names of models and aliases: 1-64 characters, lower-case ASCII letters, digits, `-`, `_`,
/// `.`, starting with a letter or digit. They appear in paths, URLs and metric labels, so the
/// alphabet is deliberately small.
fn check_name(what: &'static str, s: &str) -> Result<(), ParseError> {
    let rules = Rules {
        max: 64,
        first: (
            |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
            "must start with a lower-case letter or a digit",
        ),
        each: (
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'),
            "may only hold lower-case letters, digits, '-', '_' and '.'",
        ),
    };
    check(what, s, &rules)
}

/// Versions: 1-64 characters of ASCII letters, digits, `.`, `-`, `_`, `+`, starting with a
/// letter or digit. Semantic versions fit; so do dates and build numbers.
fn check_version(what: &'static str, s: &str) -> Result<(), ParseError> {
    let rules = Rules {
        max: 64,
        first: (
            |c| c.is_ascii_alphanumeric(),
            "must start with a letter or a digit",
        ),
        each: (
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'),
            "may only hold letters, digits, '.', '-', '_' and '+'",
        ),
    };
    check(what, s, &rules)
}

/// Labels: 1-64 printable characters without surrounding white space or commas (labels are
/// given on the command line as a comma-separated list).
fn check_label(what: &'static str, s: &str) -> Result<(), ParseError> {
    let rules = Rules {
        max: 64,
        first: (|c| !c.is_whitespace(), "may not start with white space"),
        each: (
            |c| !c.is_control() && c != ',',
            "may not hold control characters or commas",
        ),
    };
    check(what, s, &rules)?;
    if s.trim_end() != s {
        return Err(ParseError {
            what,
            value: s.to_owned(),
            reason: "may not end with white space",
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                $check($what, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                $check($what, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A model's name, such as `weldnet`.
    ModelName,
    "model name",
    check_name
);
name_type!(
    /// An alias: a movable pointer from a name such as `production` to one version.
    AliasName,
    "alias",
    check_name
);
name_type!(
    /// An immutable version of a model, such as `1.2.0`.
    ModelVersion,
    "version",
    check_version
);
name_type!(
    /// A class label, such as `defect`.
    Label,
    "label",
    check_label
);

impl ModelVersion {
    /// `0`: the version of a model that has not been given one.
    pub fn initial() -> ModelVersion {
        ModelVersion("0".to_owned())
    }
}

impl AliasName {
    /// The alias served to live traffic.
    pub const PRODUCTION: &'static str = "production";
    /// The alias of a version that is being evaluated for promotion.
    pub const CANDIDATE: &'static str = "candidate";
    /// The alias of a version that sees a copy of live traffic but never answers.
    pub const SHADOW: &'static str = "shadow";
}

/// Which version of a model a reference points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionSelector {
    /// The most recently pushed version.
    Latest,
    /// One exact version.
    Version(ModelVersion),
    /// Whatever version an alias points at now.
    Alias(AliasName),
}

/// `NAME`, `NAME:VERSION` or `NAME@ALIAS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The model.
    pub name: ModelName,
    /// Which of its versions.
    pub selector: VersionSelector,
}

impl FromStr for ModelRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if let Some((name, alias)) = s.split_once('@') {
            return Ok(ModelRef {
                name: name.parse()?,
                selector: VersionSelector::Alias(alias.parse()?),
            });
        }
        if let Some((name, version)) = s.split_once(':') {
            return Ok(ModelRef {
                name: name.parse()?,
                selector: VersionSelector::Version(version.parse()?),
            });
        }
        Ok(ModelRef {
            name: s.parse()?,
            selector: VersionSelector::Latest,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            VersionSelector::Latest => write!(f, "{}", self.name),
            VersionSelector::Version(v) => write!(f, "{}:{v}", self.name),
            VersionSelector::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// A SHA-256 digest, shown and stored as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Wraps a finished hasher.
    pub fn from_hasher(h: Sha256) -> Self {
        Self(h.finalize().into())
    }

    /// Wraps 32 raw bytes (const, for fixed values).
    pub const fn from_array(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-digit lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }
}

impl FromStr for Sha256Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
        let err = |reason| ParseError {
            what: "sha256 digest",
            value: s.to_owned(),
            reason,
        };
        if hex_part.len() != 64 {
            return Err(err("must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| err("must be 64 hex digits"))?;
        Ok(Self(out))
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.to_hex()
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_refs_parse_all_three_forms() {
        let r: ModelRef = "weldnet".parse().unwrap();
        assert_eq!(r.selector, VersionSelector::Latest);
        let r: ModelRef = "weldnet:1.2.0".parse().unwrap();
        assert_eq!(
            r.selector,
            VersionSelector::Version("1.2.0".parse().unwrap())
        );
        let r: ModelRef = "weldnet@production".parse().unwrap();
        assert_eq!(
            r.selector,
            VersionSelector::Alias("production".parse().unwrap())
        );
        assert_eq!(r.to_string(), "weldnet@production");
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in ["", "Weld", "-x", "a/b", "../x", &"x".repeat(65)] {
            assert!(bad.parse::<ModelName>().is_err(), "{bad:?} accepted");
        }
        assert!("1.0/../x".parse::<ModelVersion>().is_err());
        assert!("de,fect".parse::<Label>().is_err());
        assert!(" defect".parse::<Label>().is_err());
        let e = "Weld".parse::<ModelName>().unwrap_err();
        assert!(e.to_string().contains("lower-case"), "{e}");
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Sha256Digest>().unwrap(), d);
        assert_eq!(format!("sha256:{d}").parse::<Sha256Digest>().unwrap(), d);
        assert!("abc".parse::<Sha256Digest>().is_err());
    }
}
