//! Mixed precision: what `train.precision` means on a device, autocast regions, and the fp16 grad scaler.
//!
//! `auto` is bf16 autocast on CUDA and fp32 on the CPU (bf16 on these CPUs is ~15× slower). bf16/fp16 may be
//! forced on the CPU too (CPU autocast). Imports `config` and `ffi` only.
mod scaler;

use crate::config::Precision;
use crate::ffi::{self, ShimError};
pub(crate) use scaler::{GradScaler, ScalerConfig};

/// The precision a run actually uses once the device is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Fp32,
    Bf16,
    Fp16,
}

impl Resolved {
    pub fn name(self) -> &'static str {
        match self {
            Resolved::Fp32 => "fp32",
            Resolved::Bf16 => "bf16 autocast",
            Resolved::Fp16 => "fp16 autocast + grad scaler",
        }
    }
}

/// `auto` → bf16 on CUDA, fp32 on CPU; explicit choices are kept.
pub(crate) fn resolve(p: Precision, cuda: bool) -> Resolved {
    match p {
        Precision::Auto if cuda || test_auto_as_on_cuda() => Resolved::Bf16,
        Precision::Auto | Precision::Fp32 => Resolved::Fp32,
        Precision::Bf16 => Resolved::Bf16,
        Precision::Fp16 => Resolved::Fp16,
    }
}

/// Test-only: `SPOTRUN_TEST_AUTO_AS_ON_CUDA=1` makes `auto` resolve on the CPU as it does on CUDA (bf16 autocast),
/// so a CPU machine can show a resume whose `auto` resolved differently from the checkpoint's, under the same run
/// id (compiled in only with the `test-hooks` feature).
fn test_auto_as_on_cuda() -> bool {
    #[cfg(feature = "test-hooks")]
    if std::env::var("SPOTRUN_TEST_AUTO_AS_ON_CUDA").is_ok_and(|v| v == "1") {
        return true;
    }
    false
}

/// An autocast region: entered on construction, left on drop. A no-op for fp32.
pub(crate) struct Autocast {
    cuda: bool,
    active: bool,
}

impl Autocast {
    pub(crate) fn enter(precision: Resolved, cuda: bool) -> Result<Autocast, ShimError> {
        let active = precision != Resolved::Fp32;
        if active {
            ffi::autocast_enter(cuda, precision == Resolved::Fp16)?;
        }
        Ok(Autocast { cuda, active })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if self.active {
            // Leaving autocast only resets thread-local flags; an error here cannot leave data wrong.
            let _ = ffi::autocast_exit(self.cuda);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn auto_means_bf16_on_cuda_and_fp32_on_cpu() {
        assert_eq!(resolve(Precision::Auto, true), Resolved::Bf16);
        assert_eq!(resolve(Precision::Auto, false), Resolved::Fp32);
        assert_eq!(resolve(Precision::Fp16, false), Resolved::Fp16);
    }

    #[test]
    fn cpu_autocast_runs_matmul_in_reduced_precision_and_only_inside_the_region() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        {
            let _g = Autocast::enter(Resolved::Bf16, false).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        {
            let _g = Autocast::enter(Resolved::Fp16, false).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::Half);
        }
        let _g = Autocast::enter(Resolved::Fp32, false).unwrap();
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }
}
