//! Devices: parsing `train.device`, choosing the tch device, and listing CUDA GPUs through cudarc.
//!
//! cudarc loads libcuda dynamically, so this builds and runs on machines without CUDA; there the listing is
//! simply empty. Must not import any other spotrun module.
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

/// Resolves a request against what libtorch sees. `Err` names the problem (e.g. `cuda:2` with one GPU).
pub fn select(request: DeviceRequest) -> Result<tch::Device, String> {
    let count = tch::Cuda::device_count().max(0) as usize;
    match request {
        DeviceRequest::Cpu => Ok(tch::Device::Cpu),
        DeviceRequest::Auto if count > 0 => Ok(tch::Device::Cuda(0)),
        DeviceRequest::Auto => Ok(tch::Device::Cpu),
        DeviceRequest::Cuda(i) if i < count => Ok(tch::Device::Cuda(i)),
        DeviceRequest::Cuda(i) => Err(format!(
            "train.device = \"cuda:{i}\" but libtorch sees {count} CUDA device(s){}",
            if count == 0 { "; use train.device = \"cpu\" or \"auto\"" } else { "" }
        )),
    }
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
}
