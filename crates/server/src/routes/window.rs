//! The look-back windows a query names: `window=200` (the last 200 predictions) or
//! `window=5m` (the last five minutes). One grammar, exactly the one `openapi.json` states in
//! its `pattern`s ([`COUNT_OR_SPAN`], [`SPAN`]), so a generated client and this server agree on
//! every value: a count is 1 to 999,999,999; a span is one or more of a number (1 to 999,999)
//! and a unit (`s`, `m`, `h`, `d`, `w`), added up (`1h30m`); 32 characters at most.

use std::time::Duration;

use vigil_runtime::LiveWindow;

use crate::error::ApiError;

/// `openapi.json`'s pattern for a count or a span.
pub const COUNT_OR_SPAN: &str = "^([1-9][0-9]{0,8}|([1-9][0-9]{0,5}[smhdw])+)$";
/// `openapi.json`'s pattern for a span.
pub const SPAN: &str = "^([1-9][0-9]{0,5}[smhdw])+$";
/// The longest value either takes.
pub const MAX_LEN: usize = 32;

/// A count (`200`) or a span (`5m`).
pub fn count_or_span(raw: &str) -> Result<LiveWindow, ApiError> {
    if let Some(n) = count(raw) {
        return Ok(LiveWindow::Count(n));
    }
    span(raw).map(LiveWindow::Time).ok_or_else(|| {
        ApiError::invalid(format!(
            "window {raw:?} is neither a count of predictions (200) nor a span (30s, 5m, 1h, \
             7d, 2w, or sums such as 1h30m)"
        ))
    })
}

/// A span (`24h`, `7d`).
pub fn span_only(raw: &str) -> Result<Duration, ApiError> {
    span(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "window {raw:?} is not a span (30s, 5m, 1h, 7d, 2w, or sums such as 1h30m)"
        ))
    })
}

fn count(raw: &str) -> Option<usize> {
    let ok = (1..=9).contains(&raw.len())
        && !raw.starts_with('0')
        && raw.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| raw.parse().ok()).flatten()
}

fn span(raw: &str) -> Option<Duration> {
    if raw.is_empty() || raw.len() > MAX_LEN {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = raw;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=6).contains(&digits) || rest.starts_with('0') {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes().get(digits)? {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            b'w' => 604_800,
            _ => return None,
        };
        total += Duration::from_secs(n * unit);
        rest = &rest[digits + 1..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_spans_parse_as_the_pattern_says() {
        assert!(matches!(count_or_span("200"), Ok(LiveWindow::Count(200))));
        assert!(matches!(
            count_or_span("999999999"),
            Ok(LiveWindow::Count(999_999_999))
        ));
        let t = |raw| match count_or_span(raw) {
            Ok(LiveWindow::Time(d)) => d.as_secs(),
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(t("5m"), 300);
        assert_eq!(t("1h30m"), 5_400);
        assert_eq!(t("2w"), 1_209_600);
        assert_eq!(t("1s1s"), 2);
        assert_eq!(span_only("24h").unwrap().as_secs(), 86_400);
        // Outside the pattern: refused, whatever a looser parser would make of them.
        for raw in [
            "",
            "0",
            "007",
            "0s",
            "1000000000",
            "5 min",
            "5M",
            "1.5h",
            "-1",
            "h",
            "1h ",
            "all",
            "1000000s",
            "1y",
            "5min",
        ] {
            assert!(count_or_span(raw).is_err(), "{raw:?} was accepted");
        }
        assert!(span_only("200").is_err());
        let long = "1s".repeat(17);
        assert!(count_or_span(&long).is_err(), "longer than {MAX_LEN}");
        assert!(count_or_span(&long[2..]).is_ok());
    }

    #[test]
    fn the_openapi_document_states_the_same_grammar() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json parses");
        for (path, pattern) in [
            ("/v1/models/{name}/monitoring", COUNT_OR_SPAN),
            ("/v1/models/{name}/performance", SPAN),
        ] {
            let params = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .expect("parameters");
            let window = params
                .iter()
                .find(|p| p["name"] == "window")
                .expect("a window parameter");
            assert_eq!(window["schema"]["pattern"], pattern, "{path}");
            assert_eq!(window["schema"]["maxLength"], MAX_LEN, "{path}");
        }
    }
}
