//! Safe wrappers over `shim/spotrun_shim.cpp` (the ATen calls tch 0.24 does not expose), and over cudarc's check
//! for the CUDA driver library.
//!
//! This is the only module with `unsafe`. Each wrapper passes tch's tensor handles to C++, which catches every
//! exception and returns it as text; nothing here can unwind across the FFI boundary.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

/// Whether libcuda can be loaded at all (false on machines without an NVIDIA driver).
pub(crate) fn cuda_driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; no CUDA call is made when it is absent.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

extern "C" {
    fn spotrun_free_error(err: *mut c_char);
    fn spotrun_autocast_enter(cuda: c_int, half: c_int) -> *mut c_char;
    fn spotrun_autocast_exit(cuda: c_int) -> *mut c_char;
    fn spotrun_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        found_inf: *mut C_tensor,
    ) -> *mut c_char;
    fn spotrun_unscale_check(
        grads: *const *mut C_tensor,
        n: usize,
        found_inf: *mut C_tensor,
        inv_scale: *mut C_tensor,
    ) -> *mut c_char;
    fn spotrun_set_deterministic(on: c_int) -> *mut c_char;
    fn spotrun_deterministic() -> c_int;
    fn spotrun_grads_to_none(ts: *const *mut C_tensor, n: usize) -> *mut c_char;
    fn spotrun_channels_last(t: *mut C_tensor) -> *mut c_char;
}

/// An error raised by libtorch inside the shim.
#[derive(Debug, thiserror::Error)]
#[error("libtorch: {0}")]
pub(crate) struct ShimError(pub String);

fn check(err: *mut c_char) -> Result<(), ShimError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated strdup'ed string owned by us until freed.
    let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { spotrun_free_error(err) };
    Err(ShimError(msg))
}

fn handles(ts: &[Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Turns autocast on for CPU or CUDA with bf16 (`half = false`) or fp16; pair with [`autocast_exit`].
pub(crate) fn autocast_enter(cuda: bool, half: bool) -> Result<(), ShimError> {
    // SAFETY: plain ints; the shim catches exceptions.
    check(unsafe { spotrun_autocast_enter(c_int::from(cuda), c_int::from(half)) })
}

pub(crate) fn autocast_exit(cuda: bool) -> Result<(), ShimError> {
    // SAFETY: as above.
    check(unsafe { spotrun_autocast_exit(c_int::from(cuda)) })
}

/// `torch._fused_adamw_` over parallel lists. Every list must have `params.len()` entries (checked).
/// `steps` must already hold the incremented step count. With `found_inf` non-zero nothing changes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fused_adamw(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    lr: f64,
    betas: [f64; 2],
    weight_decay: f64,
    eps: f64,
    found_inf: Option<&Tensor>,
) -> Result<(), ShimError> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()].iter().any(|&l| l != n) {
        return Err(ShimError("fused_adamw: tensor lists differ in length".into()));
    }
    let (p, g, m, v, s) = (handles(params), handles(grads), handles(exp_avgs), handles(exp_avg_sqs), handles(steps));
    let inf = found_inf.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut C_tensor);
    // SAFETY: every handle points at a live tensor borrowed for the duration of the call; lengths were checked.
    check(unsafe {
        spotrun_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr,
            betas[0],
            betas[1],
            weight_decay,
            eps,
            inf,
        )
    })
}

/// `torch._amp_foreach_non_finite_check_and_unscale_`: `grads *= inv_scale`; sets `found_inf` to 1 on inf/NaN.
pub(crate) fn unscale_check(grads: &[Tensor], found_inf: &Tensor, inv_scale: &Tensor) -> Result<(), ShimError> {
    let g = handles(grads);
    // SAFETY: live borrowed tensors for the duration of the call.
    check(unsafe {
        spotrun_unscale_check(
            g.as_ptr(),
            g.len(),
            found_inf.as_ptr() as *mut C_tensor,
            inv_scale.as_ptr() as *mut C_tensor,
        )
    })
}

/// `zero_grad(set_to_none=True)`: after this, `t.grad()` is undefined until the next backward.
pub(crate) fn grads_to_none(ts: &[Tensor]) -> Result<(), ShimError> {
    let h = handles(ts);
    // SAFETY: live borrowed tensors for the duration of the call.
    check(unsafe { spotrun_grads_to_none(h.as_ptr(), h.len()) })
}

