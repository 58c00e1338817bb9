//! Retention as a pure policy: given what is on disk, which checkpoint directories to delete.
//!
//! Rules: never touch the newest committed checkpoint; keep the newest `keep_last` committed ones; delete older
//! committed ones, and uncommitted directories (no valid manifest: torn or abandoned writes) older than the
//! newest committed one. Uncommitted directories newer than it may be a write in flight and are kept.

/// One checkpoint directory as seen on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub step: u64,
    pub committed: bool,
}

/// Names of the directories to delete.
pub fn to_delete(entries: &[Entry], keep_last: usize) -> Vec<String> {
    let keep_last = keep_last.max(1);
    let mut committed: Vec<&Entry> = entries.iter().filter(|e| e.committed).collect();
    committed.sort_by_key(|e| std::cmp::Reverse(e.step));
    let Some(newest) = committed.first().map(|e| e.step) else {
        return Vec::new();
    };
    let mut out: Vec<String> = committed.iter().skip(keep_last).map(|e| e.name.clone()).collect();
    out.extend(entries.iter().filter(|e| !e.committed && e.step < newest).map(|e| e.name.clone()));
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(step: u64, committed: bool) -> Entry {
        Entry { name: format!("ckpt-{step:010}"), step, committed }
    }

    #[test]
    fn keeps_the_newest_committed_and_drops_the_rest() {
        let v = [e(10, true), e(20, true), e(30, true), e(25, false), e(40, false)];
        assert_eq!(to_delete(&v, 2), ["ckpt-0000000010", "ckpt-0000000025"]);
        assert_eq!(to_delete(&v, 1), ["ckpt-0000000010", "ckpt-0000000020", "ckpt-0000000025"]);
        assert_eq!(to_delete(&v, 5), ["ckpt-0000000025"]);
    }

    #[test]
    fn never_deletes_without_a_committed_checkpoint_and_never_the_newest() {
        assert!(to_delete(&[e(10, false), e(20, false)], 1).is_empty());
        assert!(to_delete(&[e(10, true)], 0).is_empty(), "keep_last 0 still keeps the newest");
    }
}
