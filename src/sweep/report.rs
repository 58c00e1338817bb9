//! `spotrun report`: SVG charts and a self-contained HTML index from what the runs wrote (`metrics.jsonl`,
//! `done.json`). Hand-written SVG: no plotting dependency, and the files open in any browser.
use std::fmt::Write as _;
use std::path::Path;

use super::error::SweepError;
use super::layout::Plan;
use super::status::{self, toml_text_to_json, RunView};
use crate::checkpoint::write_atomic;
use crate::config::MetricName;
use crate::trainer::metric_value;

const W: f64 = 640.0;
const H: f64 = 400.0;
const L: f64 = 70.0;
const R: f64 = 150.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// PBT's exploits as two-point series: from the donor's metric at the epoch it was copied to the recipient's at its
/// next interval.
fn exploit_edges(s: &super::study::summary::Summary) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out = Vec::new();
    for (r, exploits) in s.exploits.iter().enumerate() {
        for &(d, e) in exploits {
            let from = s.trials.get(d).and_then(|t| t.iter().find(|p| p.0 == e)).copied();
            let to = s.trials.get(r).and_then(|t| t.iter().find(|p| p.0 > e)).copied();
            if let (Some(a), Some(b)) = (from, to) {
                out.push((format!("{d} -> {r}"), vec![(a.0 as f64, a.1), (b.0 as f64, b.1)]));
            }
        }
    }
    out
}

/// Writes `out/index.html` plus one SVG per chart; returns how many files were written.
/// With a `study` (an adaptive sweep), also its rung chart: each trial's metric at each rung it reached.
pub(crate) fn write(
    plan: &Plan,
    views: &[RunView],
    study: Option<&super::study::summary::Summary>,
    out: &Path,
) -> Result<usize, SweepError> {
    std::fs::create_dir_all(out).map_err(|e| SweepError::io(out, e))?;
    let mut charts: Vec<(String, String)> = Vec::new();
    if let Some(s) = study {
        let series: Vec<(String, Vec<(f64, f64)>)> = s
            .trials
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(t, r)| (format!("trial {t}"), r.iter().map(|&(e, m)| (e as f64, m)).collect()))
            .collect();
        let title = format!("{} at each rung ({}, eta {})", plan.metric.as_str(), s.scheduler, s.eta);
        charts.push(("rungs.svg".into(), line_chart(&title, "epoch (rung)", plan.metric.as_str(), &series)));
        if s.exploits.iter().any(|e| !e.is_empty()) {
            let title =
                format!("PBT lineage: {} per interval, and each exploit (donor -> recipient)", plan.metric.as_str());
            let all: Vec<_> = series.into_iter().chain(exploit_edges(s)).collect();
            charts.push(("lineage.svg".into(), line_chart(&title, "epoch", plan.metric.as_str(), &all)));
        }
    }
    // The curves of every metric some run has (a task's metrics; accuracy means nothing for a language model).
    let metrics =
        [MetricName::TrainLoss, MetricName::ValLoss, MetricName::ValAccuracy, MetricName::ValPpl, MetricName::ValMae];
    let has = |metric: MetricName| views.iter().flat_map(|v| &v.metrics).any(|m| metric_value(m, metric).is_finite());
    for metric in metrics.into_iter().filter(|&m| has(m)) {
        let series: Vec<(String, Vec<(f64, f64)>)> = views
            .iter()
            .filter(|v| !v.metrics.is_empty())
            .map(|v| {
                let pts = v.metrics.iter().map(|m| (m.epoch as f64, metric_value(m, metric))).collect();
                (format!("#{}", v.plan.index), pts)
            })
            .collect();
        let name = format!("curves-{}.svg", metric.as_str());
        charts.push((name, line_chart(&format!("{} per epoch", metric.as_str()), "epoch", metric.as_str(), &series)));
    }
    for key in status::swept_keys(plan) {
        let pts: Vec<(serde_json::Value, f64, String)> = views
            .iter()
            .filter_map(|v| {
                let m = v.metric(plan)?;
                let x = v.plan.overrides.iter().find(|(k, _)| *k == key).map(|(_, t)| toml_text_to_json(t))?;
                Some((x, m, format!("#{}", v.plan.index)))
            })
            .collect();
        let file = format!("param-{}.svg", key.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        charts.push((
            file,
            scatter(&format!("final {} vs {key}", plan.metric.as_str()), &key, plan.metric.as_str(), &pts),
        ));
    }
    for (name, svg) in &charts {
        let p = out.join(name);
        write_atomic(&p, svg.as_bytes()).map_err(|e| SweepError::io(&p, e))?;
    }
    let html = index_html(plan, views, &charts);
    let p = out.join("index.html");
    write_atomic(&p, html.as_bytes()).map_err(|e| SweepError::io(&p, e))?;
    Ok(charts.len() + 1)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn index_html(plan: &Plan, views: &[RunView], charts: &[(String, String)]) -> String {
    let mut rows: Vec<&RunView> = views.iter().collect();
    let sign = if plan.metric.higher_is_better() { -1.0 } else { 1.0 };
    rows.sort_by(|a, b| {
        let (x, y) = (a.metric(plan).map(|m| sign * m), b.metric(plan).map(|m| sign * m));
        x.unwrap_or(f64::INFINITY).total_cmp(&y.unwrap_or(f64::INFINITY))
    });
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>spotrun sweep {0}</title><style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;\
         padding:2px 8px;text-align:left}}svg{{margin:8px;border:1px solid #eee}}</style></head><body>\
         <h1>Sweep {0}</h1><pre>{1}</pre><h2>Runs by {2}</h2><table><tr><th>#</th><th>run</th><th>status</th>\
         <th>{2}</th><th>epochs</th><th>overrides</th></tr>",
        esc(&plan.name),
        esc(&status::table(plan, views)),
        plan.metric.as_str()
    );
    for v in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
            v.plan.index,
            crate::config::short_id(&v.plan.id),
            v.state.as_str(),
            v.metric(plan).map_or("-".into(), |m| format!("{m:.4}")),
            v.metrics.last().map_or(0, |m| m.epoch),
            v.plan.epochs,
            esc(&v.plan.label())
        );
    }
    h += "</table><h2>Charts</h2>";
    for (name, svg) in charts {
        let _ = write!(h, "<div><a href=\"{0}\">{0}</a><br>{1}</div>", esc(name), svg);
    }
    h + "</body></html>\n"
}