/// Re-lays the 4-d parameter `t` out channels-last in place (`module.to(memory_format=torch.channels_last)`).
/// Convolutions then run on oneDNN's/cuDNN's NHWC kernels (+25-30% for the CNN on the CPU, BENCHMARKS.md).
/// Values and shape are unchanged; only strides differ, so checkpoints (written contiguous) are unaffected.
pub(crate) fn channels_last(t: &Tensor) -> Result<(), ShimError> {
    // SAFETY: a live tensor handle for the duration of the call; the shim replaces its data under no_grad.
    check(unsafe { spotrun_channels_last(t.as_ptr() as *mut C_tensor) })
}

/// `torch.use_deterministic_algorithms(on)` plus deterministic cuDNN without benchmarking.
pub(crate) fn set_deterministic(on: bool) -> Result<(), ShimError> {
    // SAFETY: a plain int.
    check(unsafe { spotrun_set_deterministic(c_int::from(on)) })
}

/// Whether deterministic algorithms are on (`torch.are_deterministic_algorithms_enabled()`).
pub(crate) fn deterministic() -> bool {
    // SAFETY: reads a flag of libtorch's global context.
    unsafe { spotrun_deterministic() != 0 }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn mallopt(param: c_int, value: c_int) -> c_int;
}

/// Keeps glibc from returning large tensor buffers to the OS after every step.
///
/// Training allocates and frees the same large activations every step. glibc serves blocks above 32 MiB with
/// fresh `mmap`s (the dynamic threshold cannot go higher), so each step page-faults and zeroes them again; on the
/// CPU MLP benchmark that costs ~15% of the step. Turning off mmap for malloc and raising the trim threshold makes
/// freed memory reusable. Same effect as `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>` in the environment.
/// Returns whether the settings were applied (false on non-glibc targets).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        // SAFETY: mallopt only adjusts allocator parameters; called before the training allocations.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// A new contiguous CPU tensor of `shape` and `kind` whose bytes `fill` writes (e.g. straight from a file, so a
/// dataset is in memory once rather than twice). `fill` must write every byte; its error is returned as is.
pub(crate) fn cpu_tensor_filled<E>(
    shape: &[i64],
    kind: tch::Kind,
    fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
) -> Result<Result<Tensor, E>, tch::TchError> {
    if kind == tch::Kind::Bool {
        // Any byte but 0 or 1 in a bool tensor is undefined behaviour inside libtorch.
        return Err(tch::TchError::Kind("cpu_tensor_filled takes numeric kinds only, not Bool".into()));
    }
    // Zeroed rather than empty: a `&mut [u8]` must not point at uninitialised memory (the zeroing costs far less
    // than the read that follows).
    let t = Tensor::f_zeros(shape, (kind, tch::Device::Cpu))?;
    let len = t.numel() * kind.elt_size_in_bytes();
    if len == 0 {
        return Ok(fill(&mut []).map(|_| t));
    }
    let ptr = t.data_ptr() as *mut u8;
    if ptr.is_null() {
        return Err(tch::TchError::Torch("empty tensor has no storage".into()));
    }
    // SAFETY: `t` was just created here, so no other handle to its storage exists while `fill` runs; a new CPU
    // tensor is contiguous with `len` initialised bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    Ok(fill(bytes).map(|_| t))
}

/// The bytes of a CPU tensor whose storage is contiguous, borrowed without copying; `None` otherwise.
///
/// The borrow is tied to `t`. Sound as long as nobody writes the tensor's storage while the slice is alive; the
/// callers (checkpoint writers) only pass tensors they own exclusively (snapshot copies) or that the paused
/// training loop does not touch.
pub(crate) fn host_bytes(t: &Tensor) -> Option<&[u8]> {
    if t.device() != tch::Device::Cpu || !t.is_contiguous() {
        return None;
    }
    let len = t.numel() * t.kind().elt_size_in_bytes();
    if len == 0 {
        return Some(&[]);
    }
    let ptr = t.data_ptr() as *const u8;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a contiguous CPU tensor's data is `len` initialised bytes at `ptr`, kept alive by `t`.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

#[cfg(target_os = "linux")]
extern "C" {
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
}

/// Sends `sig` to process `pid` (used by `spotrun sweep` to pass a preemption signal on to its workers).
pub(crate) fn send_signal(pid: u32, sig: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(pid) = c_int::try_from(pid) else { return false };
        if pid <= 0 {
            return false;
        }
        // SAFETY: kill(2) with a positive pid only sends a signal.
        unsafe { kill(pid, sig) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, sig);
        false
    }
}

