//! Devices: parsing `train.device`, choosing the tch device (the policy [`decide`]: no silent CPU run where the
//! driver sees a GPU that libtorch cannot use), and listing CUDA GPUs and the driver's CUDA version through cudarc.
//!
//! cudarc loads libcuda dynamically, so this builds and runs on machines without CUDA; there the listing is
//! simply empty. Also what a run may plan with on a GPU ([`GpuMemory::budget`]: the driver's free figure, this
//! process's cached blocks, the card's share per `--per-gpu` worker). Imports no spotrun module but `ffi` (the
//! driver and libtorch queries).
use cudarc::driver::CudaContext;

/// What `train.device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
}

/// Parses `auto`, `cpu`, `cuda` (= `cuda:0`) or `cuda:N`; `None` for anything else.
pub fn parse_device(s: &str) -> Option<DeviceRequest> {
    match s {
        "auto" => Some(DeviceRequest::Auto),
        "cpu" => Some(DeviceRequest::Cpu),
        "cuda" => Some(DeviceRequest::Cuda(0)),
        _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceRequest::Cuda),
    }
}

/// What the NVIDIA driver and the loaded libtorch report: the inputs of [`decide`] besides the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CudaFacts {
    /// GPUs the NVIDIA driver sees (0 without a driver, or when `cuInit` fails).
    pub driver_gpus: usize,
    /// The newest CUDA version the driver supports (`cuDriverGetVersion`: 12080 = 12.8); `None` without a driver.
    pub driver_cuda: Option<i32>,
    /// GPUs libtorch sees.
    pub torch_gpus: usize,
    /// The CUDA runtime the loaded libtorch was built with (13000 = 13.0); `None` for a CPU-only libtorch.
    pub torch_cuda: Option<i32>,
}

