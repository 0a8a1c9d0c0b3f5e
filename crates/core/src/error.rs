//! The shared error vocabulary: what a caller can do about an error.
//!
//! Every crate's `Error` maps itself onto an [`ErrorKind`]; the HTTP layer and the CLI's exit
//! codes each map `ErrorKind` in one exhaustive match, so a new kind cannot be forgotten.

use std::fmt;

/// What the caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The thing asked for does not exist (model, version, alias, file).
    NotFound,
    /// The input is malformed or breaks a rule; retrying the same input fails again.
    Invalid,
    /// The input clashes with existing state (an immutable version pushed with another digest).
    Conflict,
    /// Too much work in flight; retry later.
    Overloaded,
    /// A dependency (database, artifact store, engine library) is unreachable or broken.
    Unavailable,
    /// The request carries no credentials, or ones that are not valid: present a token.
    Unauthenticated,
    /// The caller is known but may not do this: ask for a token with a higher role.
    Forbidden,
    /// A broken internal invariant: a bug.
    Internal,
}

impl ErrorKind {
    /// A stable lower-case name, used in JSON error bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
