//! Small hand-written SVG plots and HTML text helpers shared by the standalone reports
//! (evaluation, drift): no scripts, no external resources, every text escaped.

pub(crate) const BLUE: &str = "#2563eb";
pub(crate) const ORANGE: &str = "#ea580c";
pub(crate) const GREEN: &str = "#16a34a";
pub(crate) const GREY: &str = "#9ca3af";
pub(crate) const RED: &str = "#dc2626";

/// Escapes `s` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A probability or score with three decimals.
pub(crate) fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "—".to_owned()
    }
}

/// A rate as a percentage with one decimal.
pub(crate) fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", x * 100.0)
    } else {
        "—".to_owned()
    }
}

/// One axis of a plot.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub(crate) label: String,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) step: f64,
    pub(crate) ticks: Vec<f64>,
    pub(crate) decimals: usize,
}

impl Axis {
    /// `[lo, hi]` with about five round ticks, the step at least `min_step`.
    pub(crate) fn new(label: &str, lo: f64, hi: f64, min_step: f64) -> Self {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        let raw = (hi - lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag)
            .max(min_step);
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10().floor()) as usize
        };
        let first = (lo / step - 1e-9).ceil();
        let ticks: Vec<f64> = (0..50)
            .map(|i| (first + f64::from(i)) * step)
            .take_while(|t| *t <= hi + step * 1e-9)
            .collect();
        Self {
            label: label.to_owned(),
            lo,
            hi,
            step,
            ticks,
            decimals,
        }
    }

    /// `[0, 1]` with ticks every 0.2.
    pub(crate) fn unit(label: &str) -> Self {
        Self::new(label, 0.0, 1.0, 0.0)
    }
}

/// Plot geometry, in SVG user units.
pub(crate) const W: f64 = 400.0;
pub(crate) const H: f64 = 320.0;
pub(crate) const ML: f64 = 56.0;
pub(crate) const MR: f64 = 16.0;
pub(crate) const MT: f64 = 48.0;
pub(crate) const MB: f64 = 46.0;

/// A small SVG plot drawn in data coordinates.
#[derive(Debug)]
pub(crate) struct Plot {
    pub(crate) title: String,
    pub(crate) x: Axis,
    pub(crate) y: Axis,
    pub(crate) body: String,
    pub(crate) legend: Vec<(String, bool, String)>,
}

impl Plot {
    pub(crate) fn new(title: &str, x: Axis, y: Axis) -> Self {
        Self {
            title: title.to_owned(),
            x,
            y,
            body: String::new(),
            legend: Vec::new(),
        }
    }

    pub(crate) fn px(&self, x: f64) -> f64 {
        let x = x.clamp(self.x.lo, self.x.hi);
        ML + (x - self.x.lo) / (self.x.hi - self.x.lo) * (W - ML - MR)
    }

    pub(crate) fn py(&self, y: f64) -> f64 {
        let y = y.clamp(self.y.lo, self.y.hi);
        H - MB - (y - self.y.lo) / (self.y.hi - self.y.lo) * (H - MT - MB)
    }

    pub(crate) fn legend_item(&mut self, colour: &str, dashed: bool, label: &str) {
        self.legend.push((colour.to_owned(), dashed, escape(label)));
    }