/// A CUDA version number as text: 12080 → "12.8", `None` → "none".
pub fn cuda_version_text(v: Option<i32>) -> String {
    v.map_or_else(|| "none".to_string(), |v| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// The device policy. `auto` takes the first GPU libtorch sees and the CPU only where the driver sees no GPU
/// either: a GPU that the driver sees but libtorch does not (a torch built for a newer CUDA than the driver
/// supports) is an error naming both versions, never a silent CPU run. `cpu` is always the CPU. `Err` is the
/// message of an `error:` line.
pub fn decide(request: DeviceRequest, facts: &CudaFacts) -> Result<tch::Device, String> {
    let count = facts.torch_gpus;
    let mismatch = count == 0 && facts.driver_gpus > 0;
    match request {
        DeviceRequest::Cpu => Ok(tch::Device::Cpu),
        DeviceRequest::Auto if count > 0 => Ok(tch::Device::Cuda(0)),
        DeviceRequest::Cuda(i) if i < count => Ok(tch::Device::Cuda(i)),
        DeviceRequest::Auto | DeviceRequest::Cuda(_) if mismatch => Err(mismatch_message(request, facts)),
        DeviceRequest::Auto => Ok(tch::Device::Cpu),
        DeviceRequest::Cuda(i) => Err(format!(
            "train.device = \"cuda:{i}\" but libtorch sees {count} CUDA device(s){}",
            if count == 0 { "; use train.device = \"cpu\" or \"auto\"" } else { "" }
        )),
    }
}

fn mismatch_message(request: DeviceRequest, facts: &CudaFacts) -> String {
    let asked = match request {
        DeviceRequest::Cuda(i) => format!("cuda:{i}"),
        _ => "auto".to_string(),
    };
    let driver = cuda_version_text(facts.driver_cuda);
    let torch = match facts.torch_cuda {
        Some(_) => format!("this libtorch is built for CUDA {}", cuda_version_text(facts.torch_cuda)),
        None => "this libtorch is a CPU-only build".to_string(),
    };
    format!(
        "train.device = \"{asked}\" but libtorch sees no GPU while the NVIDIA driver sees {} (the driver supports \
         CUDA up to {driver}; {torch}); set train.device = \"cpu\" to train on the CPU, or install a torch build \
         for CUDA {driver} or older (scripts/setup.sh with SPOTRUN_TORCH_INDEX, e.g. \
         https://download.pytorch.org/whl/cu128)",
        facts.driver_gpus
    )
}

/// Resolves a request against what libtorch and the driver see ([`decide`]). The driver is asked only when
/// libtorch sees no GPU and the request is not `cpu`, the one case where its answer matters, so a working GPU
/// host pays nothing extra.
pub fn select(request: DeviceRequest) -> Result<tch::Device, String> {
    let torch_gpus = tch::Cuda::device_count().max(0) as usize;
    let mut facts = CudaFacts { torch_gpus, ..CudaFacts::default() };
    if request != DeviceRequest::Cpu && torch_gpus == 0 {
        (facts.driver_gpus, facts.driver_cuda) = driver_facts();
        facts.torch_cuda = crate::ffi::torch_cuda_version();
    }
    decide(request, &facts)
}

/// What the driver reports: its GPU count (0 when `cuInit` fails) and CUDA version.
pub fn driver_facts() -> (usize, Option<i32>) {
    #[cfg(feature = "test-hooks")]
    if let Some(faked) = faked_driver() {
        return faked;
    }
    let version = crate::ffi::cuda_driver_version();
    if version.is_none() {
        return (0, None);
    }
    (CudaContext::device_count().map_or(0, |n| n.max(0) as usize), version)
}

/// Test-only: `SPOTRUN_TEST_CUDA_DRIVER=GPUS,VERSION` (e.g. `1,12080`) stands in for the driver's answer, so a
/// CPU machine can show the mismatch error through the binary (compiled in only with the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
fn faked_driver() -> Option<(usize, Option<i32>)> {
    let v = std::env::var("SPOTRUN_TEST_CUDA_DRIVER").ok()?;
    let (gpus, version) = v.split_once(',')?;
    Some((gpus.trim().parse().ok()?, version.trim().parse().ok()))
}

/// Bytes of host memory this process can still allocate: `MemAvailable` from /proc/meminfo, or the cgroup
/// limit minus its usage where that is smaller (a container). `None` where neither can be read.
pub fn host_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    });
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .and_then(|max| read("/sys/fs/cgroup/memory.current").map(|cur| max.saturating_sub(cur)));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One CUDA device as the driver reports it.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_bytes: usize,
    pub free_bytes: usize,
    pub compute_capability: (i32, i32),
}

/// Lists CUDA devices; empty when there is no driver or no device. Errors are reported as text, not panics.
pub fn list_gpus() -> Result<Vec<GpuInfo>, String> {
    if !crate::ffi::cuda_driver_present() {
        return Ok(Vec::new());
    }
    let count = match CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => return Err(format!("CUDA driver present but unusable: {e}")),
    };
    (0..count).map(gpu_info).collect()
}

/// Driver facts for one device (creates or reuses its primary context, as libtorch does).
pub fn gpu_info(ordinal: usize) -> Result<GpuInfo, String> {
    let ctx = CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let name = ctx.name().map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let compute_capability = ctx.compute_capability().map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let (free_bytes, total_bytes) = ctx.mem_get_info().map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    Ok(GpuInfo { ordinal, name, total_bytes, free_bytes, compute_capability })
}

/// What one GPU's memory looks like to this process: the inputs of [`GpuMemory::budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// The card's memory (`cuMemGetInfo`).
    pub total: u64,
    /// What the driver reports free: excludes what this process's caching allocator holds, used or not.
    pub free: u64,
    /// Cached but unused by this process's caching allocator (reserved minus allocated): blocks left by earlier runs
    /// in a long-lived worker, which the allocator reuses (and releases itself before it reports out of memory).
    pub cached: u64,
    /// In live tensors of this process (e.g. a worker's data, kept for its next run).
    pub held: u64,
    /// How many workers share the card (`spotrun sweep --per-gpu K`), at least 1.
    pub workers: u64,
}

