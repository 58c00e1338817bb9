//! The study's journal on the sweep volume: `VOLUME/<name>/study/NNNNNNNN.json`, one decision per numbered file,
//! append-only, shared by every worker of the sweep (local slots, Slurm array tasks, pods, containers).
//!
//! How workers agree on the next record, on a network file system, without a lock server or SQLite: record `n`
//! is created exclusively (written and fsynced under a temporary name, then `link(2)`ed to its number, so its
//! contents are complete before its name appears). The worker that creates it won; a worker that finds the name
//! taken lost the race, reads the records it missed, and recomputes its decision from them (every decision is a
//! pure function of the records before it). Each record carries a nonce, so a create that NFS retransmitted
//! and then reported as "exists" is recognised as this worker's own. Records are looked up by name, one number
//! after another, never through a directory listing. Owns the file format only; what a record means is
//! [`super::state`]'s.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sweep::error::SweepError;
use crate::sweep::lease;

/// One decision of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Decision {
    /// The study began: the sweep definition it follows (a hash), its scheduler and rung settings (so the study
    /// can be read from the volume alone), and how many configs it starts.
    Begin { definition: String, scheduler: String, min_epochs: usize, eta: usize, epochs: usize, configs: usize },
    /// Trial `trial` exists: sweep run `index` (`run` its id, `values` the swept keys), in `bracket`, proposed by
    /// `origin` (`grid`, `random`, `list`, `tpe`).
    Created {
        trial: usize,
        index: usize,
        run: String,
        origin: String,
        bracket: usize,
        values: Vec<(String, toml::Value)>,
    },
    /// The trial reached the rung at `epoch` with this metric (absent when it was not a number) and paused there.
    Reached { trial: usize, epoch: usize, metric: Option<f64> },
    /// The paused trial ranked in its rung's top 1/eta: it trains on from rung `from` to rung `to`.
    Promoted { trial: usize, from: usize, to: usize },
    /// PBT: the trial, paused at `epoch` in its interval's bottom quantile, continues from `donor`'s checkpoint of
    /// that epoch (copied whole and verified) with these explored values.
    Exploited { trial: usize, donor: usize, epoch: usize, values: Vec<(String, toml::Value)> },
    /// The paused trial's rung is closed and it was not promoted: it ends with its weights of epoch `epoch`.
    Stopped { trial: usize, epoch: usize },
    /// The trial trained to its end (the last rung, or early stopping) at `epoch`.
    Finished { trial: usize, epoch: usize, metric: Option<f64> },
    /// The trial failed for good (its retries used up, or a permanent error).
    Failed { trial: usize },
}

/// A record: the decision and who wrote it when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub seq: u64,
    pub nonce: String,
    pub unix_ms: u64,
    pub host: String,
    pub pid: u32,
    pub decision: Decision,
}

/// How an [`Journal::append`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// The record is `seq`, written by this worker.
    Written,
    /// Another worker wrote `seq` first: read it and decide again.
    Lost,
}

/// The journal of one sweep.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

/// How many numbers past the first missing one are looked at for a gap (a record deleted by hand).
const GAP_PROBE: u64 = 3;

impl Journal {
    pub(crate) fn new(sweep_root: &Path) -> Journal {
        Journal { dir: sweep_root.join("study") }
    }

    pub(crate) fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:08}.json"))
    }

    /// Whether the study has begun (its first record exists); an I/O error is an error, never "no".
    pub(crate) fn exists(&self) -> Result<bool, SweepError> {
        let p = self.path(0);
        match std::fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SweepError::io(p, e)),
        }
    }

    /// Reads records `from`, `from + 1`, … up to the first number that does not exist, appending them to `out`.
    /// A record that cannot be parsed, or whose `seq` is not its number, or a number missing before one that
    /// exists, is an error naming the file.
    pub(crate) fn read_from(&self, from: u64, out: &mut Vec<Record>) -> Result<(), SweepError> {
        let mut seq = from;
        loop {
            let path = self.path(seq);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.no_gap_after(seq)? {
                    // Written between our look and the probe of the numbers after it (a record's number exists
                    // before the next one is taken): read it now.
                    true => std::fs::read(&path).map_err(|e| SweepError::io(&path, e))?,
                    false => return Ok(()),
                },
                Err(e) => return Err(SweepError::io(path, e)),
            };
            out.push(parse(&path, seq, &bytes)?);
            seq += 1;
        }
    }

    /// Every record, in order.
    pub(crate) fn read_all_records(&self) -> Result<Vec<Record>, SweepError> {
        let mut out = Vec::new();
        self.read_from(0, &mut out)?;
        Ok(out)
    }

    /// Every record, in order.
    #[cfg(test)]
    pub(crate) fn read_all(&self) -> Result<Vec<Record>, SweepError> {
        let mut out = Vec::new();
        self.read_from(0, &mut out)?;
        Ok(out)
    }

    /// After record `missing` was not found: Ok(false) when none of the next few numbers exists either (the end of
    /// the journal), Ok(true) when `missing` exists after all (another worker wrote it and more records since our
    /// look), an error when a later record exists and `missing` still does not (a gap).
    fn no_gap_after(&self, missing: u64) -> Result<bool, SweepError> {
        for later in missing + 1..=missing + GAP_PROBE {
            let p = self.path(later);
            match std::fs::symlink_metadata(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SweepError::io(p, e)),
                Ok(_) if self.path(missing).exists() => return Ok(true),
                Ok(_) => {
                    return Err(SweepError::Study {
                        path: self.path(missing),
                        message: format!(
                            "missing, but record {later} exists: the study's journal has a gap (a record was deleted \
                             or lost); restore it, or start the study over under a new sweep name"
                        ),
                    })
                }
            }
        }
        Ok(false)
    }

    /// Writes `decision` as record `seq` unless another worker wrote `seq` first.
    pub(crate) fn append(&self, seq: u64, decision: &Decision) -> Result<Appended, SweepError> {
        let pid = std::process::id();
        let nonce = format!("{pid}-{}", crate::checkpoint::unique_suffix());
        let record =
            Record { seq, nonce, unix_ms: lease::now_ms(), host: lease::hostname(), pid, decision: decision.clone() };
        self.append_record(&record)
    }

    /// [`Journal::append`] of a record built already (its nonce included).
    fn append_record(&self, record: &Record) -> Result<Appended, SweepError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| SweepError::io(&self.dir, e))?;
        let (seq, path) = (record.seq, self.path(record.seq));
        let bytes = serde_json::to_vec(record).map_err(|e| SweepError::io(&path, std::io::Error::other(e)))?;
        match lease::create_new_file(&path, &bytes) {
            Ok(()) => Ok(Appended::Written),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Ours after all (an NFS retransmit of our own create)? Only the nonce can tell.
                let there = std::fs::read(&path).map_err(|e| SweepError::io(&path, e))?;
                let theirs = parse(&path, seq, &there)?;
                Ok(if theirs.nonce == record.nonce { Appended::Written } else { Appended::Lost })
            }
            Err(e) => Err(SweepError::io(path, e)),
        }
    }
}

