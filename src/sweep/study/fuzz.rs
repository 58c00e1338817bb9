//! Fuzzing the study's journal (`scripts/fuzz.sh` runs more cases): a real journal written by simulated workers,
//! then damaged (a record truncated, a byte flipped, a file deleted, copied over another, two swapped), reordered
//! (two decisions exchanged, each file still well-formed), or with a decision duplicated as the next record. Reading
//! and replaying it is a clear error naming a record or a state from which the scheduler's next decision applies
//! cleanly; never a panic, never a decision applied twice.
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use super::asha::{decide, Action};
use super::journal::{Decision, Journal, Record};
use super::state::{Phase, StudyState};
use crate::sweep::schedule::{Schedule, SchedulerKind};

fn schedule() -> Schedule {
    Schedule::new(SchedulerKind::Hyperband, Some(1), Some(2), 8).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The decision that carries out `a` on `st` (a Create as config number `trials.len()`); None for Wait/Complete.
fn carry_out(st: &StudyState, a: Action) -> Option<Decision> {
    Some(match a {
        Action::Create { bracket } => {
            let i = st.trials.len();
            Decision::Created {
                trial: i,
                index: i,
                run: format!("r{i}"),
                origin: "random".into(),
                bracket,
                values: vec![],
            }
        }
        Action::Promote { trial, from, to } => Decision::Promoted { trial, from, to },
        Action::Stop { trial, epoch } => Decision::Stopped { trial, epoch },
        Action::Exploit { trial, donor, epoch } => Decision::Exploited { trial, donor, epoch, values: vec![] },
        Action::Wait | Action::Complete => return None,
    })
}

/// A complete study of 10 configs written to `journal`, trials trained lowest first, metric = f(trial, epoch).
fn write_study(journal: &Journal) -> usize {
    let s = schedule();
    let mut st = StudyState::default();
    let mut seq = 0u64;
    let mut put = |st: &mut StudyState, d: Decision| {
        journal.append(seq, &d).unwrap_or_else(|e| panic!("{e}"));
        st.apply(&d, &s).unwrap_or_else(|e| panic!("{e}"));
        seq += 1;
    };
    put(
        &mut st,
        Decision::Begin {
            definition: "d".into(),
            scheduler: "hyperband".into(),
            min_epochs: 1,
            eta: 3,
            epochs: 9,
            configs: 10,
        },
    );
    loop {
        let a = decide(&st, &s, 10, true);
        if let Some(d) = carry_out(&st, a) {
            put(&mut st, d);
            continue;
        }
        let Some((i, to)) = st.trials.iter().enumerate().find_map(|(i, t)| match t.phase {
            Phase::Training { to } => Some((i, to)),
            _ => None,
        }) else {
            return seq as usize;
        };
        let metric = Some(((i * 37) % 11) as f64 + to as f64 / 10.0);
        let d = if to == s.epochs {
            Decision::Finished { trial: i, epoch: to, metric }
        } else {
            Decision::Reached { trial: i, epoch: to, metric }
        };
        put(&mut st, d);
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize, usize),
    Flip(usize, usize, u8),
    Delete(usize),
    CopyOver(usize, usize),
    SwapFiles(usize, usize),
    SwapDecisions(usize, usize),
    DuplicateAsNext(usize),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        (0..200usize, 0..400usize).prop_map(|(i, n)| Damage::Truncate(i, n)),
        (0..200usize, 0..400usize, 1..=255u8).prop_map(|(i, p, x)| Damage::Flip(i, p, x)),
        (0..200usize).prop_map(Damage::Delete),
        (0..200usize, 0..200usize).prop_map(|(i, j)| Damage::CopyOver(i, j)),
        (0..200usize, 0..200usize).prop_map(|(i, j)| Damage::SwapFiles(i, j)),
        (0..200usize, 0..200usize).prop_map(|(i, j)| Damage::SwapDecisions(i, j)),
        (0..200usize).prop_map(Damage::DuplicateAsNext),
    ];
    proptest::collection::vec(one, 1..4)
}

fn read(j: &Journal, i: usize) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(j.path(i as u64)).ok()?).ok()
}

