//! What the load generator sends: seeded random streams, the zipfian sampler, the key chooser
//! (uniform or zipfian, plus a hot-key percentage for conflicts), and the pre-generated key space
//! and value pool, so the hot path only slices bytes that already exist.
//!
//! The PRNG is core's [`SplitMix64`] (Synod's one seeded generator, not the `rand` crate): a
//! benchmark run must replay the same key sequence from the same `--seed` forever, and `rand`
//! documents that its seeded generators' output may change between versions.

use synod_core::SplitMix64;

/// The generator for stream `stream` (a worker's index, or the value pool's) of `seed`: streams
/// of one seed do not overlap in any practical run, because the first output already mixes the
/// stream into every bit, and no generator is shared between tasks. (The seeding is the bench's
/// own, not [`SplitMix64::fork`], so `--seed` keeps choosing the keys it always chose.)
pub fn stream_rng(seed: u64, stream: u64) -> SplitMix64 {
    let mut mixer = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix64::new(mixer.next_u64())
}

/// Zipf-distributed ranks over `n` elements with exponent `s`: P(rank k) ∝ 1 / k^s (1-based).
///
/// Rejection-inversion sampling (Hörmann and Derflinger, "Rejection-inversion to generate
/// variates from monotone discrete distributions", 1996): O(1) set-up and O(1) expected time per
/// sample for any `s >= 0`, including `s == 1` where the YCSB/Gray closed form divides by zero,
/// and no O(n) zeta table, so a ten-million key space costs nothing to set up.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    /// The squeeze: candidates this close to their rounded rank are accepted without
    /// evaluating the acceptance test (the paper's `s` constant, renamed to avoid the clash).
    squeeze: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1, "a zipfian key space needs at least one key");
        assert!(
            s.is_finite() && s >= 0.0,
            "zipf exponent must be finite and >= 0, got {s}"
        );
        let mut z = Self {
            n,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            squeeze: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.squeeze = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in [0, n): 0 is the most popular.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            // Rounding to the nearest rank; the clamp guards the two ends against rounding error.
            let k = ((x + 0.5) as u64).clamp(1, self.n);
            let kf = k as f64;
            if kf - x <= self.squeeze || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k - 1;
            }
        }
    }

    /// The hat function's integral H(x) = ((x^(1-s)) - 1) / (1 - s), written so it stays exact
    /// as s → 1 (where it becomes ln x).
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper_expm1_over_x((1.0 - self.s) * log_x) * log_x
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        // Below -1 the log1p is undefined; such values only arise from rounding at the edge.
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper_log1p_over_x(t) * x).exp()
    }
}

/// ln(1 + x) / x, continuous at 0.
fn helper_log1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1) / x, continuous at 0.
fn helper_expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// How keys are picked from the key space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Zipfian with this exponent; key 0 is the most popular.
    Zipfian(f64),
}

/// Picks the key index for each operation: with probability `hot_fraction` the hot key (index 0,
/// so every worker collides on it — the knob for CAS conflicts), otherwise one drawn from the
/// distribution over the whole key space.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    keys: u64,
    zipf: Option<Zipf>,
    hot_fraction: f64,
}

/// The index of the hot key that `--hot-key-pct` sends traffic to.
pub const HOT_KEY_INDEX: u64 = 0;

impl KeyChooser {
    pub fn new(keys: u64, distribution: Distribution, hot_key_pct: f64) -> Self {
        assert!(keys >= 1, "the key space needs at least one key");
        assert!(
            (0.0..=100.0).contains(&hot_key_pct),
            "hot-key percentage out of range"
        );
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipfian(s) => Some(Zipf::new(keys, s)),
        };
        Self {
            keys,
            zipf,
            hot_fraction: hot_key_pct / 100.0,
        }
    }

    pub fn choose(&self, rng: &mut SplitMix64) -> u64 {
        if self.hot_fraction > 0.0 && rng.next_f64() < self.hot_fraction {
            return HOT_KEY_INDEX;
        }
        match &self.zipf {
            None => rng.below(self.keys),
            Some(z) => z.sample(rng),
        }
    }
}

/// Every key of the run, generated once, back to back in one buffer: key `i` is `i` in decimal,
/// zero-padded to `key_size` bytes, so keys are distinct, sort in index order and are readable
/// with `etcdctl get`.
#[derive(Debug)]
pub struct KeySpace {
    key_size: usize,
    keys: u64,
    bytes: Vec<u8>,
}

