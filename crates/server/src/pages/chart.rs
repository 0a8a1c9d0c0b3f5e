//! The one chart of the pages: lines over time as inline SVG, drawn in Rust so that no
//! charting script is shipped. Every chart on a page goes through [`line_chart`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::esc;

/// One line: a name for the legend and its points, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// `(when, value)`.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// A chart to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// What the y axis measures, e.g. "statistic / threshold".
    pub y_label: String,
    /// A horizontal reference line and its caption (a threshold), if any.
    pub reference: Option<(f64, String)>,
    /// The lines.
    pub series: Vec<Series>,
}

/// Line colours, picked for contrast on the page's background and for each other.
const PALETTE: [&str; 8] = [
    "#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#e67700", "#495057",
];

const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// `chart` as an inline `<svg>` (scales to its container's width) with an HTML legend
/// beneath; a sentence instead when no series has a point.
pub fn line_chart(chart: &Chart) -> String {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut t0, mut t1) = (i64::MAX, i64::MIN);
    let mut y_max = chart.reference.as_ref().map_or(0.0, |r| r.0);
    let mut any = false;
    for (t, v) in points {
        any = true;
        t0 = t0.min(t.timestamp_millis());
        t1 = t1.max(t.timestamp_millis());
        if v.is_finite() {
            y_max = f64::max(y_max, *v);
        }
    }
    if !any {
        return r#"<p class="muted">Nothing to draw yet.</p>"#.to_owned();
    }
    let y_max = nice_ceiling(y_max);
    let span = (t1 - t0).max(1) as f64;
    let x =
        |t: &DateTime<Utc>| LEFT + (t.timestamp_millis() - t0) as f64 / span * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v.clamp(0.0, y_max) / y_max) * (H - TOP - BOTTOM);

    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{label}">"#,
        label = esc(&chart.y_label)
    );
    // Axes and four horizontal grid lines with their values.
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 4.0,
            yy + 3.5,
            short(v)
        );
    }
    if let Some((v, caption)) = &chart.reference {
        let yy = y(*v);
        let _ = write!(
            svg,
            r#"<line class="ref" x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}"/><text class="ref-label" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            W - RIGHT - 2.0,
            yy - 3.0,
            esc(caption)
        );
    }
    for (i, s) in chart.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| format!("{:.1},{:.1}", x(t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"><title>{}</title></polyline>"#,
            path.join(" "),
            esc(&s.name)
        );
        for p in &path {
            if let Some((cx, cy)) = p.split_once(',') {
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx}" cy="{cy}" r="2.2" fill="{colour}"/>"#
                );
            }
        }
    }
    let fmt = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let _ = write!(
        svg,
        r#"<text class="tick" x="{LEFT}" y="{}">{}</text><text class="tick" x="{}" y="{}" text-anchor="end">{}</text></svg>"#,
        H - 6.0,
        fmt(t0),
        W - RIGHT,
        H - 6.0,
        fmt(t1)
    );
    let mut legend = format!(
        r#"<div class="legend"><span class="muted">{}</span>"#,
        esc(&chart.y_label)
    );
    for (i, s) in chart.series.iter().enumerate() {
        let _ = write!(
            legend,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            PALETTE[i % PALETTE.len()],
            esc(&s.name)
        );
    }
    legend.push_str("</div>");
    format!(r#"<figure class="chart-box">{svg}{legend}</figure>"#)
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `v` (at least 1 for
/// nothing positive), so that quarter ticks are round numbers.
fn nice_ceiling(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v * 1.0001)
        .unwrap_or(10.0 * p)
}

/// A tick value in a few characters.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_one_polyline_per_series_and_escapes_names() {
        let t = Utc::now();
        let chart = Chart {
            y_label: "statistic / threshold".into(),
            reference: Some((1.0, "threshold".into())),
            series: vec![
                Series {
                    name: "embedding.mmd".into(),
                    points: vec![(t, 0.5), (t + chrono::Duration::minutes(5), 1.5)],
                },
                Series {
                    name: "<b>".into(),
                    points: vec![(t, 0.2)],
                },
            ],
        };
        let svg = line_chart(&chart);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains(r#"class="ref""#));
        let empty = Chart {
            series: vec![],
            ..chart
        };
        assert!(line_chart(&empty).contains("Nothing to draw"));
        assert_eq!(nice_ceiling(1.7), 2.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(2.0), 2.5);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