fn write(j: &Journal, r: &Record) {
    let _ = std::fs::write(j.path(r.seq), serde_json::to_vec(r).unwrap_or_default());
}

fn apply_damage(j: &Journal, n: usize, d: &Damage) {
    let p = |i: usize| j.path((i % n) as u64);
    match *d {
        Damage::Truncate(i, len) => {
            let b = std::fs::read(p(i)).unwrap_or_default();
            let _ = std::fs::write(p(i), &b[..len.min(b.len())]);
        }
        Damage::Flip(i, pos, x) => {
            let mut b = std::fs::read(p(i)).unwrap_or_default();
            let at = pos % b.len().max(1);
            if let Some(c) = b.get_mut(at) {
                *c ^= x;
            }
            let _ = std::fs::write(p(i), b);
        }
        Damage::Delete(i) => drop(std::fs::remove_file(p(i))),
        Damage::CopyOver(i, k) => drop(std::fs::copy(p(i), p(k))),
        Damage::SwapFiles(i, k) => {
            let (a, b) = (std::fs::read(p(i)).unwrap_or_default(), std::fs::read(p(k)).unwrap_or_default());
            let _ = (std::fs::write(p(i), b), std::fs::write(p(k), a));
        }
        Damage::SwapDecisions(i, k) => {
            if let (Some(mut a), Some(mut b)) = (read(j, i % n), read(j, k % n)) {
                std::mem::swap(&mut a.decision, &mut b.decision);
                write(j, &a);
                write(j, &b);
            }
        }
        Damage::DuplicateAsNext(i) => {
            let last = (0..).take_while(|&s| j.path(s).exists()).count();
            if let Some(mut r) = read(j, i % n) {
                r.seq = last as u64;
                write(j, &r);
            }
        }
    }
}

/// Replays the journal: Ok(state) or the error's text; the error must name a record file.
fn replay(j: &Journal) -> Result<StudyState, String> {
    let s = schedule();
    let mut records = Vec::new();
    j.read_from(0, &mut records).map_err(|e| e.to_string())?;
    let mut st = StudyState::default();
    for r in &records {
        st.apply(&r.decision, &s).map_err(|e| format!("{}: {e}", j.path(r.seq).display()))?;
    }
    Ok(st)
}

#[test]
fn damaged_reordered_and_duplicated_journals_are_clear_errors_or_consistent_states() {
    let n_cases = std::env::var("SPOTRUN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300u32);
    let pristine = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = write_study(&Journal::new(pristine.path()));
    let whole = replay(&Journal::new(pristine.path())).unwrap_or_else(|e| panic!("{e}"));
    let mut runner =
        TestRunner::new(RunnerConfig { cases: n_cases, failure_persistence: None, ..RunnerConfig::default() });
    let (errors, accepted) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let result = runner.run(&damage(), |damages| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("study")).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..n {
            let name = format!("study/{i:08}.json");
            std::fs::copy(pristine.path().join(&name), dir.path().join(&name)).unwrap_or_else(|e| panic!("{e}"));
        }
        let j = Journal::new(dir.path());
        for d in &damages {
            apply_damage(&j, n, d);
        }
        match replay(&j) {
            Err(e) => {
                prop_assert!(e.contains(".json"), "the error names a record: {e}");
                errors.set(errors.get() + 1);
            }
            Ok(st) => {
                accepted.set(accepted.get() + 1);
                // Never more than one creation per run, and what the scheduler decides next applies cleanly.
                let mut runs: Vec<&str> = st.trials.iter().map(|t| t.run.as_str()).collect();
                runs.sort_unstable();
                runs.dedup();
                prop_assert_eq!(runs.len(), st.trials.len());
                prop_assert!(st.applied <= whole.applied + damages.len() as u64);
                if let Some(d) = carry_out(&st, decide(&st, &schedule(), 10, true)) {
                    let mut next = st.clone();
                    prop_assert!(next.apply(&d, &schedule()).is_ok(), "the next decision {d:?} does not apply");
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz study journal: {e}");
    }
    eprintln!(
        "fuzz study journal: {n_cases} inputs, 0 panics ({} clear errors, {} consistent states)",
        errors.get(),
        accepted.get()
    );
}