impl KeySpace {
    /// Fails if `keys` distinct keys do not fit in `key_size` decimal digits.
    pub fn new(keys: u64, key_size: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(key_size >= 1, "--key-size must be at least 1 byte");
        let digits = keys.saturating_sub(1).max(1).to_string().len();
        anyhow::ensure!(
            digits <= key_size,
            "--keys {keys} needs {digits}-byte keys but --key-size is {key_size}"
        );
        let total = usize::try_from(keys)?
            .checked_mul(key_size)
            .ok_or_else(|| {
                anyhow::anyhow!("key space of {keys} x {key_size} bytes is too large")
            })?;
        let mut bytes = Vec::with_capacity(total);
        for i in 0..keys {
            let start = bytes.len();
            bytes.resize(start + key_size, b'0');
            let mut v = i;
            for b in bytes[start..].iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
        }
        Ok(Self {
            key_size,
            keys,
            bytes,
        })
    }

    /// How many keys the space holds.
    pub fn count(&self) -> u64 {
        self.keys
    }

    pub fn key(&self, index: u64) -> &[u8] {
        let start = index as usize * self.key_size;
        &self.bytes[start..start + self.key_size]
    }
}

/// How many distinct values the pool yields: enough that consecutive writes differ (so no
/// layer can shortcut "same value again"), few enough to stay in cache.
pub const VALUE_POOL_VALUES: usize = 1024;

/// Values for writes: one buffer of seeded printable bytes; value `j` is the `value_size` window
/// starting at `j % VALUE_POOL_VALUES`.
#[derive(Debug)]
pub struct ValuePool {
    value_size: usize,
    bytes: Vec<u8>,
}