/// Asks the kernel to send `sig` to this process when its parent dies (PR_SET_PDEATHSIG), so a worker whose
/// launcher was killed checkpoints and stops instead of training on unsupervised. Returns whether it was set.
pub(crate) fn die_with_parent(sig: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        const PR_SET_PDEATHSIG: c_int = 1;
        // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes one integer argument and changes only this process.
        unsafe { prctl(PR_SET_PDEATHSIG, sig as std::os::raw::c_ulong) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sig;
        false
    }
}

extern "C" {
    fn _exit(status: c_int) -> !;
}

/// Ends the process at once with `code`: no atexit handlers, no C++ static destructors, no unwinding. For a
/// thread that must stop the process while the main thread may be inside libtorch (a lost sweep lease).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) never returns and touches no Rust state.
    unsafe { _exit(code) }
}

/// The shim's loaded TorchScript module (opaque).
#[repr(C)]
pub(crate) struct ShimModule {
    _private: [u8; 0],
}

extern "C" {
    fn spotrun_module_load(path: *const c_char, cuda_index: c_int, out: *mut *mut ShimModule) -> *mut c_char;
    fn spotrun_module_free(m: *mut ShimModule);
    fn spotrun_module_named(
        m: *mut ShimModule,
        buffers: c_int,
        ctx: *mut std::ffi::c_void,
        each: extern "C" fn(*mut std::ffi::c_void, *const c_char, *mut C_tensor, *const c_char),
    ) -> *mut c_char;
    fn spotrun_module_train(m: *mut ShimModule, on: c_int) -> *mut c_char;
    fn spotrun_module_forward(m: *mut ShimModule, x: *mut C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn spotrun_module_save(m: *mut ShimModule, path: *const c_char) -> *mut c_char;
}

/// A TorchScript module loaded with `torch::jit::load`, owned here (freed on drop).
pub(crate) struct JitModule(std::ptr::NonNull<ShimModule>);

/// One named tensor of a module: `(state_dict name, live tensor, first name of the same tensor if tied)`.
pub(crate) type NamedEntry = (String, Tensor, Option<String>);

fn c_path(path: &std::path::Path) -> Result<std::ffi::CString, ShimError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| ShimError("path contains a NUL byte".into()))
}

extern "C" fn push_entry(ctx: *mut std::ffi::c_void, name: *const c_char, t: *mut C_tensor, alias: *const c_char) {
    // SAFETY: `ctx` is the `&mut Vec<NamedEntry>` passed by `JitModule::named` for the duration of the call; the
    // strings are NUL-terminated and live for this callback; `t` is a new tensor handle we take ownership of.
    unsafe {
        let out = &mut *(ctx as *mut Vec<NamedEntry>);
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let alias = (!alias.is_null()).then(|| CStr::from_ptr(alias).to_string_lossy().into_owned());
        out.push((name, Tensor::from_ptr(t), alias));
    }
}

impl JitModule {
    /// Loads `path` onto `device` (CPU or CUDA).
    pub(crate) fn load(path: &std::path::Path, device: tch::Device) -> Result<JitModule, ShimError> {
        let p = c_path(path)?;
        let index = match device {
            tch::Device::Cuda(i) => i as c_int,
            _ => -1,
        };
        let mut out = std::ptr::null_mut();
        // SAFETY: a valid C string and an out-pointer; the shim catches every exception.
        check(unsafe { spotrun_module_load(p.as_ptr(), index, &mut out) })?;
        std::ptr::NonNull::new(out).map(JitModule).ok_or_else(|| ShimError("torch::jit::load returned nothing".into()))
    }

    /// Parameters (`buffers = false`) or buffers, recursively, with `state_dict` names, in the module's order.
    pub(crate) fn named(&self, buffers: bool) -> Result<Vec<NamedEntry>, ShimError> {
        let mut out: Vec<NamedEntry> = Vec::new();
        let ctx = &mut out as *mut Vec<NamedEntry> as *mut std::ffi::c_void;
        // SAFETY: the module is alive; `push_entry` only touches `out` through `ctx` during the call.
        check(unsafe { spotrun_module_named(self.0.as_ptr(), c_int::from(buffers), ctx, push_entry) })?;
        Ok(out)
    }