/// Parses record `seq` read from `path`.
pub(crate) fn parse(path: &Path, seq: u64, bytes: &[u8]) -> Result<Record, SweepError> {
    let bad = |message: String| SweepError::Study { path: path.into(), message };
    let r: Record =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a study record (damaged or truncated?): {e}")))?;
    if r.seq != seq {
        return Err(bad(format!("holds record {} where record {seq} belongs (copied or renamed by hand?)", r.seq)));
    }
    Ok(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn reached(trial: usize) -> Decision {
        Decision::Reached { trial, epoch: 1, metric: Some(0.5) }
    }

    #[test]
    fn one_writer_wins_each_number_and_the_loser_is_told() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        assert!(!j.exists().unwrap());
        assert_eq!(j.append(0, &reached(0)).unwrap(), Appended::Written);
        assert_eq!(j.append(0, &reached(1)).unwrap(), Appended::Lost, "number 0 is taken");
        assert_eq!(j.append(1, &reached(1)).unwrap(), Appended::Written);
        let all = j.read_all().unwrap();
        assert_eq!(all.iter().map(|r| r.decision.clone()).collect::<Vec<_>>(), vec![reached(0), reached(1)]);
        assert!(j.exists().unwrap());
    }

    #[test]
    fn a_retransmitted_create_of_our_own_record_counts_as_written() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        let mine = Record { seq: 0, nonce: "a".into(), unix_ms: 1, host: "h".into(), pid: 1, decision: reached(0) };
        // The first transmission created the file; the retransmit is told "exists".
        std::fs::create_dir_all(d.path().join("study")).unwrap();
        lease::create_new_file(&j.path(0), &serde_json::to_vec(&mine).unwrap()).unwrap();
        assert_eq!(j.append_record(&mine).unwrap(), Appended::Written, "the record there carries our nonce");
        let other = Record { nonce: "b".into(), ..mine.clone() };
        assert_eq!(j.append_record(&other).unwrap(), Appended::Lost, "same number, another writer's nonce");
    }

    #[test]
    fn a_record_written_after_our_look_but_before_the_probe_is_read_not_called_a_gap() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        for i in 0..3 {
            j.append(i, &reached(i as usize)).unwrap();
        }
        // The reader looked for 1 before it existed; by the time it probes 2, both 1 and 2 are there.
        assert!(j.no_gap_after(1).unwrap(), "record 1 exists now: read it");
        let mut out = Vec::new();
        j.read_from(1, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert!(!j.no_gap_after(3).unwrap(), "the end of the journal");
    }

    #[test]
    fn damaged_renamed_and_missing_records_are_errors_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        for i in 0..3 {
            j.append(i, &reached(i as usize)).unwrap();
        }
        let keep = std::fs::read(j.path(1)).unwrap();
        std::fs::write(j.path(1), &keep[..keep.len() / 2]).unwrap();
        let e = j.read_all().unwrap_err().to_string();
        assert!(e.contains("00000001.json") && e.contains("damaged or truncated"), "{e}");
        std::fs::write(j.path(1), std::fs::read(j.path(2)).unwrap()).unwrap();
        let e = j.read_all().unwrap_err().to_string();
        assert!(e.contains("holds record 2 where record 1 belongs"), "{e}");
        std::fs::remove_file(j.path(1)).unwrap();
        let e = j.read_all().unwrap_err().to_string();
        assert!(e.contains("00000001.json") && e.contains("gap"), "{e}");
    }
}