impl ValuePool {
    pub fn new(value_size: usize, seed: u64) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut rng = stream_rng(seed, u64::MAX);
        let bytes = (0..value_size + VALUE_POOL_VALUES)
            .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
            .collect();
        Self { value_size, bytes }
    }

    pub fn value(&self, j: u64) -> &[u8] {
        let start = (j % VALUE_POOL_VALUES as u64) as usize;
        &self.bytes[start..start + self.value_size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: u64 = 200_000;

    fn histogram(n: u64, mut draw: impl FnMut() -> u64) -> Vec<u64> {
        let mut counts = vec![0u64; n as usize];
        for _ in 0..SAMPLES {
            let k = draw();
            assert!(k < n, "sample {k} outside [0, {n})");
            counts[k as usize] += 1;
        }
        counts
    }

    fn zipf_pmf(n: u64, s: f64) -> Vec<f64> {
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        weights.into_iter().map(|w| w / total).collect()
    }

    /// Observed count within `rel` of the expectation, and within 5 standard deviations so a
    /// tolerance can never be tighter than the binomial noise allows.
    fn assert_close(observed: u64, p: f64, rel: f64, what: &str) {
        let expected = p * SAMPLES as f64;
        let sigma = (SAMPLES as f64 * p * (1.0 - p)).sqrt();
        let tol = (expected * rel).max(5.0 * sigma);
        assert!(
            (observed as f64 - expected).abs() <= tol,
            "{what}: observed {observed}, expected {expected:.0} ± {tol:.0}"
        );
    }

    #[test]
    fn zipf_matches_its_probability_mass_function() {
        for (n, s) in [(1000u64, 0.99), (1000, 1.0), (50, 1.5), (10_000, 0.5)] {
            let z = Zipf::new(n, s);
            let mut rng = SplitMix64::new(7);
            let counts = histogram(n, || z.sample(&mut rng));
            let pmf = zipf_pmf(n, s);
            for rank in [0usize, 1, 2, 9] {
                assert_close(
                    counts[rank],
                    pmf[rank],
                    0.05,
                    &format!("n={n} s={s} rank {rank}"),
                );
            }
            // The head as a whole: the first 10% of ranks carry the predicted mass.
            let head = (n / 10) as usize;
            let head_observed: u64 = counts[..head].iter().sum();
            let head_p: f64 = pmf[..head].iter().sum();
            assert_close(head_observed, head_p, 0.02, &format!("n={n} s={s} head"));
            assert!(
                counts[0] > counts[(n - 1) as usize],
                "rank 0 must beat the tail"
            );
        }
    }

    #[test]
    fn zipf_with_zero_exponent_is_uniform_and_single_key_is_constant() {
        let z = Zipf::new(10, 0.0);
        let mut rng = SplitMix64::new(3);
        let counts = histogram(10, || z.sample(&mut rng));
        for (k, c) in counts.iter().enumerate() {
            assert_close(*c, 0.1, 0.03, &format!("uniform key {k}"));
        }
        let one = Zipf::new(1, 0.99);
        assert!((0..1000).all(|_| one.sample(&mut rng) == 0));
    }

    #[test]
    fn uniform_chooser_covers_the_key_space_evenly() {
        let chooser = KeyChooser::new(20, Distribution::Uniform, 0.0);
        let mut rng = SplitMix64::new(11);
        let counts = histogram(20, || chooser.choose(&mut rng));
        for (k, c) in counts.iter().enumerate() {
            assert_close(*c, 0.05, 0.03, &format!("key {k}"));
        }
    }

    #[test]
    fn hot_key_percentage_sends_that_share_to_the_hot_key() {
        let keys = 1000u64;
        for pct in [0.0, 10.0, 50.0, 100.0] {
            let chooser = KeyChooser::new(keys, Distribution::Uniform, pct);
            let mut rng = SplitMix64::new(5);
            let counts = histogram(keys, || chooser.choose(&mut rng));
            // The hot key also gets its uniform share of the remaining traffic.
            let p_hot = pct / 100.0 + (1.0 - pct / 100.0) / keys as f64;
            assert_close(
                counts[HOT_KEY_INDEX as usize],
                p_hot,
                0.02,
                &format!("hot {pct}%"),
            );
            if pct < 100.0 {
                let p_other = (1.0 - pct / 100.0) / keys as f64;
                let others: u64 = counts[1..].iter().sum();
                assert_close(
                    others,
                    p_other * (keys - 1) as f64,
                    0.02,
                    &format!("rest {pct}%"),
                );
            }
        }
    }

    #[test]
    fn all_hot_means_only_the_hot_key_and_none_means_no_favourite() {
        let all = KeyChooser::new(1000, Distribution::Uniform, 100.0);
        let mut rng = SplitMix64::new(13);
        assert!((0..SAMPLES).all(|_| all.choose(&mut rng) == HOT_KEY_INDEX));
        // At 0 % the hot key is just one key of 50: about 2 %, never a visible favourite.
        let none = KeyChooser::new(50, Distribution::Uniform, 0.0);
        let counts = histogram(50, || none.choose(&mut rng));
        assert_close(counts[HOT_KEY_INDEX as usize], 0.02, 0.05, "hot key at 0%");
        let busiest = counts.iter().copied().max().unwrap_or_default();
        assert!(
            busiest < SAMPLES * 3 / 100,
            "no key is a favourite at 0%: the busiest drew {busiest}"
        );
    }

    #[test]
    fn hot_key_combines_with_zipfian() {
        let chooser = KeyChooser::new(100, Distribution::Zipfian(0.99), 30.0);
        let mut rng = SplitMix64::new(9);
        let counts = histogram(100, || chooser.choose(&mut rng));
        let pmf = zipf_pmf(100, 0.99);
        assert_close(counts[0], 0.3 + 0.7 * pmf[0], 0.02, "hot + zipf rank 0");
        assert_close(counts[1], 0.7 * pmf[1], 0.05, "zipf rank 1");
    }

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let chooser = KeyChooser::new(1_000_000, Distribution::Zipfian(0.99), 5.0);
        let run = |stream| {
            let mut rng = stream_rng(42, stream);
            (0..100)
                .map(|_| chooser.choose(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(0), run(0));
        assert_ne!(run(0), run(1));
    }

    #[test]
    fn key_space_is_fixed_width_distinct_and_checked() {
        let ks = KeySpace::new(1000, 8).expect("fits");
        assert_eq!(ks.key(0), b"00000000");
        assert_eq!(ks.key(7), b"00000007");
        assert_eq!(ks.key(999), b"00000999");
        let ks = KeySpace::new(10, 1).expect("ten one-digit keys fit");
        assert_eq!(ks.key(9), b"9");
        assert!(
            KeySpace::new(11, 1).is_err(),
            "eleven keys do not fit in one digit"
        );
        assert!(KeySpace::new(5, 0).is_err());
    }

    #[test]
    fn value_pool_gives_sized_varied_deterministic_values() {
        let a = ValuePool::new(256, 1);
        let b = ValuePool::new(256, 1);
        assert_eq!(a.value(0).len(), 256);
        assert_eq!(a.value(3), b.value(3));
        assert_ne!(a.value(0), a.value(1));
        assert_eq!(a.value(5), a.value(5 + VALUE_POOL_VALUES as u64));
        assert!(a.value(0).iter().all(u8::is_ascii_alphanumeric));
    }
}
