//! The report's plots as SVG: a CDF of start latency, memory per instance against instance
//! count, overhead as ratios to the host, and the isolation matrix as a heat map. Written by
//! hand: plain chart kinds need lines, rectangles and text, and plotting crates would need
//! fonts installed to lay out text.

use std::fmt::Write;

use capsa_escape::findings::Reach;

use super::report::{Layer, Outcome, Report, Verdict, OVERHEAD_FIGURES};

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// A log-scale axis over whole decades that cover [min, max].
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn covering(values: impl Iterator<Item = f64>) -> LogAxis {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for v in values.filter(|v| *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (1.0, 10.0);
        }
        let lo = 10f64.powf(lo.log10().floor());
        let mut hi = 10f64.powf(hi.log10().ceil());
        if hi <= lo {
            hi = lo * 10.0;
        }
        LogAxis { lo, hi }
    }

    /// 0..1 along the axis.
    fn frac(&self, v: f64) -> f64 {
        (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
    }

    fn ticks(&self) -> Vec<f64> {
        let mut t = Vec::new();
        let mut v = self.lo;
        while v <= self.hi * 1.0001 {
            t.push(v);
            v *= 10.0;
        }
        t
    }
}

fn x_px(frac: f64) -> f64 {
    LEFT + frac * (W - LEFT - RIGHT)
}

fn y_px(frac: f64) -> f64 {
    H - BOTTOM - frac * (H - TOP - BOTTOM)
}

fn number(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The frame: title, axis labels, the plot area's box.
fn frame(title: &str, subtitle: &str, x_label: &str, y_label: &str) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"32\" fill=\"#555\">{}</text>",
        escape(subtitle)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        x_px(0.5),
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>",
        y_px(0.5),
        y_px(0.5),
        escape(y_label)
    );
    s
}

fn x_tick(s: &mut String, frac: f64, label: &str) {
    let x = x_px(frac);
    let _ = writeln!(
        s,
        "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
        H - BOTTOM,
        H - BOTTOM + 14.0
    );
}

fn y_tick(s: &mut String, frac: f64, label: &str) {
    let y = y_px(frac);
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
        W - RIGHT,
        LEFT - 6.0,
        y + 4.0
    );
}

fn legend(s: &mut String, i: usize, name: &str) {
    let y = TOP + 10.0 + i as f64 * 18.0;
    let x = W - RIGHT + 12.0;
    let _ = writeln!(
        s,
        "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
        y - 10.0,
        COLOURS[i % COLOURS.len()],
        x + 18.0,
        y,
        escape(name)
    );
}

fn polyline(s: &mut String, i: usize, points: &[(f64, f64)]) {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", x_px(*x), y_px(*y)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
        COLOURS[i % COLOURS.len()],
        pts.join(" ")
    );
}

fn machine_line(r: &Report) -> String {
    format!(
        "{} cores, host kernel {}, {}",
        r.machine.cpus, r.machine.host_kernel, r.machine.kvm
    )
}

fn label(r: &Report, name: &str) -> String {
    match r
        .subjects
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.accelerator.clone())
    {
        Some(acc) => format!("{name} ({acc})"),
        None => name.to_string(),
    }
}

/// CDF of the time to first output, log time axis.
pub fn start_cdf(r: &Report) -> String {
    let series: Vec<(&String, Vec<f64>)> = r
        .start
        .iter()
        .filter_map(|(n, o)| {
            let mut v = o.ok()?.samples.first_output_ms.clone();
            v.sort_by(f64::total_cmp);
            Some((n, v))
        })
        .collect();
    let axis = LogAxis::covering(series.iter().flat_map(|(_, v)| v.iter().copied()));
    let mut s = frame(
        "Start latency: time to first output (CDF)",
        &machine_line(r),
        "milliseconds (log)",
        "fraction of runs",
    );
    for t in axis.ticks() {
        x_tick(&mut s, axis.frac(t), &number(t));
    }
    for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
        y_tick(&mut s, q, &format!("{q}"));
    }
    for (i, (name, v)) in series.iter().enumerate() {
        let n = v.len() as f64;
        let mut pts = vec![(axis.frac(v[0]), 0.0)];
        for (k, x) in v.iter().enumerate() {
            pts.push((axis.frac(*x), k as f64 / n));
            pts.push((axis.frac(*x), (k + 1) as f64 / n));
        }
        polyline(&mut s, i, &pts);
        legend(&mut s, i, &label(r, name));
    }
    s.push_str("</svg>\n");
    s
}

