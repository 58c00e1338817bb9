//! What a person sees while training: an indicatif bar on a terminal, one plain line per epoch otherwise
//! (logs, CI), nothing with `--quiet`. All of it goes to stderr; stdout is kept for results.
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::metrics::EpochMetrics;

pub enum Progress {
    Bar(ProgressBar),
    Plain { epochs: usize },
    Quiet,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool, total_steps: u64, epochs: usize) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Plain { epochs };
        }
        let bar = ProgressBar::new(total_steps);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} steps (ETA {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    /// Prints a line above the bar (or plainly), unless quiet.
    pub fn println(&self, line: &str) {
        match self {
            Progress::Bar(b) => b.println(line),
            Progress::Plain { .. } => tell!("{line}"),
            Progress::Quiet => {}
        }
    }

    /// After each step; `loss` only on steps where it was read back; `rate` is (items per second, unit).
    pub fn step(&self, step: u64, epoch: usize, loss: Option<f64>, rate: (f64, &str)) {
        if let Progress::Bar(b) = self {
            b.set_position(step);
            if let Some(l) = loss {
                b.set_message(format!("epoch {epoch} loss {l:.4} {:.0} {}/s", rate.0, rate.1));
            }
        }
    }

    pub fn epoch(&self, m: &EpochMetrics) {
        let epochs = match self {
            Progress::Plain { epochs } => *epochs,
            _ => 0,
        };
        let line = format!(
            "epoch {}{} step {} train_loss {:.4} {} lr {:.3e} {} {:.2}s",
            m.epoch,
            if epochs > 0 { format!("/{epochs}") } else { String::new() },
            m.step,
            m.train_loss,
            m.val_summary(),
            m.lr,
            m.speed(),
            m.epoch_seconds
        );
        self.println(&line);
    }

    pub fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
