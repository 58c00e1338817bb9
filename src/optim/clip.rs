//! Gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` (no host sync: the factor stays on the device).
use tch::{TchError, Tensor};

/// Scales `grads` in place so their global L2 norm is at most `max_norm`; returns the norm before clipping.
pub(crate) fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> Result<Tensor, TchError> {
    let norms: Vec<Tensor> = grads.iter().map(|g| g.f_norm()).collect::<Result<_, _>>()?;
    let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
    let coef = ((&total + 1e-6).f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
    for g in grads {
        let _ = g.shallow_clone().f_mul_(&coef)?;
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn clips_only_when_above_the_limit() {
        // torch.nn.utils.clip_grad_norm_ on grads [3, 4] and [12]: total norm 13.
        let g = [Tensor::from_slice(&[3.0f32, 4.0]), Tensor::from_slice(&[12.0f32])];
        let total = clip_grad_norm(&g, 6.5).unwrap();
        assert!((total.double_value(&[]) - 13.0).abs() < 1e-5);
        assert!((g[0].double_value(&[1]) - 2.0).abs() < 1e-5);
        assert!((g[1].double_value(&[0]) - 6.0).abs() < 1e-5);
        let total = clip_grad_norm(&g, 100.0).unwrap();
        assert!((total.double_value(&[]) - 6.5).abs() < 1e-5);
        assert!((g[1].double_value(&[0]) - 6.0).abs() < 1e-5);
    }
}
