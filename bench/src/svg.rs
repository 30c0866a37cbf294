//! The chart of a report: one horizontal bar per figure showing Rafter's
//! value as a multiple of etcd's on a log scale (0.1× … 10×), green where
//! Rafter is better, red where a target is missed, with both absolute
//! values written beside it. Hand-written SVG: no plotting dependency.

use std::fmt::Write as _;

use crate::report::Comparison;
use crate::report::Report;
use crate::report::num;

const ROW: f64 = 22.0;
const LABEL_W: f64 = 300.0;
const PLOT_W: f64 = 420.0;
const VALUES_W: f64 = 300.0;
const TOP: f64 = 56.0;

/// x position of a ratio on the log axis.
fn x_of(ratio: f64) -> f64 {
    let r = ratio.clamp(0.1, 10.0);
    LABEL_W + (r.log10() + 1.0) / 2.0 * PLOT_W
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Whether Rafter does better than etcd on this figure.
fn rafter_better(c: &Comparison, ratio: f64) -> bool {
    if c.unit == "ops/s" {
        ratio > 1.0
    } else {
        ratio < 1.0
    }
}

/// The report's comparisons as an SVG document.
pub fn chart(report: &Report) -> String {
    let rows: Vec<&Comparison> = report.comparisons.iter().collect();
    let width = LABEL_W + PLOT_W + VALUES_W;
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="20" font-size="15" font-weight="bold">rafter bench kv: Rafter as a multiple of etcd (log scale), 3 members each, same machine</text>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">green: Rafter better · grey: Rafter worse · red: target missed · values: etcd / Rafter</text>"##
    );
    for tick in [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0] {
        let x = x_of(tick);
        let stroke = if tick == 1.0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{stroke}"/>"##,
            TOP - 6.0,
            TOP + ROW * rows.len() as f64
        );
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{tick}×</text>"##,
            TOP + ROW * rows.len() as f64 + 16.0
        );
    }
    for (i, c) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LABEL_W - 8.0,
            y + 15.0,
            escape(&c.figure)
        );
        if let Some(ratio) = c.ratio.filter(|r| r.is_finite() && *r > 0.0) {
            let (x0, x1) = (x_of(1.0), x_of(ratio));
            let color = match (c.met, rafter_better(c, ratio)) {
                (Some(false), _) => "#d62728",
                (_, true) => "#2ca02c",
                (_, false) => "#999999",
            };
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"##,
                x0.min(x1),
                y + 4.0,
                (x1 - x0).abs().max(1.0),
                ROW - 8.0
            );
        }
        let met = match c.met {
            Some(true) => " ✓",
            Some(false) => " ✗",
            None => "",
        };
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}">{} / {} {}{}</text>"##,
            LABEL_W + PLOT_W + 10.0,
            y + 15.0,
            num(c.etcd),
            num(c.rafter),
            escape(&c.unit),
            met
        );
    }
    s.push_str("</svg>\n");
    s
}
