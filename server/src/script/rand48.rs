//! `math.random` as Redis has it: the 48-bit linear congruential generator of
//! `lrand48` (Redis's `rand.c`), so `math.randomseed(n)` gives Redis's sequence. Each
//! script starts from a seed drawn from the log entry's rng, so replicas draw the same
//! numbers and successive scripts different ones (Redis 7 keeps one sequence going).

/// The generator's state: 48 bits.
#[derive(Debug, Clone, Copy)]
pub struct Rand48(u64);

const MASK48: u64 = (1 << 48) - 1;
const A: u64 = 0x5_DEEC_E66D;
const C: u64 = 0xB;
/// The largest value [`Rand48::next_i32`] divides by (Redis's `REDIS_LRAND48_MAX`).
pub const RAND48_MAX: i32 = i32::MAX;

impl Rand48 {
    /// `srand48(seed)`: the high 32 bits of the state are the seed, the low 16 `0x330E`.
    pub fn seeded(seed: i32) -> Rand48 {
        Rand48((((seed as u32) as u64) << 16 | 0x330E) & MASK48)
    }

    /// `lrand48()`: the next 31 bits.
    pub fn next_i32(&mut self) -> i32 {
        self.0 = (self.0.wrapping_mul(A).wrapping_add(C)) & MASK48;
        (self.0 >> 17) as i32
    }

    /// `math.random`'s number in `[0, 1)`, computed as Redis's patched Lua does.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_i32() % RAND48_MAX) as f64 / RAND48_MAX as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers redis-server 7.0 gives after `math.randomseed(0)` for
    /// `math.random(100)` three times, and for `tostring(math.random())`.
    #[test]
    fn matches_redis_sequence() {
        let mut r = Rand48::seeded(0);
        let draws: Vec<i64> = (0..3)
            .map(|_| (r.next_f64() * 100.0).floor() as i64 + 1)
            .collect();
        assert_eq!(draws, vec![18, 75, 10]);
        let first = Rand48::seeded(0).next_f64();
        assert_eq!(format!("{first:.14}"), "0.17082803611217");
    }
}