    /// A polyline through `pts`.
    pub(crate) fn line(
        &mut self,
        pts: &[(f64, f64)],
        colour: &str,
        dashed: bool,
        label: Option<&str>,
    ) {
        if pts.is_empty() {
            return;
        }
        let coords: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        self.body.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{}\"{}/>\n",
            coords.join(" "),
            if dashed { 1.2 } else { 2.0 },
            if dashed {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            }
        ));
        if let Some(l) = label {
            self.legend_item(colour, dashed, l);
        }
    }

    /// Small circles at `pts`.
    pub(crate) fn dots(&mut self, pts: &[(f64, f64)], colour: &str, label: Option<&str>) {
        for &(x, y) in pts {
            self.body.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\n",
                self.px(x),
                self.py(y)
            ));
        }
        if let Some(l) = label {
            self.legend_item(colour, false, l);
        }
    }

    /// A highlighted point with an annotation.
    pub(crate) fn marker(&mut self, x: f64, y: f64, colour: &str, text: &str) {
        let (cx, cy) = (self.px(x), self.py(y));
        // Put the annotation where it fits: right of the point unless near the right edge.
        let (tx, anchor) = if cx > W - MR - 90.0 {
            (cx - 9.0, "end")
        } else {
            (cx + 9.0, "start")
        };
        let ty = if cy > H - MB - 20.0 {
            cy - 8.0
        } else {
            cy + 16.0
        };
        self.body.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5.5\" fill=\"{colour}\" stroke=\"#fff\" \
             stroke-width=\"1.5\"><title>{}</title></circle>\n\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"{anchor}\" fill=\"{colour}\">{}</text>\n",
            escape(text),
            escape(text)
        ));
        self.legend_item(colour, false, "operating point");
    }

    /// A bar from `x0` to `x1`, from the x axis up to `y`, with a hover title.
    pub(crate) fn bar(&mut self, x0: f64, x1: f64, y: f64, colour: &str, tip: &str) {
        let (l, r) = (self.px(x0), self.px(x1));
        let (top, base) = (self.py(y), self.py(self.y.lo));
        self.body.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" \
             fill-opacity=\"0.25\" stroke=\"{colour}\" stroke-opacity=\"0.6\"><title>{}</title></rect>\n",
            l + 1.0,
            (r - l - 2.0).max(0.0),
            (base - top).max(0.0),
            escape(tip)
        ));
    }

    /// The SVG: frame, grid, ticks, axis labels, title, legend and the drawn body.
    pub(crate) fn render(&self) -> String {
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" \
             height=\"{H}\" role=\"img\" aria-label=\"{t}\">\n<title>{t}</title>\n\
             <text class=\"title\" x=\"{ML}\" y=\"16\">{t}</text>\n",
            t = escape(&self.title)
        );
        let (left, right, top, bottom) = (ML, W - MR, MT, H - MB);
        for &t in &self.x.ticks {
            let x = self.px(t);
            s.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#eef0f3\"/>\n\
                 <line x1=\"{x:.1}\" y1=\"{bottom}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#6b7280\"/>\n\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.*}</text>\n",
                bottom + 4.0,
                bottom + 16.0,
                self.x.decimals,
                t
            ));
        }
        for &t in &self.y.ticks {
            let y = self.py(t);
            s.push_str(&format!(
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\" stroke=\"#eef0f3\"/>\n\
                 <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{left}\" y2=\"{y:.1}\" stroke=\"#6b7280\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.*}</text>\n",
                left - 4.0,
                left - 7.0,
                y + 3.5,
                self.y.decimals,
                t
            ));
        }
        s.push_str(&format!(
            "<rect x=\"{left}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
             stroke=\"#9ca3af\"/>\n",
            right - left,
            bottom - top
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
            (left + right) / 2.0,
            H - 8.0,
            escape(&self.x.label),
            (top + bottom) / 2.0,
            escape(&self.y.label)
        ));
        s.push_str(&self.body);
        let mut lx = ML;
        for (colour, dashed, label) in &self.legend {
            s.push_str(&format!(
                "<line x1=\"{lx:.1}\" y1=\"33\" x2=\"{:.1}\" y2=\"33\" stroke=\"{colour}\" \
                 stroke-width=\"{}\"{}/>\n<text x=\"{:.1}\" y=\"37\">{label}</text>\n",
                lx + 16.0,
                if *dashed { 1.2 } else { 3.0 },
                if *dashed {
                    " stroke-dasharray=\"5 4\""
                } else {
                    ""
                },
                lx + 20.0
            ));
            lx += 30.0 + 6.6 * label.chars().count() as f64;
        }
        s.push_str("</svg>\n");
        s
    }
}