/// PSS per instance against the number of instances (log memory axis).
pub fn density(r: &Report) -> String {
    let series: Vec<(&String, Vec<(usize, f64)>)> = r
        .density
        .iter()
        .filter_map(|(n, o)| {
            let d = o.ok()?;
            Some((
                n,
                d.steps
                    .iter()
                    .map(|st| (st.n, st.pss_per_instance_kib as f64 / 1024.0))
                    .collect(),
            ))
        })
        .collect();
    let max_n = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(n, _)| *n))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y = LogAxis::covering(series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)));
    let mut s = frame(
        "Density: host memory per idle instance",
        &machine_line(r),
        "instances",
        "PSS per instance, MiB (log)",
    );
    let mut steps: Vec<usize> = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(n, _)| *n))
        .collect();
    steps.sort_unstable();
    steps.dedup();
    for n in steps {
        x_tick(&mut s, n as f64 / max_n, &n.to_string());
    }
    for t in y.ticks() {
        y_tick(&mut s, y.frac(t), &number(t));
    }
    for (i, (name, v)) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = v
            .iter()
            .map(|(n, m)| (*n as f64 / max_n, y.frac(*m)))
            .collect();
        polyline(&mut s, i, &pts);
        for (x, yy) in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                x_px(*x),
                y_px(*yy),
                COLOURS[i % COLOURS.len()]
            );
        }
        legend(&mut s, i, &label(r, name));
    }
    s.push_str("</svg>\n");
    s
}

/// Each overhead figure as the ratio to the host without isolation, one bar per subject,
/// on a log axis around 1.
pub fn overhead(r: &Report) -> String {
    let base = r.overhead_baseline.as_ref().and_then(|b| b.ok());
    let names: Vec<&String> = r
        .overhead
        .iter()
        .filter(|(_, o)| o.ok().is_some())
        .map(|(n, _)| n)
        .collect();
    let mut ratios: Vec<Vec<Option<f64>>> = Vec::new();
    for f in OVERHEAD_FIGURES {
        let host = base.and_then(|b| (f.value)(b)).filter(|h| *h > 0.0);
        ratios.push(
            names
                .iter()
                .map(|n| {
                    let v = r.overhead[*n].ok().and_then(|o| (f.value)(o))?;
                    Some(v / host?)
                })
                .collect(),
        );
    }
    let axis = LogAxis::covering(ratios.iter().flatten().flatten().copied().chain([0.5, 2.0]));
    let mut s = frame(
        "Overhead: each figure as a ratio to the host without isolation",
        "getpid and TCP round trip: above 1 is slower; the others: below 1 is slower",
        "",
        "ratio to host (log)",
    );
    for t in axis.ticks() {
        y_tick(&mut s, axis.frac(t), &number(t));
    }
    let groups = OVERHEAD_FIGURES.len() as f64;
    let group_w = 1.0 / groups;
    let bar_w = group_w * 0.8 / names.len().max(1) as f64;
    let one = axis.frac(1.0);
    for (g, f) in OVERHEAD_FIGURES.iter().enumerate() {
        let x0 = g as f64 * group_w + group_w * 0.1;
        let short = f.short;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
            x_px(x0 + group_w * 0.4),
            H - BOTTOM + 14.0,
            escape(short)
        );
        for (i, ratio) in ratios[g].iter().enumerate() {
            let Some(ratio) = ratio else { continue };
            let v = axis.frac(*ratio);
            let (lo, hi) = if v > one { (one, v) } else { (v, one) };
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                x_px(x0 + i as f64 * bar_w),
                y_px(hi),
                bar_w * (W - LEFT - RIGHT),
                (y_px(lo) - y_px(hi)).max(1.0),
                COLOURS[i % COLOURS.len()]
            );
        }
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"black\"/>",
        W - RIGHT,
        y = y_px(one)
    );
    for (i, n) in names.iter().enumerate() {
        legend(&mut s, i, &label(r, n));
    }
    s.push_str("</svg>\n");
    s
}

/// A cell's fill by verdict.
fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Allowed => "#d62728",
        Verdict::Contained => "#fdd49e",
        Verdict::Blocked => "#a1d99b",
        Verdict::NotApplicable => "#e0e0e0",
        Verdict::Unmeasured => "#ffffff",
    }
}

/// Short names of layers for a cell.
fn layer_short(l: Layer) -> &'static str {
    match l {
        Layer::Namespace => "ns",
        Layer::Capability => "cap",
        Layer::Seccomp => "seccomp",
        Layer::DeviceCgroup => "devcg",
        Layer::ReadOnlyPath => "ro",
        Layer::MaskedPath => "masked",
        Layer::Runtime => "runtime",
        Layer::FilePermissions => "perm",
        Layer::Hypervisor => "hv",
        Layer::Unattributed => "?",
    }
}

/// A cell's text: the layers' short names, or the verdict.
fn short_cell(c: &crate::bench::report::Cell) -> String {
    let mut text = match c.verdict {
        Verdict::Blocked | Verdict::Contained => {
            c.by.iter()
                .map(|l| layer_short(*l))
                .collect::<Vec<_>>()
                .join("+")
        }
        other => other.label().to_string(),
    };
    if c.inferred {
        text.push('*');
    }
    text
}

