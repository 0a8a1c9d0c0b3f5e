//! Exit codes. One exhaustive match from [`ErrorKind`] to a code, so scripts can tell "not
//! found" from "conflict" from "the database is down" without parsing messages.

use std::process::ExitCode;

use vigil_core::ErrorKind;

/// Shown at the end of `vigil --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   a check failed (verification found a problem)
  2   usage error (bad flags or arguments)
  3   not found (model, version, alias, file)
  4   conflict (an immutable version pushed with different content, destination exists)
  5   invalid input (bad bundle, manifest, model file, signature, config)
  6   unavailable (database, artifact store or engine library cannot be used)
  70  internal error (a bug: please report it)
  75  overloaded (try again later)
  130 interrupted by Ctrl-C (vigil train still writes the best epoch's bundle)";

/// A check ran and found a problem (exit code 1). The problems were already printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// An error a command raises itself, with the kind that decides its exit code (a plain
/// `anyhow` error has none, and used to exit 1, the code of a failed check).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// What the caller can do about it.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

/// `Err(Failed { kind, message })` as an `anyhow` error, for `?` or `return`.
pub fn fail<T>(kind: ErrorKind, message: impl Into<String>) -> anyhow::Result<T> {
    Err(Failed {
        kind,
        message: message.into(),
    }
    .into())
}

/// The kind of an I/O error: a missing file is "not found", a file in the way a conflict,
/// unreadable content invalid input, anything else (permissions, a full disk) unavailable.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as Io;
    match e.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::AlreadyExists => ErrorKind::Conflict,
        Io::InvalidData | Io::InvalidInput | Io::UnexpectedEof => ErrorKind::Invalid,
        _ => ErrorKind::Unavailable,
    }
}

/// The exit code for a kind of error.
pub fn code_for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => 3,
        ErrorKind::Conflict => 4,
        ErrorKind::Invalid => 5,
        ErrorKind::Unavailable => 6,
        // No command meets these yet (they are the server's refusals); EX_NOPERM when one
        // calls a server with a token.
        ErrorKind::Unauthenticated | ErrorKind::Forbidden => 77,
        ErrorKind::Internal => 70,
        ErrorKind::Overloaded => 75,
    }
}

/// Finds the most specific known error in the chain and maps it.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.downcast_ref::<CheckFailed>().is_some() {
            return ExitCode::from(1);
        }
        let kind = if let Some(e) = cause.downcast_ref::<Failed>() {
            Some(e.kind)
        } else if let Some(e) = cause.downcast_ref::<vigil_store::Error>() {
            Some(e.kind())
        } else if let Some(e) = cause.downcast_ref::<vigil_core::bundle::Error>() {
            Some(e.kind())
        } else if let Some(e) = cause.downcast_ref::<vigil_engine::Error>() {
            Some(e.kind())
        } else if let Some(e) = cause.downcast_ref::<vigil_train::Error>() {
            Some(e.kind())
        } else if let Some(e) = cause.downcast_ref::<vigil_runtime::Error>() {
            Some(e.kind())
        } else if cause
            .downcast_ref::<crate::cmd::serve::ListenError>()
            .is_some()
        {
            Some(ErrorKind::Unavailable)
        } else if let Some(e) = cause.downcast_ref::<crate::cmd::drift::DriftCmdError>() {
            Some(e.kind())
        } else if let Some(e) = cause.downcast_ref::<vigil_core::monitor::MonitorError>() {
            Some(e.kind())
        } else if cause
            .downcast_ref::<vigil_core::auth::AuthError>()
            .is_some()
        {
            Some(ErrorKind::Invalid)
        } else if let Some(e) = cause.downcast_ref::<crate::config::ConfigError>() {
            Some(e.kind())
        } else if cause
            .downcast_ref::<vigil_core::types::ParseError>()
            .is_some()
        {
            Some(ErrorKind::Invalid)
        } else {
            cause.downcast_ref::<std::io::Error>().map(io_kind)
        };
        if let Some(kind) = kind {
            return ExitCode::from(code_for_kind(kind));
        }
    }
    ExitCode::FAILURE
}
