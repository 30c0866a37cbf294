//! The latency-over-time plot of a run, as Jepsen draws it: one point per
//! client operation at its invoke time, its latency on a logarithmic axis,
//! coloured by outcome (ok green, fail red, info orange; an `info` or an
//! operation that never completed is drawn at the time it was given up, or
//! at the top when it never ended), with every fault's window shaded and
//! labelled.
//!
//! Hand-written SVG: a few hundred lines of text output do not justify a
//! plotting dependency (and its font handling).

use std::fmt::Write as _;

use crate::history::{Event, EventType, Process};

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// At most this many points are drawn; beyond it every n-th is, keeping
/// every fail and info (they matter most).
const MAX_POINTS: usize = 40_000;

/// One operation to draw.
struct Point {
    /// Invoke time, s.
    t: f64,
    /// Latency, ms; `None` when it never completed.
    latency: Option<f64>,
    kind: EventType,
    f: String,
}

/// A fault window.
struct Window {
    start: f64,
    end: f64,
    label: String,
}

/// The SVG text of the plot for `events`, titled `title`.
pub fn latency_svg(events: &[Event], title: &str) -> String {
    use std::collections::HashMap;

    let mut open: HashMap<u64, (u64, &str)> = HashMap::new();
    let mut points = Vec::new();
    let mut windows: Vec<Window> = Vec::new();
    let mut open_faults: Vec<(String, f64)> = Vec::new();
    let mut t_max: f64 = 0.0;
    for e in events {
        let t = e.time as f64 / 1e9;
        t_max = t_max.max(t);
        match e.process {
            Process::Nemesis => {
                let label = e
                    .value
                    .get("fault")
                    .and_then(|f| f.as_str())
                    .unwrap_or("fault")
                    .to_string();
                if e.f == "start" {
                    open_faults.push((label, t));
                } else if let Some(i) = open_faults.iter().position(|(l, _)| *l == label) {
                    let (label, start) = open_faults.remove(i);
                    windows.push(Window {
                        start,
                        end: t,
                        label,
                    });
                }
            }
            Process::Client(p) => {
                if e.kind == EventType::Invoke {
                    open.insert(p, (e.time, e.f.as_str()));
                } else if let Some((call, f)) = open.remove(&p) {
                    points.push(Point {
                        t: call as f64 / 1e9,
                        latency: Some((e.time.saturating_sub(call)) as f64 / 1e6),
                        kind: e.kind,
                        f: f.to_string(),
                    });
                }
            }
        }
    }
    for (_, (call, f)) in open {
        points.push(Point {
            t: call as f64 / 1e9,
            latency: None,
            kind: EventType::Info,
            f: f.to_string(),
        });
    }
    for (label, start) in open_faults {
        windows.push(Window {
            start,
            end: t_max,
            label,
        });
    }
    points.sort_by(|a, b| a.t.total_cmp(&b.t));
    render(&points, &windows, t_max.max(1.0), title)
}

fn render(points: &[Point], windows: &[Window], t_max: f64, title: &str) -> String {
    let lat_max = points
        .iter()
        .filter_map(|p| p.latency)
        .fold(1.0f64, f64::max);
    // Log axis from 0.1 ms to the next power of ten above the largest.
    let (lo, hi) = (-1.0f64, lat_max.log10().ceil().max(1.0));
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / t_max * pw;
    let y = |ms: f64| TOP + ph - ((ms.max(0.1).log10() - lo) / (hi - lo)) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Fault windows, alternating rows of labels so neighbours do not overlap.
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (x(w.start), x(w.end.max(w.start)));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="#999" fill-opacity="0.18"><title>{} {:.1}–{:.1} s</title></rect>"##,
            (x1 - x0).max(1.0),
            escape(&w.label),
            w.start,
            w.end
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="9" fill="#555">{}</text>"##,
            x0 + 2.0,
            TOP + 10.0 + 10.0 * (i % 3) as f64,
            escape(&w.label)
        );
    }
    // Axes and grid.
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    for d in (lo as i32)..=(hi as i32) {
        let ms = 10f64.powi(d);
        let yy = y(ms);
        let label = if ms < 1.0 {
            format!("{ms}")
        } else {
            format!("{}", ms as u64)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let step = nice_step(t_max);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{}" y2="{}" stroke="#000"/><text x="{xx:.1}" y="{}" text-anchor="middle">{t}</text>"##,
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 18.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time since start (s)</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 22.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">latency (ms, log)</text>"#,
        TOP + ph / 2.0
    );
    // Points.
    let every = (points.len() / MAX_POINTS).max(1);
    let mut counts = [0usize; 3];
    for (i, p) in points.iter().enumerate() {
        let (colour, slot) = match p.kind {
            EventType::Ok => ("#2a9d3a", 0),
            EventType::Fail => ("#d62728", 1),
            _ => ("#ff8c00", 2),
        };
        counts[slot] += 1;
        if slot == 0 && i % every != 0 {
            continue;
        }
        let yy = p.latency.map_or(TOP + 2.0, y);
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{yy:.1}" r="1.6" fill="{colour}" fill-opacity="0.6"><title>{} {:.1} ms</title></circle>"#,
            x(p.t),
            escape(&p.f),
            p.latency.unwrap_or(f64::NAN)
        );
    }
    // Legend.
    let legend = [
        ("#2a9d3a", "ok", counts[0]),
        ("#d62728", "fail", counts[1]),
        ("#ff8c00", "info", counts[2]),
    ];
    for (i, (colour, name, n)) in legend.iter().enumerate() {
        let lx = LEFT + 10.0 + 130.0 * i as f64;
        let ly = HEIGHT - 8.0;
        let _ = writeln!(
            s,
            r##"<circle cx="{lx}" cy="{}" r="4" fill="{colour}"/><text x="{}" y="{ly}">{name} ({n})</text>"##,
            ly - 4.0,
            lx + 8.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="14" height="10" fill="#999" fill-opacity="0.3"/><text x="{}" y="{}">fault window</text>"##,
        LEFT + 400.0,
        HEIGHT - 17.0,
        LEFT + 418.0,
        HEIGHT - 8.0
    );
    if every > 1 {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">1 in {every} ok operations drawn</text>"#,
            WIDTH - RIGHT,
            HEIGHT - 8.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_step(span: f64) -> f64 {
    let raw = span / 10.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::parse_history;

    #[test]
    fn plot_has_a_point_per_operation_and_a_shaded_fault() {
        let h = r#"{"process":0,"type":"invoke","f":"write","key":"k1","value":3,"time":1000000}
{"process":"nemesis","type":"info","f":"start","value":{"fault":"kill-leader","nodes":["n2"]},"time":2000000000}
{"process":0,"type":"ok","f":"write","key":"k1","value":3,"time":2500000000}
{"process":1,"type":"invoke","f":"read","key":"k1","value":null,"time":3000000000}
{"process":1,"type":"fail","f":"read","key":"k1","value":null,"time":3000500000}
{"process":2,"type":"invoke","f":"read","key":"k1","value":null,"time":3100000000}
{"process":"nemesis","type":"info","f":"stop","value":{"fault":"kill-leader","nodes":["n2"]},"time":4000000000}
"#;
        let svg = latency_svg(&parse_history(h.as_bytes()).unwrap(), "register <test>");
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle cx").count(), 3 + 3, "{svg}");
        assert!(svg.contains("kill-leader 2.0–4.0 s"), "{svg}");
        assert!(svg.contains("register &lt;test&gt;"));
        assert!(svg.contains("ok (1)") && svg.contains("fail (1)") && svg.contains("info (1)"));
    }
}