impl GpuMemory {
    /// The bytes this process may plan a run with: what is free to it (the driver's figure plus its own cached
    /// blocks), but no more than its share of the card (`total / workers`) minus what it already holds, so K
    /// workers on one card do not each plan with half of it. Alone on a card this is `free + cached`.
    pub fn budget(&self) -> u64 {
        let share = self.total / self.workers.max(1);
        self.free.saturating_add(self.cached).min(share.saturating_sub(self.held))
    }
}

/// How many workers share each GPU in this process's sweep (`--per-gpu`); 1 unless [`set_workers_per_gpu`] said
/// otherwise.
static WORKERS_PER_GPU: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Records how many workers share this process's GPU (a sweep worker, told by its launcher with `--share`).
pub fn set_workers_per_gpu(k: usize) {
    WORKERS_PER_GPU.store(k.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Measures GPU `ordinal` for [`GpuMemory::budget`]: the driver's total and free figures, this process's caching
/// allocator (through the shim), and the workers sharing the card.
pub fn gpu_memory(ordinal: usize) -> Result<GpuMemory, String> {
    let g = gpu_info(ordinal)?;
    let (reserved, allocated) =
        crate::ffi::cuda_allocator_bytes(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    Ok(GpuMemory {
        total: g.total_bytes as u64,
        free: g.free_bytes as u64,
        cached: reserved.saturating_sub(allocated),
        held: allocated,
        workers: WORKERS_PER_GPU.load(std::sync::atomic::Ordering::Relaxed) as u64,
    })
}

/// The CPU threads libtorch will use by default (all cores).
pub fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!(parse_device("auto"), Some(DeviceRequest::Auto));
        assert_eq!(parse_device("cpu"), Some(DeviceRequest::Cpu));
        assert_eq!(parse_device("cuda"), Some(DeviceRequest::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Some(DeviceRequest::Cuda(3)));
        assert_eq!(parse_device("cuda:x"), None);
        assert_eq!(parse_device("gpu"), None);
    }

    const CPU_HOST: CudaFacts = CudaFacts { driver_gpus: 0, driver_cuda: None, torch_gpus: 0, torch_cuda: Some(13000) };
    // A CUDA 12.9 driver (NVIDIA 575) with one GPU and PyPI's torch 2.11 (CUDA 13.0): libtorch sees nothing.
    const MISMATCH: CudaFacts =
        CudaFacts { driver_gpus: 1, driver_cuda: Some(12090), torch_gpus: 0, torch_cuda: Some(13000) };
    const GPU_HOST: CudaFacts =
        CudaFacts { driver_gpus: 2, driver_cuda: Some(13000), torch_gpus: 2, torch_cuda: Some(13000) };

    #[test]
    fn cpu_is_always_the_cpu() {
        for facts in [CPU_HOST, MISMATCH, GPU_HOST] {
            assert_eq!(decide(DeviceRequest::Cpu, &facts), Ok(tch::Device::Cpu), "{facts:?}");
        }
    }

    #[test]
    fn auto_takes_the_first_gpu_libtorch_sees() {
        assert_eq!(decide(DeviceRequest::Auto, &GPU_HOST), Ok(tch::Device::Cuda(0)));
    }

    #[test]
    fn auto_is_the_cpu_only_where_no_driver_sees_a_gpu() {
        assert_eq!(decide(DeviceRequest::Auto, &CPU_HOST), Ok(tch::Device::Cpu));
        // A driver without GPUs (e.g. CUDA_VISIBLE_DEVICES="") is a CPU host too.
        let no_visible = CudaFacts { driver_cuda: Some(12090), ..CPU_HOST };
        assert_eq!(decide(DeviceRequest::Auto, &no_visible), Ok(tch::Device::Cpu));
    }

    #[test]
    fn auto_with_a_gpu_libtorch_cannot_use_is_an_error_naming_both_versions() {
        let e = decide(DeviceRequest::Auto, &MISMATCH).unwrap_err();
        assert!(
            e.starts_with("train.device = \"auto\" but libtorch sees no GPU while the NVIDIA driver sees 1"),
            "{e}"
        );
        assert!(e.contains("supports CUDA up to 12.9; this libtorch is built for CUDA 13.0"), "{e}");
        assert!(e.contains("set train.device = \"cpu\""), "{e}");
        assert!(e.contains("scripts/setup.sh"), "{e}");
        let cpu_only = CudaFacts { torch_cuda: None, ..MISMATCH };
        let e = decide(DeviceRequest::Auto, &cpu_only).unwrap_err();
        assert!(e.contains("this libtorch is a CPU-only build"), "{e}");
    }

    #[test]
    fn an_explicit_gpu_names_the_mismatch_too() {
        let e = decide(DeviceRequest::Cuda(0), &MISMATCH).unwrap_err();
        assert!(e.starts_with("train.device = \"cuda:0\" but libtorch sees no GPU"), "{e}");
        assert!(e.contains("12.9") && e.contains("13.0"), "{e}");
    }

    #[test]
    fn explicit_gpus_within_and_beyond_the_count() {
        assert_eq!(decide(DeviceRequest::Cuda(1), &GPU_HOST), Ok(tch::Device::Cuda(1)));
        let e = decide(DeviceRequest::Cuda(2), &GPU_HOST).unwrap_err();
        assert_eq!(e, "train.device = \"cuda:2\" but libtorch sees 2 CUDA device(s)");
        let e = decide(DeviceRequest::Cuda(0), &CPU_HOST).unwrap_err();
        assert!(e.ends_with("sees 0 CUDA device(s); use train.device = \"cpu\" or \"auto\""), "{e}");
    }

    const GB: u64 = 1_000_000_000;

    #[test]
    fn alone_on_a_card_the_budget_is_the_free_memory_plus_this_process_cached_blocks() {
        let fresh = GpuMemory { total: 80 * GB, free: 79 * GB, cached: 0, held: 0, workers: 1 };
        assert_eq!(fresh.budget(), 79 * GB);
        // A worker --serve after a 30 GB run: the driver sees 30 GB less free, the allocator caches them.
        let later = GpuMemory { total: 80 * GB, free: 49 * GB, cached: 30 * GB, held: 0, workers: 1 };
        assert_eq!(later.budget(), 79 * GB);
        // The data kept from the last run (10 GB, live) is not free; its cache is.
        let kept = GpuMemory { total: 80 * GB, free: 49 * GB, cached: 20 * GB, held: 10 * GB, workers: 1 };
        assert_eq!(kept.budget(), 69 * GB);
        assert_eq!(GpuMemory { workers: 0, ..kept }.budget(), 69 * GB, "0 workers counts as 1");
    }

    #[test]
    fn workers_sharing_a_card_each_plan_with_their_share() {
        // The first of two workers on an empty 80 GB card: 40 GB, not the 79 GB free.
        let first = GpuMemory { total: 80 * GB, free: 79 * GB, cached: 0, held: 0, workers: 2 };
        assert_eq!(first.budget(), 40 * GB);
        // Its sibling holds 30 GB: the second still gets its 40 GB share of the 49 GB free.
        let second = GpuMemory { free: 49 * GB, ..first };
        assert_eq!(second.budget(), 40 * GB);
        // The first again (worker --serve), holding 10 GB of data and caching 20 GB: its share less what it holds.
        let again = GpuMemory { total: 80 * GB, free: 19 * GB, cached: 20 * GB, held: 10 * GB, workers: 2 };
        assert_eq!(again.budget(), 30 * GB);
        // Siblings that took more than their share leave less than it: the free figure bounds the budget.
        let crowded = GpuMemory { total: 80 * GB, free: 5 * GB, cached: 0, held: 0, workers: 4 };
        assert_eq!(crowded.budget(), 5 * GB);
        // Holding more than its share leaves nothing.
        let over = GpuMemory { total: 80 * GB, free: 20 * GB, cached: 5 * GB, held: 30 * GB, workers: 4 };
        assert_eq!(over.budget(), 0);
    }

    #[test]
    fn cuda_versions_as_text() {
        assert_eq!(cuda_version_text(Some(12080)), "12.8");
        assert_eq!(cuda_version_text(Some(13000)), "13.0");
        assert_eq!(cuda_version_text(Some(12090)), "12.9");
        assert_eq!(cuda_version_text(None), "none");
    }
}
