//! Learning-rate schedules as pure functions of the optimizer step.
//!
//! Being pure, the schedule needs no state in a checkpoint: the step counter alone restores it exactly.
use crate::config::{ScheduleConfig, ScheduleKind};

/// The learning rate for optimizer step `step` (0-based) of a run with `total_steps` steps.
///
/// All kinds start with a linear warm-up `base·(step+1)/warmup_steps`. Then `constant` keeps `base`; `cosine`
/// anneals from `base` to `min_lr` at the last step; `step` multiplies by `gamma` every `step_size` steps.
pub(crate) fn lr_at(cfg: &ScheduleConfig, base: f64, step: u64, total_steps: u64) -> f64 {
    if step < cfg.warmup_steps {
        return base * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    match cfg.kind {
        ScheduleKind::Constant => base,
        ScheduleKind::Cosine => {
            let span = total_steps.saturating_sub(cfg.warmup_steps).saturating_sub(1).max(1);
            let t = ((step - cfg.warmup_steps) as f64 / span as f64).min(1.0);
            cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
        ScheduleKind::Step => base * cfg.gamma.powi((step / cfg.step_size.max(1)) as i32),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg(kind: ScheduleKind, warmup_steps: u64) -> ScheduleConfig {
        ScheduleConfig { kind, warmup_steps, min_lr: 0.1, step_size: 10, gamma: 0.5 }
    }

    #[test]
    fn warmup_is_linear_then_constant() {
        let c = cfg(ScheduleKind::Constant, 4);
        let lrs: Vec<f64> = (0..6).map(|s| lr_at(&c, 1.0, s, 100)).collect();
        assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_goes_from_base_to_min_at_the_last_step() {
        let c = cfg(ScheduleKind::Cosine, 0);
        assert_eq!(lr_at(&c, 1.0, 0, 11), 1.0);
        assert!((lr_at(&c, 1.0, 5, 11) - 0.55).abs() < 1e-12);
        assert!((lr_at(&c, 1.0, 10, 11) - 0.1).abs() < 1e-12);
        let w = cfg(ScheduleKind::Cosine, 3);
        assert_eq!(lr_at(&w, 1.0, 3, 13), 1.0);
        assert!((lr_at(&w, 1.0, 12, 13) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn step_decays_by_gamma() {
        let c = cfg(ScheduleKind::Step, 0);
        assert_eq!(lr_at(&c, 1.0, 9, 100), 1.0);
        assert_eq!(lr_at(&c, 1.0, 10, 100), 0.5);
        assert_eq!(lr_at(&c, 1.0, 25, 100), 0.25);
    }
}
