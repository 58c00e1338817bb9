//! A dynamic loss scaler for fp16, equivalent to `torch.amp.GradScaler` and just as sync-free.
//!
//! Per step: `scale(loss).backward()`, [`GradScaler::unscale`] (divides grads by the scale and raises
//! `found_inf` on inf/NaN), the optimizer step with `found_inf` (skipped when set), then [`GradScaler::update`]
//! (back off ×0.5 on overflow, grow ×2 after `growth_interval` clean steps). State: `scale`, `growth_tracker`.
use std::collections::HashMap;

use tch::{Device, Kind, TchError, Tensor};

use crate::ffi::{self, ShimError};

/// torch.amp.GradScaler's defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScalerConfig {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig { init_scale: 65536.0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

pub(crate) struct GradScaler {
    cfg: ScalerConfig,
    scale: Tensor,
    growth_tracker: Tensor,
    found_inf: Tensor,
}

impl GradScaler {
    pub(crate) fn new(cfg: ScalerConfig, device: Device) -> GradScaler {
        GradScaler {
            cfg,
            scale: Tensor::full([], cfg.init_scale, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([], (Kind::Int, device)),
            found_inf: Tensor::zeros([], (Kind::Float, device)),
        }
    }

    /// `loss * scale` (in float32).
    pub(crate) fn scale(&self, loss: &Tensor) -> Tensor {
        loss.to_kind(Kind::Float) * &self.scale
    }

    /// Unscales `grads` in place and sets the flag returned by [`GradScaler::found_inf`].
    pub(crate) fn unscale(&mut self, grads: &[Tensor]) -> Result<(), ShimError> {
        let _ = self.found_inf.f_zero_().map_err(|e| ShimError(e.to_string()))?;
        let inv = self.scale.reciprocal();
        ffi::unscale_check(grads, &self.found_inf, &inv)
    }

    /// 1.0 when the last [`GradScaler::unscale`] saw an inf or NaN, else 0.0 (stays on the device).
    pub(crate) fn found_inf(&self) -> &Tensor {
        &self.found_inf
    }

    /// Adjusts the scale after a step (on the device, no sync).
    pub(crate) fn update(&mut self) -> Result<(), TchError> {
        let c = self.cfg;
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &self.found_inf,
            c.growth_factor,
            c.backoff_factor,
            c.growth_interval,
        )?;
        Ok(())
    }

    /// The current scale (reads it back: a host sync).
    #[cfg(test)]
    pub(crate) fn current_scale(&self) -> f64 {
        self.scale.double_value(&[])
    }

    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            ("scale".into(), self.scale.shallow_clone()),
            ("growth_tracker".into(), self.growth_tracker.shallow_clone()),
        ]
    }

    /// Restores [`GradScaler::state`]; `Err` names a missing entry.
    pub(crate) fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), String> {
        for (name, dst) in [("scale", &mut self.scale), ("growth_tracker", &mut self.growth_tracker)] {
            let src = state.get(name).ok_or_else(|| format!("grad scaler state `{name}` missing"))?;
            dst.f_copy_(src).map_err(|e| format!("grad scaler state `{name}`: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Reference behaviour from torch.amp.GradScaler (PyTorch 2.11.0): `unscale_` divides by the scale and sets
    //! found_inf on non-finite grads; `update()` halves the scale on overflow (and resets the growth tracker) and
    //! doubles it after `growth_interval` consecutive clean steps.
    use super::*;

    fn grads(vals: &[f32]) -> Vec<Tensor> {
        vec![Tensor::from_slice(vals)]
    }

    #[test]
    fn unscales_and_detects_overflow() {
        let mut s = GradScaler::new(ScalerConfig { init_scale: 8.0, ..Default::default() }, Device::Cpu);
        let g = grads(&[8.0, 16.0]);
        s.unscale(&g).unwrap();
        assert_eq!(Vec::<f32>::try_from(&g[0]).unwrap(), [1.0, 2.0]);
        assert_eq!(s.found_inf().double_value(&[]), 0.0);
        s.unscale(&grads(&[1.0, f32::INFINITY])).unwrap();
        assert_eq!(s.found_inf().double_value(&[]), 1.0);
        s.unscale(&grads(&[f32::NAN])).unwrap();
        assert_eq!(s.found_inf().double_value(&[]), 1.0);
    }

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let cfg = ScalerConfig { init_scale: 1024.0, growth_interval: 3, ..Default::default() };
        let mut s = GradScaler::new(cfg, Device::Cpu);
        s.unscale(&grads(&[f32::INFINITY])).unwrap();
        s.update().unwrap();
        assert_eq!(s.current_scale(), 512.0);
        for _ in 0..2 {
            s.unscale(&grads(&[1.0])).unwrap();
            s.update().unwrap();
            assert_eq!(s.current_scale(), 512.0);
        }
        s.unscale(&grads(&[1.0])).unwrap();
        s.update().unwrap();
        assert_eq!(s.current_scale(), 1024.0);
    }

    #[test]
    fn state_round_trips() {
        let mut a = GradScaler::new(ScalerConfig::default(), Device::Cpu);
        a.unscale(&grads(&[f32::NAN])).unwrap();
        a.update().unwrap();
        let st: HashMap<String, Tensor> = a.state().into_iter().map(|(k, v)| (k, v.copy())).collect();
        let mut b = GradScaler::new(ScalerConfig::default(), Device::Cpu);
        b.load_state(&st).unwrap();
        assert_eq!(b.current_scale(), 32768.0);
        assert!(b.load_state(&HashMap::new()).is_err());
    }
}
