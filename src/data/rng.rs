//! A tiny, portable PRNG (SplitMix64) for data generation and epoch order.
//!
//! Same seed → same numbers on every machine and thread count; streams are derived by hashing a key, so samples
//! can be generated in parallel without sharing state. Not for cryptography.

/// SplitMix64 (Steele, Lea & Flood 2014): 64-bit state, full period, passes BigCrush when used as here.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64, Option<f64>);

impl SplitMix64 {
    #[cfg(test)]
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed, None)
    }

    /// A stream keyed by `parts` (e.g. `[seed, epoch]`): independent-looking for different keys.
    pub(crate) fn keyed(parts: &[u64]) -> Self {
        let mut s = 0x853c_49e6_748f_ea9b_u64;
        for &p in parts {
            s = mix(s ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        SplitMix64(s, None)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; bias < 2^-32 for the sizes used here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box–Muller; each pair of uniforms gives two values, the second kept for the next call).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.1.take() {
            return z;
        }
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.1 = Some(r * s);
        r * c
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let take = |key: &[u64]| {
            let mut r = SplitMix64::keyed(key);
            (0..4).map(|_| r.next_u64()).collect::<Vec<u64>>()
        };
        let (a, b, c) = (take(&[1, 2]), take(&[1, 2]), take(&[2, 1]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = SplitMix64::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(3);
        let mut seen = [0usize; 10];
        for _ in 0..10_000 {
            seen[r.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800 && n < 1200), "{seen:?}");
    }
}
