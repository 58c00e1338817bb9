//! Saving without stopping training: at most one checkpoint write in flight on a background thread.
//!
//! The snapshot is copied to host memory on the training thread (so training can go on mutating the live
//! tensors), then serialised, written, committed and verified on the writer thread. A failed write is returned
//! by the next `save` or by `flush`, never dropped; `flush` must be called before the process exits. Retention
//! (deleting checkpoints beyond `keep_last`) runs after each commit off the training thread in both modes.
use std::sync::Arc;
use std::thread::JoinHandle;

use super::store::{CheckpointError, Committed, Snapshot, Store};

pub(crate) struct Writer {
    store: Arc<Store>,
    background: bool,
    inflight: Option<JoinHandle<Result<Committed, CheckpointError>>>,
    /// Deleting old checkpoints after a synchronous commit, on its own thread.
    retention: Option<JoinHandle<()>>,
    last: Option<Committed>,
}

impl Writer {
    /// `background = true` is `checkpoint.async`.
    pub(crate) fn new(store: Store, background: bool) -> Writer {
        Writer { store: Arc::new(store), background, inflight: None, retention: None, last: None }
    }

    /// The same writer, saving in the background from now on.
    pub(crate) fn in_background(mut self) -> Writer {
        self.background = true;
        self
    }

    /// Waits for the write in flight (if any), then saves `snap` (in the background when async).
    pub(crate) fn save(&mut self, snap: Snapshot) -> Result<(), CheckpointError> {
        self.flush()?;
        let store = Arc::clone(&self.store);
        if self.background {
            self.inflight = Some(std::thread::spawn(move || {
                let committed = store.commit(snap)?;
                store.apply_retention();
                Ok(committed)
            }));
        } else {
            self.last = Some(self.store.commit(snap)?);
            self.retention = Some(std::thread::spawn(move || store.apply_retention()));
        }
        Ok(())
    }

    /// Waits for the write in flight and returns the newest committed checkpoint of this process.
    pub(crate) fn flush(&mut self) -> Result<Option<Committed>, CheckpointError> {
        if let Some(h) = self.retention.take() {
            h.join().map_err(|_| CheckpointError::Thread)?;
        }
        if let Some(h) = self.inflight.take() {
            self.last = Some(h.join().map_err(|_| CheckpointError::Thread)??);
        }
        Ok(self.last.clone())
    }

    /// The newest committed checkpoint known without waiting.
    pub(crate) fn last(&self) -> Option<&Committed> {
        self.last.as_ref()
    }
}
