//! `spotrun replay SWEEP TRIAL`: retrains a PBT trial's whole lineage as one run, from scratch: its ancestors'
//! segments (each with the values it trained under, up to the epoch a descendant copied its checkpoint), then its
//! own segments after each exploit, every boundary a pause and a resume with the next values. On the CPU it ends
//! byte-identical to the trial's own weights (tested), which shows that every exploit copied exactly the state it
//! recorded and that the study's records are the whole hyperparameter schedule.
use std::path::{Path, PathBuf};

use super::journal::{Decision, Journal, Record};
use crate::config::LoadedConfig;
use crate::error::Result;
use crate::sweep::error::SweepError;
use crate::sweep::expand::resolve;
use crate::sweep::loaded::LoadedSweep;
use crate::trainer::{self, StopAt, TrainOptions};

/// A stretch of a lineage: these values, from epoch `from` to epoch `to`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub trial: usize,
    pub values: Vec<(String, toml::Value)>,
    pub from: usize,
    pub to: usize,
}

/// Trial `t`'s lineage up to epoch `end`: its state at `end` came from these segments, in order. At an exploit the
/// donor's state is the one it kept when it paused there, before any exploit of its own at that epoch.
pub(crate) fn lineage(records: &[Record], t: usize, end: usize) -> Result<Vec<Segment>, String> {
    let created = records.iter().find_map(|r| match &r.decision {
        Decision::Created { trial, values, .. } if *trial == t => Some(values.clone()),
        _ => None,
    });
    let values = created.ok_or_else(|| format!("trial {t} was never created"))?;
    let last = records.iter().rev().find_map(|r| match &r.decision {
        Decision::Exploited { trial, donor, epoch, values } if *trial == t && *epoch < end => {
            Some((*donor, *epoch, values.clone()))
        }
        _ => None,
    });
    Ok(match last {
        None => vec![Segment { trial: t, values, from: 0, to: end }],
        Some((donor, e, v)) => {
            let mut out = lineage(records, donor, e)?;
            out.push(Segment { trial: t, values: v, from: e, to: end });
            out
        }
    })
}

/// `spotrun replay SWEEP TRIAL`: trains the lineage into `run_dir` (default `VOLUME/<name>/replay-<trial>`) and
/// says whether the weights equal the trial's.
pub(crate) fn replay(ctx: &LoadedSweep, trial: usize, run_dir: Option<PathBuf>, quiet: bool) -> Result<bool> {
    let journal = Journal::new(&ctx.layout.root);
    let records = journal.read_all_records()?;
    let epochs = ctx.sweep.schedule.map_or(0, |s| s.epochs);
    let bad = |m: String| SweepError::Usage(format!("{}: {m}", ctx.layout.root.display()));
    let segments = lineage(&records, trial, epochs).map_err(bad)?;
    let dir = run_dir.unwrap_or_else(|| ctx.layout.root.join(format!("replay-{trial:04}")));
    for s in &segments {
        say!("replay: trial {} with {} for epochs {}..{}", s.trial, describe(&s.values), s.from, s.to);
        let run = resolve(&ctx.sweep, trial, s.values.clone())?;
        let opts = TrainOptions {
            loaded: Some(LoadedConfig { config: run.config, origin: ctx.sweep.file.clone() }),
            run_dir: Some(dir.clone()),
            quiet,
            allow_config_change: true,
            stop_at: (s.to < epochs).then_some(StopAt { epochs: s.to, finish: false }),
            ..TrainOptions::default()
        };
        trainer::train(&opts)?;
    }
    let mine = ctx.layout.run_dir(&format!("pbt-{trial:04}")).join("model.safetensors");
    Ok(same(&mine, &dir.join("model.safetensors")))
}

fn same(a: &Path, b: &Path) -> bool {
    matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

fn describe(values: &[(String, toml::Value)]) -> String {
    values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}
