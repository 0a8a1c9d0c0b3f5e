//! A tiny deterministic pseudo-random generator for permutation tests and resampling.
//!
//! SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
//! OOPSLA 2014; the constants of Vigna's public-domain `splitmix64.c`). It is not
//! cryptographic and need not be: it only has to be fast, well mixed and identical on every
//! platform, so that the same seed gives the same p-value and the same threshold everywhere.
//! The one generator of the workspace: the efficacy simulation, its simulated image changes
//! and the trainer's shuffling and augmentation draw from it too.

/// SplitMix64: 64 bits of state, one add and three xor-shift-multiplies per output.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias: Lemire's multiply-shift
    /// with rejection ("Fast random integer generation in an interval", 2019).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// Fisher-Yates: the first `k` entries of `v` become a uniform random `k`-subset in
    /// random order (the whole slice is shuffled when `k == v.len()`).
    pub fn partial_shuffle<T>(&mut self, v: &mut [T], k: usize) {
        let n = v.len();
        for i in 0..k.min(n.saturating_sub(1)) {
            let j = i + self.below(n - i);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64() {
        // First outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_is_a_permutation() {
        let mut r = SplitMix64::new(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
        let mut v: Vec<usize> = (0..50).collect();
        r.partial_shuffle(&mut v, 50);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