/// Maps data to pixels on one axis.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(vals: impl Iterator<Item = f64>, log: bool, from: f64, to: f64) -> Axis {
        let v: Vec<f64> =
            vals.filter(|x| x.is_finite() && (!log || *x > 0.0)).map(|x| if log { x.log10() } else { x }).collect();
        let (mut lo, mut hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        } else {
            let pad = (hi - lo) * 0.05;
            (lo, hi) = (lo - pad, hi + pad);
        }
        Axis { lo, hi, log, from, to }
    }
    fn px(&self, x: f64) -> f64 {
        let x = if self.log { x.max(1e-300).log10() } else { x };
        self.from + (x - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }
    /// About five round tick values.
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            return (self.lo.ceil() as i32..=self.hi.floor() as i32).map(|e| 10f64.powi(e)).collect();
        }
        let raw = (self.hi - self.lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(raw);
        let mut t = (self.lo / step).ceil() * step;
        let mut out = Vec::new();
        while t <= self.hi && out.len() < 12 {
            out.push(t);
            t += step;
        }
        out
    }
}

fn fmt_tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn frame(title: &str, xl: &str, yl: &str, x: &Axis, y: &Axis, xticks: &[(f64, String)]) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"11\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\
         <rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        (L + W - R) / 2.0,
        esc(title),
        (L + W - R) / 2.0,
        H - 10.0,
        esc(xl),
        (T + H - B) / 2.0,
        esc(yl),
        W - R - L,
        H - B - T
    );
    for t in y.ticks() {
        let py = y.px(t);
        let _ = write!(
            s,
            "<line x1=\"{L}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" \
             text-anchor=\"end\">{}</text>",
            W - R,
            L - 4.0,
            py + 4.0,
            fmt_tick(t)
        );
    }
    for (t, label) in xticks {
        let px = x.px(*t);
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{T}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{px:.1}\" y=\"{}\" \
             text-anchor=\"middle\">{}</text>",
            H - B,
            H - B + 14.0,
            esc(label)
        );
    }
    s
}

