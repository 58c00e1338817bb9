//! Epoch order: the permutation of training samples for an epoch, a pure function of (seed, epoch).
//!
//! Because it depends on nothing else (not on the device, thread count, or how many epochs ran in this process),
//! a resumed run sees exactly the order the uninterrupted run would have seen.
use super::rng::SplitMix64;

/// Fisher–Yates shuffle of `0..n` keyed by `(seed, epoch)`.
pub(crate) fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut rng = SplitMix64::keyed(&[seed, epoch, 0x0e0c]);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn is_a_permutation_fixed_by_seed_and_epoch() {
        let a = epoch_permutation(5, 2, 1000);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<i64>>());
        assert_eq!(a, epoch_permutation(5, 2, 1000));
        assert_ne!(a, epoch_permutation(5, 3, 1000));
        assert_ne!(a, epoch_permutation(6, 2, 1000));
        assert_ne!(a, sorted, "a shuffle of 1000 items equal to the identity would be a bug");
    }
}
