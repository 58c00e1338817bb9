//! The built-in synthetic classification task, generated in RAM from a seed (in parallel with rayon).
//!
//! Each class is a mixture of [`PROTOTYPES`] Gaussian blobs in a [`LATENT`]-dimensional latent space; a sample is
//! `tanh(A z) + noise` with a fixed random projection `A` to `features` dimensions. Classes interleave in the
//! latent space, so no hyperplane separates them: a linear model plateaus far below an MLP (numbers in README).
//! Sample `i` of a split depends only on `(seed, split, i)`, so the data is identical for any thread count.
use rayon::prelude::*;

use super::rng::SplitMix64;
use crate::config::SyntheticConfig;

/// Latent dimension of the task.
pub(super) const LATENT: usize = 16;
/// Gaussian blobs per class.
pub(super) const PROTOTYPES: usize = 6;
const LATENT_STD: f64 = 0.5;
const NOISE_STD: f64 = 1.0;

/// Row-major features and labels of one split.
pub(super) struct Split {
    pub x: Vec<f32>,
    pub y: Vec<i64>,
}

/// Generates `(train, val)` for `cfg`.
pub(super) fn generate(cfg: &SyntheticConfig) -> (Split, Split) {
    let mut rng = SplitMix64::keyed(&[cfg.seed, 0xc3]);
    let centers: Vec<f64> = (0..cfg.classes * PROTOTYPES * LATENT).map(|_| rng.normal()).collect();
    let scale = 1.0 / (LATENT as f64).sqrt();
    let proj: Vec<f64> = (0..cfg.features * LATENT).map(|_| rng.normal() * scale).collect();
    let task = Task { centers, proj, features: cfg.features, classes: cfg.classes, seed: cfg.seed };
    (task.split(1, cfg.train), task.split(2, cfg.val))
}

struct Task {
    centers: Vec<f64>,
    proj: Vec<f64>,
    features: usize,
    classes: usize,
    seed: u64,
}

impl Task {
    fn split(&self, split: u64, n: usize) -> Split {
        let mut x = vec![0f32; n * self.features];
        let y: Vec<i64> =
            x.par_chunks_mut(self.features).enumerate().map(|(i, row)| self.sample(split, i as u64, row)).collect();
        Split { x, y }
    }

    fn sample(&self, split: u64, i: u64, row: &mut [f32]) -> i64 {
        let mut rng = SplitMix64::keyed(&[self.seed, split, i]);
        let class = rng.below(self.classes as u64) as usize;
        let proto = rng.below(PROTOTYPES as u64) as usize;
        let c = &self.centers[(class * PROTOTYPES + proto) * LATENT..][..LATENT];
        let mut z = [0f64; LATENT];
        for (zk, ck) in z.iter_mut().zip(c) {
            *zk = ck + LATENT_STD * rng.normal();
        }
        for (f, out) in row.iter_mut().enumerate() {
            let a = &self.proj[f * LATENT..][..LATENT];
            let dot: f64 = a.iter().zip(&z).map(|(p, q)| p * q).sum();
            *out = (dot.tanh() + NOISE_STD * rng.normal()) as f32;
        }
        class as i64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn small() -> SyntheticConfig {
        SyntheticConfig { train: 300, val: 50, features: 20, classes: 4, seed: 9, ..Default::default() }
    }

    #[test]
    fn deterministic_from_seed_and_shaped_as_asked() {
        let (a, av) = generate(&small());
        let (b, _) = generate(&small());
        assert_eq!(a.x, b.x);
        assert_eq!(a.y, b.y);
        assert_eq!(a.x.len(), 300 * 20);
        assert_eq!(av.y.len(), 50);
        assert!(a.y.iter().all(|&c| (0..4).contains(&c)));
        let (c, _) = generate(&SyntheticConfig { seed: 10, ..small() });
        assert_ne!(a.x, c.x);
    }

    #[test]
    fn uses_every_class() {
        let (a, _) = generate(&small());
        for k in 0..4 {
            assert!(a.y.iter().filter(|&&c| c == k).count() > 30, "class {k} is rare");
        }
    }
}
