//! What a person sees while `spotrun sweep` runs: on a terminal, an overall runs bar plus one line per active
//! run (epoch, loss, accuracy); otherwise (logs, CI) one plain line per event. Per-run progress is read from
//! each run's `metrics.jsonl`, so it works the same for runs this launcher did not start.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::loaded::LoadedSweep;
use super::record::{self, Done, Failed};

struct RunInfo {
    tag: String,
    label: String,
    epochs: usize,
    dir: PathBuf,
}

pub(super) struct Display {
    bars: Option<(MultiProgress, ProgressBar)>,
    lines: HashMap<usize, ProgressBar>,
    quiet: bool,
    runs: Vec<RunInfo>,
    seen_epoch: HashMap<usize, usize>,
    total: usize,
    finished: usize,
    /// The sweep's ranking metric, shown first in each finished run's line.
    metric: crate::config::MetricName,
}

impl Display {
    pub(super) fn new(quiet: bool, ctx: &LoadedSweep) -> Display {
        let runs = ctx
            .plan
            .runs
            .iter()
            .map(|r| RunInfo {
                tag: format!("#{} {}", r.index, crate::config::short_id(&r.id)),
                label: r.label(),
                epochs: r.epochs,
                dir: ctx.layout.run_dir(&r.id),
            })
            .collect();
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(ctx.runs.len() as u64));
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30.green/blue} {pos}/{len} runs {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            overall.set_style(style.progress_chars("=> "));
            overall.enable_steady_tick(Duration::from_millis(200));
            (multi, overall)
        });
        Display {
            bars,
            lines: HashMap::new(),
            quiet,
            runs,
            seen_epoch: HashMap::new(),
            total: ctx.runs.len(),
            finished: 0,
            metric: ctx.sweep.metric,
        }
    }

    /// A plain message (above the bars on a terminal).
    pub(super) fn line(&self, s: &str) {
        match &self.bars {
            Some((m, _)) => {
                let _ = m.println(s);
            }
            None if !self.quiet => tell!("{s}"),
            None => {}
        }
    }

    pub(super) fn started(&mut self, i: usize, slot: &str) {
        let r = &self.runs[i];
        let text = format!("{} {} [{slot}]", r.tag, r.label);
        if let Some((m, _)) = &self.bars {
            let pb = m.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("  {spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_message(format!("{text}: starting"));
            pb.enable_steady_tick(Duration::from_millis(200));
            self.lines.insert(i, pb);
        } else {
            self.line(&format!("start {text}"));
        }
    }

    pub(super) fn close(&mut self, i: usize) {
        if let Some(pb) = self.lines.remove(&i) {
            pb.finish_and_clear();
        }
    }

    pub(super) fn finished(&mut self, i: usize, done: &Option<Done>, secs: f64) {
        self.poll(i);
        self.close(i);
        self.finished += 1;
        let r = &self.runs[i];
        let what = match done {
            Some(d) => {
                let m = d.last.as_ref().map_or(String::new(), |m| {
                    let value = crate::trainer::metric_value(m, self.metric);
                    format!(" {} {value:.4} ({})", self.metric.as_str(), m.val_summary())
                });
                format!("{} after {} epochs{m}", d.outcome.words(), d.epochs)
            }
            None => "done".into(),
        };
        self.line(&format!("[{}/{}] {} {what} ({secs:.1}s)", self.finished, self.total, r.tag));
    }

    pub(super) fn failed(&mut self, i: usize, f: &Failed) {
        self.close(i);
        self.finished += 1;
        let r = &self.runs[i];
        self.line(&format!(
            "[{}/{}] {} FAILED after {} failure(s): {}",
            self.finished,
            self.total,
            r.tag,
            f.failures,
            f.error.lines().next().unwrap_or("")
        ));
    }

    /// Reads new epochs of run `i`; updates its bar line, or prints them as plain lines.
    fn poll(&mut self, i: usize) {
        let r = &self.runs[i];
        let ms = record::epoch_metrics(&r.dir);
        let seen = self.seen_epoch.get(&i).copied().unwrap_or(0);
        let Some(last) = ms.last() else { return };
        if last.epoch <= seen {
            return;
        }
        let text = |m: &crate::trainer::EpochMetrics| {
            format!("epoch {}/{} train_loss {:.4} {}", m.epoch, r.epochs, m.train_loss, m.val_summary())
        };
        match self.lines.get(&i) {
            Some(pb) => pb.set_message(format!("{} {}: {}", r.tag, r.label, text(last))),
            None if self.bars.is_none() => {
                for m in ms.iter().filter(|m| m.epoch > seen) {
                    self.line(&format!("{} {}", r.tag, text(m)));
                }
            }
            None => {}
        }
        self.seen_epoch.insert(i, last.epoch);
    }

    pub(super) fn refresh(&mut self, running: &[usize], finished: usize) {
        for &i in running {
            self.poll(i);
        }
        if let Some((_, overall)) = &self.bars {
            overall.set_position(finished as u64);
            overall.set_message(format!("({} running)", running.len()));
        }
    }

    pub(super) fn clear(&mut self) {
        let keys: Vec<usize> = self.lines.keys().copied().collect();
        for i in keys {
            self.close(i);
        }
        if let Some((_, overall)) = &self.bars {
            overall.finish_and_clear();
        }
    }
}
