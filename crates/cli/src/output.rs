//! Small helpers for printing things to people: sizes, times, pipelines, decisions, tables.

use vigil_core::bundle::{DecisionRule, Step};

/// `1.2 MiB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `prefix + s` when `s` is not empty.
pub fn opt(prefix: &str, s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("{prefix}{s}")
    }
}

/// A pipeline on one line: `decode → grey → resize 128x128 bilinear → ...`.
pub fn steps(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Decode => "decode".to_owned(),
            Step::Grey => "grey".to_owned(),
            Step::Rgb => "rgb".to_owned(),
            Step::CenterCrop { width, height } => format!("center_crop {width}x{height}"),
            Step::Crop {
                x,
                y,
                width,
                height,
            } => format!("crop {width}x{height} at ({x}, {y})"),
            Step::Pad {
                width,
                height,
                value,
            } => format!("pad to {width}x{height} with {value}"),
            Step::Tile { size, stride } => format!("tile {size}x{size} stride {stride}"),
            Step::Window { center, width } => format!("window center {center} width {width}"),
            Step::PercentileWindow { low, high } => {
                format!("percentile_window {low}%..{high}%")
            }
            Step::Resize {
                width,
                height,
                filter,
            } => format!("resize {width}x{height} {filter:?}").to_lowercase(),
            Step::Scale { factor } => format!("scale {factor}"),
            Step::Normalize { mean, std } => format!("normalize mean {mean:?} std {std:?}"),
            Step::Standardize { .. } => "standardize".to_owned(),
            Step::Layout { order } => format!("layout {order:?}").to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// A decision rule on one line.
pub fn decision(d: &DecisionRule) -> String {
    match d {
        DecisionRule::Argmax { review_below: None } => "argmax".into(),
        DecisionRule::Argmax {
            review_below: Some(b),
        } => format!("argmax; review when confidence < {b}"),
        DecisionRule::Threshold {
            positive,
            threshold,
            review_band,
        } => {
            let band = review_band
                .map(|[lo, hi]| format!("; review when p in [{lo}, {hi}]"))
                .unwrap_or_default();
            format!("{positive} when p({positive}) >= {threshold}{band}")
        }
    }
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