    /// `module.train(on)`.
    pub(crate) fn set_train(&self, on: bool) -> Result<(), ShimError> {
        // SAFETY: the module is alive.
        check(unsafe { spotrun_module_train(self.0.as_ptr(), c_int::from(on)) })
    }

    /// `module.forward(x)`, which must return one tensor.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: the module and `x` are alive; on success `out` is a new handle we own.
        check(unsafe { spotrun_module_forward(self.0.as_ptr(), x.as_ptr() as *mut C_tensor, &mut out) })?;
        // SAFETY: non-null on success (checked above), owned by us.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// `module.save(path)`.
    pub(crate) fn save(&self, path: &std::path::Path) -> Result<(), ShimError> {
        let p = c_path(path)?;
        // SAFETY: the module is alive; a valid C string.
        check(unsafe { spotrun_module_save(self.0.as_ptr(), p.as_ptr()) })
    }
}

impl Drop for JitModule {
    fn drop(&mut self) {
        // SAFETY: allocated by spotrun_module_load, freed once.
        unsafe { spotrun_module_free(self.0.as_ptr()) }
    }
}

extern "C" {
    fn spotrun_torch_cuda_version() -> std::ffi::c_long;
}

/// The CUDA runtime version the loaded libtorch_cuda was compiled against (`CUDART_VERSION`: 13000 = 13.0, what
/// `torch.version.cuda` says), or `None` for a CPU-only libtorch. A compile-time constant of the library actually
/// loaded, so it needs neither a GPU nor a driver and cannot disagree with the libraries on disk.
pub(crate) fn torch_cuda_version() -> Option<i32> {
    // SAFETY: no arguments; the shim catches every exception and returns -1.
    let v = unsafe { spotrun_torch_cuda_version() };
    (v > 0).then(|| i32::try_from(v).ok()).flatten()
}

/// The newest CUDA version the installed NVIDIA driver supports (`cuDriverGetVersion`: 12080 = 12.8), or `None`
/// without a driver. Needs no `cuInit` and no GPU.
pub(crate) fn cuda_driver_version() -> Option<i32> {
    if !cuda_driver_present() {
        return None;
    }
    let mut v: c_int = 0;
    // SAFETY: libcuda is loadable (checked above) and cuDriverGetVersion only writes the int it is given.
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (status == cudarc::driver::sys::CUresult::CUDA_SUCCESS && v > 0).then_some(v)
}

extern "C" {
    fn spotrun_cuda_allocator_bytes(device: c_int, reserved: *mut i64, allocated: *mut i64) -> *mut c_char;
}

/// What this process's CUDA caching allocator holds on GPU `ordinal`: `(reserved, allocated)` bytes, as
/// `torch.cuda.memory_reserved` and `memory_allocated` say; reserved minus allocated is cached but free (reusable
/// by this process, invisible to the driver's free figure). `(0, 0)` before anything was allocated.
pub(crate) fn cuda_allocator_bytes(ordinal: usize) -> Result<(u64, u64), ShimError> {
    let (mut reserved, mut allocated) = (0i64, 0i64);
    let device = c_int::try_from(ordinal).unwrap_or(c_int::MAX);
    // SAFETY: the shim writes only the two integers it is given and catches every exception.
    check(unsafe { spotrun_cuda_allocator_bytes(device, &mut reserved, &mut allocated) })?;
    Ok((reserved.max(0) as u64, allocated.max(0) as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cuda_caching_allocator_reports_what_this_process_holds() {
        if torch_cuda_version().is_none() {
            assert!(cuda_allocator_bytes(0).is_err(), "a CPU-only libtorch has no CUDA allocator: an error, no crash");
            return;
        }
        if tch::Cuda::device_count() == 0 {
            // A CUDA build of libtorch on a host without a GPU: the allocator was never initialised.
            assert_eq!(cuda_allocator_bytes(0).unwrap(), (0, 0));
            return;
        }
        let mib256 = 256u64 << 20;
        let before = cuda_allocator_bytes(0).unwrap();
        let t = Tensor::zeros([64 << 20], (tch::Kind::Float, tch::Device::Cuda(0)));
        let (reserved, allocated) = cuda_allocator_bytes(0).unwrap();
        assert!(allocated >= before.1 + mib256 && reserved >= allocated, "{before:?} -> {reserved} {allocated}");
        drop(t);
        // Freed into the cache, not to the driver: still reserved.
        let (after, _) = cuda_allocator_bytes(0).unwrap();
        assert!(after >= mib256, "{after}");
    }
}