/// The isolation matrix as a heat map: one row per probe, one column per subject (the host
/// without isolation first), each cell coloured by verdict and labelled with the layers
/// that stopped it; the last row is the host syscalls each workload can reach.
pub fn isolation(r: &Report) -> String {
    const LABEL_W: f64 = 360.0;
    const CELL_W: f64 = 118.0;
    const ROW_H: f64 = 20.0;
    const HEAD: f64 = 78.0;
    let rows = crate::bench::scenario::isolation::rows();
    let names: Vec<&String> = r.isolation.keys().collect();
    let columns = names.len() + 1;
    let width = (LABEL_W + CELL_W * columns as f64 + 20.0).max(900.0);
    let height = HEAD + ROW_H * (rows.len() + 1) as f64 + 110.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"18\" font-size=\"14\" font-weight=\"bold\">Isolation matrix: each escape probe, per isolation and peer</text>\n<text x=\"10\" y=\"34\" fill=\"#555\">{}</text>",
        escape(&machine_line(r))
    );
    let x_of = |c: usize| LABEL_W + CELL_W * c as f64;
    let y_of = |row: usize| HEAD + ROW_H * row as f64;
    let mut headers = vec!["host (no isolation)".to_string()];
    headers.extend(names.iter().map(|n| label(r, n)));
    for (c, h) in headers.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            x_of(c) + CELL_W / 2.0,
            HEAD - 8.0,
            escape(h)
        );
    }
    let baseline = r.isolation_baseline.as_ref().and_then(|b| b.ok());
    for (i, row) in rows.iter().enumerate() {
        let y = y_of(i);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 6.0,
            y + 14.0,
            escape(row.label)
        );
        // The host's own column is a reference, in lighter colours.
        let host = baseline
            .and_then(|b| b.get(row.name))
            .map(|f| match (f.reach, f.errno) {
                (Reach::Reached, _) => ("#f4a6a6", "reached".to_string()),
                (Reach::Refused, Some(_)) => ("#c6dbef", "refused".to_string()),
                (Reach::Refused, None) => ("#c6dbef", "none found".to_string()),
                (Reach::Absent, _) => {
                    (verdict_colour(Verdict::NotApplicable), "absent".to_string())
                }
            });
        let mut cells = vec![host.unwrap_or(("#f5f5f5", "-".to_string()))];
        for n in &names {
            cells.push(match &r.isolation[*n] {
                Outcome::Skipped { .. } => ("#f5f5f5", "skipped".to_string()),
                Outcome::Failed { .. } => ("#ffffff", "failed".to_string()),
                Outcome::Ok(x) => match x.cells.get(row.name) {
                    Some(c) => (verdict_colour(c.verdict), short_cell(c)),
                    None => ("#ffffff", String::new()),
                },
            });
        }
        for (c, (fill, text)) in cells.iter().enumerate() {
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{CELL_W}\" height=\"{ROW_H}\" fill=\"{fill}\" stroke=\"white\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x_of(c),
                x_of(c) + CELL_W / 2.0,
                y + 14.0,
                escape(text)
            );
        }
    }
    let y = y_of(rows.len());
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-weight=\"bold\">host syscalls the workload (VM: its engine) can reach</text>",
        LABEL_W - 6.0,
        y + 14.0
    );
    for (c, n) in names.iter().enumerate() {
        let text = match r.isolation[*n].ok().map(|x| &x.host_syscalls) {
            Some(Outcome::Ok(h)) => format!("{} of {}", h.reachable, h.table),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            x_of(c + 1) + CELL_W / 2.0,
            y + 14.0,
            escape(&text)
        );
    }
    let legend = [
        (Verdict::Allowed, "allowed: reached the host"),
        (
            Verdict::Contained,
            "contained: succeeded on its own namespace or guest",
        ),
        (Verdict::Blocked, "blocked, by the layers named"),
        (Verdict::NotApplicable, "not applicable here"),
    ];
    let ly = y + ROW_H + 18.0;
    for (i, (v, text)) in legend.iter().enumerate() {
        let (x, yy) = (10.0 + (i % 2) as f64 * 380.0, ly + (i / 2) as f64 * 18.0);
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\" stroke=\"#999\"/><text x=\"{}\" y=\"{yy:.1}\">{}</text>",
            yy - 10.0,
            verdict_colour(*v),
            x + 18.0,
            escape(text)
        );
    }
    for (i, line) in [
        "ns namespace, cap capability, seccomp, devcg device cgroup, ro read-only path, masked masked path, hv hypervisor,",
        "runtime: descriptors closed, non-dumpable entry, paths resolved in the root; perm file permissions; ? not attributed; * named from the errno",
    ]
    .iter()
    .enumerate()
    {
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\" fill=\"#555\">{}</text>",
            ly + 40.0 + i as f64 * 15.0,
            escape(line)
        );
    }
    s.push_str("</svg>\n");
    s
}
