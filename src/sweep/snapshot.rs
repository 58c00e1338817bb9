//! The sweep file as workers read it: made self-contained (its `base` inlined) and written once, when the sweep
//! is launched, so editing the file mid-sweep cannot shift what an index means. One writer for every launcher:
//! `spotrun sweep` (a content-named file, see [`Snapshot::launched_name`]) and the engines (a file per engine).
use std::path::Path;

use super::error::SweepError;

/// A sweep file's self-contained text.
pub(crate) struct Snapshot {
    pub text: String,
}

impl Snapshot {
    /// The sweep file at `path`, base inlined.
    pub(crate) fn of(path: &Path) -> Result<Snapshot, SweepError> {
        Ok(Snapshot { text: super::spec::self_contained(path)? })
    }

    /// `launched-<sha256 of the text, 12 hex>.toml`: named by its content, so relaunching the same sweep reuses
    /// the file, launchers sharing a volume never remove one another's, a killed launcher leaves nothing behind
    /// that the next one does not reuse, and the volume records every version of the sweep that ran.
    pub(crate) fn launched_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let tag: String = Sha256::digest(self.text.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("launched-{tag}.toml")
    }

    /// Writes the text to `path` (creating its directory), atomically, and only when the file does not hold it
    /// already.
    pub(crate) fn write(&self, path: &Path) -> Result<(), SweepError> {
        if std::fs::read(path).ok().as_deref() == Some(self.text.as_bytes()) {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| SweepError::io(path, e))?;
        }
        crate::checkpoint::write_atomic(path, self.text.as_bytes()).map_err(|e| SweepError::io(path, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_named_by_its_content_and_written_once() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Snapshot { text: "name = \"a\"\n".into() };
        let b = Snapshot { text: "name = \"b\"\n".into() };
        assert_eq!(a.launched_name(), Snapshot { text: a.text.clone() }.launched_name());
        assert_ne!(a.launched_name(), b.launched_name());
        assert!(a.launched_name().starts_with("launched-") && a.launched_name().len() == "launched-.toml".len() + 12);
        let path = tmp.path().join("new").join(a.launched_name());
        a.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), a.text);
        b.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), b.text, "a changed text is rewritten");
    }
}
