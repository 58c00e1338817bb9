//! The study's state, replayed from its journal: a pure fold of the records, each checked to follow from the ones
//! before it (a record that does not, e.g. a trial promoted twice or a rung reached that was never trained for,
//! is an error naming it, so no decision is ever applied twice). Imports only the journal's record types and the
//! schedule.
use super::journal::Decision;
use crate::sweep::schedule::Schedule;

/// Where a trial is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// To be trained up to `to` epochs (a worker holds it, or the next free worker resumes it).
    Training {
        to: usize,
    },
    /// Paused at the rung `at`, waiting to be promoted or stopped.
    Paused {
        at: usize,
    },
    /// Stopped for good at the rung `at` (its final weights are that epoch's).
    Stopped {
        at: usize,
    },
    /// Trained to its end.
    Finished,
    Failed,
}

/// A trial: one run of the sweep under the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trial {
    /// The sweep run it is (its index in the plan) and the run's id.
    pub index: usize,
    pub run: String,
    pub bracket: usize,
    pub values: Vec<(String, toml::Value)>,
    pub phase: Phase,
    /// (epoch, metric) at each rung reached, ascending; a metric that was not a number is NaN.
    pub rungs: Vec<(usize, f64)>,
    /// PBT: (donor, epoch) of each exploit, in order: the trial's lineage.
    pub exploits: Vec<(usize, usize)>,
}

impl Trial {
    /// The metric at rung `epoch`, if the trial reached it.
    pub(crate) fn at(&self, epoch: usize) -> Option<f64> {
        self.rungs.iter().find(|(e, _)| *e == epoch).map(|(_, m)| *m)
    }
}

/// The whole study, as of some record.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct StudyState {
    /// `Begin`'s definition hash, once read.
    pub definition: Option<String>,
    pub trials: Vec<Trial>,
    /// How many records were applied (the next record's number).
    pub applied: u64,
}

impl StudyState {
    /// Applies the next record, or says why it does not follow from the state.
    pub(crate) fn apply(&mut self, d: &Decision, s: &Schedule) -> Result<(), String> {
        if self.applied == 0 {
            let Decision::Begin { definition, .. } = d else { return Err("the first record must be `begin`".into()) };
            self.definition = Some(definition.clone());
            self.applied = 1;
            return Ok(());
        }
        match d {
            Decision::Begin { .. } => return Err("a second `begin`".into()),
            Decision::Created { trial, index, run, bracket, values, .. } => {
                self.create(*trial, *index, run, *bracket, values, s)?
            }
            other => self.advance(other, s)?,
        }
        self.applied += 1;
        Ok(())
    }

    fn create(
        &mut self,
        trial: usize,
        index: usize,
        run: &str,
        bracket: usize,
        values: &[(String, toml::Value)],
        s: &Schedule,
    ) -> Result<(), String> {
        if trial != self.trials.len() {
            return Err(format!("creates trial {trial}, but the next trial is {}", self.trials.len()));
        }
        if let Some(t) = self.trials.iter().position(|t| t.run == run || t.index == index) {
            return Err(format!("creates run {run} (index {index}) again: trial {t} is that run"));
        }
        if bracket >= s.brackets() {
            return Err(format!("bracket {bracket} does not exist ({} brackets)", s.brackets()));
        }
        let first = s.rungs(bracket)[0];
        self.trials.push(Trial {
            index,
            run: run.to_string(),
            bracket,
            values: values.to_vec(),
            phase: Phase::Training { to: first },
            rungs: Vec::new(),
            exploits: Vec::new(),
        });
        Ok(())
    }

    /// A decision about an existing trial: checked against its phase and its bracket's rungs.
    fn advance(&mut self, d: &Decision, s: &Schedule) -> Result<(), String> {
        let trial = match d {
            Decision::Reached { trial, .. }
            | Decision::Promoted { trial, .. }
            | Decision::Stopped { trial, .. }
            | Decision::Finished { trial, .. }
            | Decision::Exploited { trial, .. }
            | Decision::Failed { trial } => *trial,
            Decision::Begin { .. } | Decision::Created { .. } => return Err("not a trial's decision".into()),
        };
        if let Decision::Exploited { donor, epoch, .. } = d {
            let ok = *donor != trial && self.trials.get(*donor).is_some_and(|t| t.at(*epoch).is_some());
            if !ok {
                return Err(format!("{} names donor {donor}, which did not reach epoch {epoch}", describe(d)));
            }
        }
        let t = self.trials.get_mut(trial).ok_or_else(|| format!("trial {trial} was never created"))?;
        let rungs = s.rungs(t.bracket);
        let last = *rungs.last().unwrap_or(&s.epochs);
        let next_phase = match (d, t.phase) {
            (Decision::Reached { epoch, metric, .. }, Phase::Training { to }) if *epoch == to && to < last => {
                t.rungs.push((*epoch, metric.unwrap_or(f64::NAN)));
                Phase::Paused { at: *epoch }
            }
            (Decision::Finished { epoch, metric, .. }, Phase::Training { to }) if *epoch <= to && *epoch > 0 => {
                t.rungs.push((*epoch, metric.unwrap_or(f64::NAN)));
                Phase::Finished
            }
            (Decision::Promoted { from, to, .. }, Phase::Paused { at })
                if *from == at && rungs.iter().position(|&r| r == at).and_then(|i| rungs.get(i + 1)) == Some(to) =>
            {
                Phase::Training { to: *to }
            }
            (Decision::Stopped { epoch, .. }, Phase::Paused { at }) if *epoch == at => Phase::Stopped { at },
            (Decision::Exploited { donor, epoch, values, .. }, Phase::Paused { at })
                if *epoch == at && rungs.iter().position(|&r| r == at).and_then(|i| rungs.get(i + 1)).is_some() =>
            {
                let to = rungs[rungs.iter().position(|&r| r == at).unwrap_or(0) + 1];
                t.values = values.clone();
                t.exploits.push((*donor, *epoch));
                Phase::Training { to }
            }
            (Decision::Failed { .. }, Phase::Training { .. }) => Phase::Failed,
            (d, phase) => return Err(format!("{} does not follow: trial {trial} is {phase:?}", describe(d))),
        };
        t.phase = next_phase;
        Ok(())
    }
}

/// A decision in a few words, for errors.
pub(crate) fn describe(d: &Decision) -> String {
    match d {
        Decision::Begin { .. } => "`begin`".into(),
        Decision::Created { trial, .. } => format!("`created` trial {trial}"),
        Decision::Reached { trial, epoch, .. } => format!("`reached` epoch {epoch} by trial {trial}"),
        Decision::Promoted { trial, from, to } => format!("`promoted` trial {trial} from {from} to {to}"),
        Decision::Stopped { trial, epoch } => format!("`stopped` trial {trial} at {epoch}"),
        Decision::Finished { trial, epoch, .. } => format!("`finished` trial {trial} at {epoch}"),
        Decision::Failed { trial } => format!("`failed` trial {trial}"),
        Decision::Exploited { trial, donor, epoch, .. } => format!("`exploited` trial {donor} by {trial} at {epoch}"),
    }
}