/// One polyline per series, with a legend on the right.
pub(crate) fn line_chart(title: &str, xl: &str, yl: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let x = Axis::new(all().map(|p| p.0), false, L, W - R);
    let y = Axis::new(all().map(|p| p.1), false, H - B, T);
    let xt: Vec<(f64, String)> = x.ticks().into_iter().filter(|t| t.fract() == 0.0).map(|t| (t, fmt_tick(t))).collect();
    let mut s = frame(title, xl, yl, &x, &y, &xt);
    if series.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no epochs yet</text>",
            (L + W - R) / 2.0,
            H / 2.0
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> =
            pts.iter().filter(|p| p.1.is_finite()).map(|p| format!("{:.1},{:.1}", x.px(p.0), y.px(p.1))).collect();
        let _ =
            write!(s, "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>", path.join(" "));
        if i < 24 {
            let ly = T + 12.0 + 14.0 * i as f64;
            let _ = write!(
                s,
                "<line x1=\"{0}\" x2=\"{1}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"/>\
                 <text x=\"{2}\" y=\"{3}\">{4}</text>",
                W - R + 10.0,
                W - R + 28.0,
                W - R + 32.0,
                ly + 4.0,
                esc(name)
            );
        }
    }
    s + "</svg>\n"
}

/// Final metric against one swept parameter: numeric x (log scale when it spans 20x or more), else categories.
pub(crate) fn scatter(title: &str, xl: &str, yl: &str, pts: &[(serde_json::Value, f64, String)]) -> String {
    let nums: Option<Vec<f64>> = pts.iter().map(|p| p.0.as_f64()).collect();
    let y = Axis::new(pts.iter().map(|p| p.1), false, H - B, T);
    let (x, xs, xt): (Axis, Vec<f64>, Vec<(f64, String)>) = match nums {
        Some(v) if !v.is_empty() => {
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            let log = lo > 0.0 && hi / lo >= 20.0;
            let x = Axis::new(v.iter().copied(), log, L, W - R);
            let t = x.ticks().into_iter().map(|t| (t, fmt_tick(t))).collect();
            (x, v, t)
        }
        _ => {
            let mut cats: Vec<String> = Vec::new();
            for p in pts {
                let c = p.0.to_string();
                if !cats.contains(&c) {
                    cats.push(c);
                }
            }
            let xs = pts
                .iter()
                .map(|p| {
                    let s = p.0.to_string();
                    cats.iter().position(|c| *c == s).unwrap_or(0) as f64
                })
                .collect();
            let x = Axis::new([-0.5, cats.len() as f64 - 0.5].into_iter(), false, L, W - R);
            let t = cats.into_iter().enumerate().map(|(i, c)| (i as f64, c)).collect();
            (x, xs, t)
        }
    };
    let mut s = frame(title, xl, yl, &x, &y, &xt);
    for ((_, m, label), xv) in pts.iter().zip(xs) {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"><title>{} {m:.4}</title></circle>",
            x.px(xv),
            y.px(*m),
            esc(label)
        );
    }
    s + "</svg>\n"
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_wellformed_svg_with_every_series() {
        let s = line_chart(
            "t",
            "epoch",
            "loss",
            &[("#0".into(), vec![(1.0, 0.5), (2.0, 0.3)]), ("#1".into(), vec![(1.0, 0.9)])],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains(">#1</text>"));
        let pts = vec![(serde_json::json!(1e-4), 0.5, "#0".to_string()), (serde_json::json!(1e-2), 0.7, "#1".into())];
        let s = scatter("t", "optim.lr", "acc", &pts);
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains(">1e-3<") || s.contains(">1e-4<"), "log ticks expected: {s}");
        let cats =
            vec![(serde_json::json!([256]), 0.5, "#0".to_string()), (serde_json::json!([512, 512]), 0.7, "#1".into())];
        assert!(scatter("t", "model.hidden", "acc", &cats).contains("[512,512]"));
        // points map inside the plot area
        let a = Axis::new([0.0, 10.0].into_iter(), false, L, W - R);
        assert!(a.px(0.0) >= L && a.px(10.0) <= W - R);
    }
}
