//! What `spotrun sweep` runs on: its options and its device slots (GPUs, `--per-gpu` shares of them, or CPU slots
//! with their threads), as plain data and one pure function. Shared by the launcher of fixed sweeps
//! ([`super::launcher`]) and of studies ([`super::study::launch`]); imports nothing of either.
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    pub volume: Option<PathBuf>,
    pub workers: Option<usize>,
    pub gpus: Option<Vec<usize>>,
    pub per_gpu: usize,
    pub retries: Option<u32>,
    /// First retry delay after a failure, doubled per failure (capped at 5 minutes).
    pub backoff_seconds: f64,
    pub dry_run: bool,
    pub quiet: bool,
    /// `--no-fuse`: one worker process per run.
    pub no_fuse: bool,
}

/// Where a child runs.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub name: String,
    pub cuda: Option<usize>,
    pub threads: Option<usize>,
}

/// The slots for these options: explicit GPUs, explicit CPU workers, else every visible GPU, else one CPU slot.
pub(super) fn slots(o: &LaunchOptions, visible_gpus: usize, cores: usize) -> Vec<Slot> {
    let k = o.per_gpu.max(1);
    let gpus: Vec<usize> = match (&o.gpus, o.workers) {
        (Some(g), _) => g.clone(),
        (None, None) => (0..visible_gpus).collect(),
        (None, Some(_)) => Vec::new(),
    };
    if !gpus.is_empty() {
        return gpus
            .iter()
            .flat_map(|&g| (0..k).map(move |j| Slot { name: format!("cuda:{g}/{j}"), cuda: Some(g), threads: None }))
            .collect();
    }
    let n = o.workers.unwrap_or(1).max(1);
    let threads = (cores / n / k).max(1);
    (0..n)
        .flat_map(|i| (0..k).map(move |j| Slot { name: format!("cpu{i}/{j}"), cuda: None, threads: Some(threads) }))
        .collect()
}
