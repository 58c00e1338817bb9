//! Retention as a pure policy: given what is on disk, which checkpoint directories to delete.
//!
//! Rules: never touch the newest committed checkpoint; keep the newest `keep_last` committed ones; delete older
//! committed ones, and scratch directories (no manifest at all: a save interrupted before its commit point) older
//! than the newest committed one. Scratch directories newer than it may be a write in flight and are kept. A
//! directory whose manifest exists but could not be read or parsed is never deleted: only what was positively
//! identified as superseded or as an abandoned write goes.

/// What a checkpoint directory was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its manifest parses: a committed checkpoint (verification of its files is separate).
    Committed,
    /// No manifest: an interrupted or in-flight save.
    Scratch,
    /// A manifest exists but could not be read or is invalid: kept, reported, never deleted.
    Unknown,
}

/// One checkpoint directory as seen on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub step: u64,
    pub state: State,
}

impl Entry {
    pub fn committed(&self) -> bool {
        self.state == State::Committed
    }
}

/// Names of the directories to delete. `protect` (the best epoch's step, `checkpoint.keep_best`) is kept beyond
/// `keep_last`.
pub(super) fn to_delete(entries: &[Entry], keep_last: usize, protect: Option<u64>) -> Vec<String> {
    let keep_last = keep_last.max(1);
    let mut committed: Vec<&Entry> = entries.iter().filter(|e| e.committed()).collect();
    committed.sort_by_key(|e| std::cmp::Reverse(e.step));
    let Some(newest) = committed.first().map(|e| e.step) else {
        return Vec::new();
    };
    let mut out: Vec<String> =
        committed.iter().skip(keep_last).filter(|e| Some(e.step) != protect).map(|e| e.name.clone()).collect();
    out.extend(entries.iter().filter(|e| e.state == State::Scratch && e.step < newest).map(|e| e.name.clone()));
    out.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn e(step: u64, state: State) -> Entry {
        Entry { name: format!("ckpt-{step:010}"), step, state }
    }

    #[test]
    fn keeps_the_newest_committed_and_drops_the_rest() {
        use State::*;
        let v = [e(10, Committed), e(20, Committed), e(30, Committed), e(25, Scratch), e(40, Scratch)];
        assert_eq!(to_delete(&v, 2, None), ["ckpt-0000000010", "ckpt-0000000025"]);
        assert_eq!(to_delete(&v, 1, None), ["ckpt-0000000010", "ckpt-0000000020", "ckpt-0000000025"]);
        assert_eq!(to_delete(&v, 5, None), ["ckpt-0000000025"]);
        // The best epoch's checkpoint stays beyond keep_last.
        assert_eq!(to_delete(&v, 1, Some(10)), ["ckpt-0000000020", "ckpt-0000000025"]);
    }

    #[test]
    fn never_deletes_without_a_committed_checkpoint_and_never_the_newest() {
        assert!(to_delete(&[e(10, State::Scratch), e(20, State::Scratch)], 1, None).is_empty());
        assert!(to_delete(&[e(10, State::Committed)], 0, None).is_empty(), "keep_last 0 still keeps the newest");
    }

    #[test]
    fn a_directory_whose_manifest_could_not_be_read_is_never_deleted() {
        let v = [e(5, State::Unknown), e(10, State::Committed), e(20, State::Committed)];
        assert!(to_delete(&v, 1, None) == ["ckpt-0000000010"], "the unreadable one stays: it may be a good checkpoint");
    }
}
