//! The audit log's hash chain: pure functions, no storage.
//!
//! Each entry's hash covers its own fields and the previous entry's hash, so editing,
//! deleting, inserting or reordering an entry breaks the chain at that point. Cutting entries
//! off the end leaves a valid shorter chain; that is caught by comparing against a head hash
//! kept elsewhere (`vigil audit verify --expect-head`).

use serde::Serialize;

use crate::types::Sha256Digest;

/// The `prev_hash` of the first entry.
pub const GENESIS: Sha256Digest = Sha256Digest::from_array([0u8; 32]);

/// What an entry says happened, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Who did it (a user or service name).
    pub actor: String,
    /// What was done, dotted: `model.push`, `alias.set`, `alias.remove`, ...
    pub action: String,
    /// What it was done to: `weldnet:1.0.0`, `weldnet@production`, ...
    pub subject: String,
    /// Why, in the actor's words.
    pub reason: String,
    /// Machine-readable details as a JSON text (hashed exactly as stored).
    pub details: String,
}

/// One chained entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// When, as RFC 3339 UTC text with microseconds (hashed exactly as stored).
    pub at: String,
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev_hash: Sha256Digest,
    /// This entry's hash.
    pub hash: Sha256Digest,
}

/// The hash of an entry: SHA-256 over a JSON array of its fields in a fixed order. A JSON
/// array (not concatenation) keeps field boundaries unambiguous.
pub fn entry_hash(seq: i64, at: &str, record: &AuditRecord, prev: &Sha256Digest) -> Sha256Digest {
    let canonical = serde_json::json!([
        seq,
        at,
        record.actor,
        record.action,
        record.subject,
        record.reason,
        record.details,
        prev.to_hex()
    ]);
    Sha256Digest::of(canonical.to_string().as_bytes())
}

/// Formats a time the way entries store it.
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Builds the next entry after `prev` (or the first, when `prev` is `None`).
pub fn chain(prev: Option<&AuditEntry>, at: String, record: AuditRecord) -> AuditEntry {
    let (seq, prev_hash) = prev.map_or((1, GENESIS), |p| (p.seq + 1, p.hash));
    let hash = entry_hash(seq, &at, &record, &prev_hash);
    AuditEntry {
        seq,
        at,
        record,
        prev_hash,
        hash,
    }
}

/// One thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The entry's contents no longer match its hash: it was edited.
    Edited {
        /// The entry.
        seq: i64,
    },
    /// Sequence numbers jump: entries were deleted.
    Missing {
        /// First missing sequence number.
        from: i64,
        /// Last missing sequence number.
        to: i64,
    },
    /// The entry does not link to the one before it: entries were reordered, inserted or
    /// replaced.
    BrokenLink {
        /// The entry whose `prev_hash` is wrong.
        seq: i64,
    },
    /// Sequence numbers repeat or go backwards: entries were reordered or duplicated.
    OutOfOrder {
        /// The entry.
        seq: i64,
    },
    /// The expected head is not the last entry: entries were removed from the end, or the
    /// head was edited.
    HeadMismatch {
        /// The head hash that was expected.
        expected: Sha256Digest,
        /// The last entry's hash, if any.
        actual: Option<Sha256Digest>,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Edited { seq } => write!(
                f,
                "entry {seq} was edited: its contents no longer match its hash"
            ),
            Problem::Missing { from, to } if from == to => write!(f, "entry {from} was deleted"),
            Problem::Missing { from, to } => write!(f, "entries {from} to {to} were deleted"),
            Problem::BrokenLink { seq } => write!(
                f,
                "entry {seq} does not follow the entry before it: entries were reordered, inserted or replaced"
            ),
            Problem::OutOfOrder { seq } => write!(f, "entry {seq} is out of order or duplicated"),
            Problem::HeadMismatch { expected, actual } => match actual {
                Some(a) => write!(
                    f,
                    "the last entry's hash is {a}, not the expected head {expected}: entries were removed from the end or the log was rewritten"
                ),
                None => write!(f, "the log is empty but head {expected} was expected"),
            },
        }
    }
}

/// Checks a whole chain, in stored order, and lists every problem found (empty: intact).
pub fn verify(entries: &[AuditEntry], expected_head: Option<&Sha256Digest>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        if entry_hash(e.seq, &e.at, &e.record, &e.prev_hash) != e.hash {
            problems.push(Problem::Edited { seq: e.seq });
        }
        let (expected_seq, expected_prev) = prev.map_or((1, GENESIS), |p| (p.seq + 1, p.hash));
        if e.seq > expected_seq {
            problems.push(Problem::Missing {
                from: expected_seq,
                to: e.seq - 1,
            });
        } else if e.seq < expected_seq {
            problems.push(Problem::OutOfOrder { seq: e.seq });
        } else if e.prev_hash != expected_prev {
            problems.push(Problem::BrokenLink { seq: e.seq });
        }
        prev = Some(e);
    }
    if let Some(expected) = expected_head {
        let actual = entries.last().map(|e| e.hash);
        if actual.as_ref() != Some(expected) {
            problems.push(Problem::HeadMismatch {
                expected: *expected,
                actual,
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let rec = AuditRecord {
                actor: "alice".into(),
                action: "alias.set".into(),
                subject: format!("weldnet@production#{i}"),
                reason: "test".into(),
                details: "{}".into(),
            };
            let e = chain(out.last(), format!("2026-11-25T10:00:0{i}.000000Z"), rec);
            out.push(e);
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        let l = log(5);
        assert!(verify(&l, Some(&l[4].hash)).is_empty());
    }

    #[test]
    fn an_edit_is_found_at_its_entry() {
        let mut l = log(5);
        l[2].record.reason = "changed".into();
        assert_eq!(verify(&l, None), vec![Problem::Edited { seq: 3 }]);
    }

    #[test]
    fn a_deletion_is_found() {
        let mut l = log(5);
        l.remove(1);
        assert_eq!(verify(&l, None), vec![Problem::Missing { from: 2, to: 2 }]);
    }

    #[test]
    fn a_reorder_is_found() {
        let mut l = log(5);
        l.swap(1, 2);
        let p = verify(&l, None);
        assert!(
            p.contains(&Problem::Missing { from: 2, to: 2 })
                || p.contains(&Problem::OutOfOrder { seq: 2 }),
            "{p:?}"
        );
        assert!(p.contains(&Problem::OutOfOrder { seq: 2 }), "{p:?}");
    }

    #[test]
    fn a_rewritten_link_is_found() {
        // Entry 3 replaced by a self-consistent entry that does not chain to entry 2.
        let mut l = log(5);
        let fake_prev = l[0].clone();
        let mut fake = chain(Some(&fake_prev), l[2].at.clone(), l[2].record.clone());
        fake.seq = 3;
        fake.hash = entry_hash(3, &fake.at, &fake.record, &fake.prev_hash);
        l[2] = fake;
        let p = verify(&l, None);
        assert!(p.contains(&Problem::BrokenLink { seq: 3 }), "{p:?}");
    }

    #[test]
    fn truncation_is_found_only_against_a_head() {
        let mut l = log(5);
        let head = l[4].hash;
        l.truncate(3);
        assert!(verify(&l, None).is_empty());
        assert!(matches!(
            verify(&l, Some(&head))[..],
            [Problem::HeadMismatch { .. }]
        ));
    }
}
