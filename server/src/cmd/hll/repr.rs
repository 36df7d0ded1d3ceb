//! Redis's HyperLogLog string (src/hyperloglog.c), byte for byte: the header, the dense
//! registers, the sparse runs and the way Redis edits them in place, so a value written
//! here is the one redis-server writes for the same commands (and DUMPs alike).
//!
//! ```text
//! "HYLL" <encoding: 0 dense, 1 sparse> <3 unused> <cached cardinality: u64 LE, top bit = stale>
//! dense:  16384 registers of 6 bits, packed least significant bits first
//! sparse: ZERO 00xxxxxx | XZERO 01xxxxxx yyyyyyyy | VAL 1vvvvvxx runs
//! ```

use crate::cmd::CmdError;

/// Register index bits: 2^14 registers.
const HLL_P: u32 = 14;
/// Hash bits left for the run of zeros.
const HLL_Q: u32 = 64 - HLL_P;
pub const HLL_REGISTERS: usize = 1 << HLL_P;
const HLL_BITS: usize = 6;
const HLL_REGISTER_MAX: u8 = (1 << HLL_BITS) - 1;
pub const HLL_HDR_SIZE: usize = 16;
const HLL_DENSE_SIZE: usize = HLL_HDR_SIZE + (HLL_REGISTERS * HLL_BITS).div_ceil(8);
pub const HLL_DENSE: u8 = 0;
pub const HLL_SPARSE: u8 = 1;
/// Byte of the header holding the stale bit of the cached cardinality.
const CACHE_STALE_BYTE: usize = 15;
const CACHE_STALE_BIT: u8 = 0x80;
/// Redis's MurmurHash64A seed for HLL elements.
const HLL_HASH_SEED: u64 = 0xadc8_3b19;
const HLL_ALPHA_INF: f64 = 0.721_347_520_444_481_7;
/// Sparse opcodes: the largest value a VAL holds, and the longest runs.
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const SPARSE_XZERO_MAX_LEN: usize = 16384;
/// How many opcodes from the one before the change the VAL merge looks at (Redis's).
const SPARSE_MERGE_SCAN: usize = 5;

pub const NOT_HLL: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "WRONGTYPE Key is not a valid HyperLogLog string value.",
));
pub const CORRUPT: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "INVALIDOBJ Corrupted HLL object detected",
));

/// MurmurHash64A, as Redis's (little-endian reads).
fn murmur64a(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (data.len() as u64).wrapping_mul(M);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut k = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            h ^= (*b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element lands in and the length of its run of zeros plus one.
pub fn pattern(element: &[u8]) -> (usize, u8) {
    let hash = murmur64a(element, HLL_HASH_SEED);
    let index = (hash as usize) & (HLL_REGISTERS - 1);
    let rest = (hash >> HLL_P) | (1u64 << HLL_Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let bit = i * HLL_BITS;
    let (byte, fb) = (bit / 8, bit % 8);
    let b0 = regs[byte] as u16;
    let b1 = regs.get(byte + 1).copied().unwrap_or(0) as u16;
    (((b0 >> fb) | (b1 << (8 - fb))) & HLL_REGISTER_MAX as u16) as u8
}

fn dense_set(regs: &mut [u8], i: usize, value: u8) {
    let bit = i * HLL_BITS;
    let (byte, fb) = (bit / 8, bit % 8);
    let v = value as u16 & HLL_REGISTER_MAX as u16;
    regs[byte] = (regs[byte] as u16 & !((HLL_REGISTER_MAX as u16) << fb) | (v << fb)) as u8;
    if let Some(next) = regs.get_mut(byte + 1) {
        let high = (HLL_REGISTER_MAX as u16) >> (8 - fb);
        *next = ((*next as u16 & !high) | (v >> (8 - fb))) as u8;
    }
}

/// Checks the header as Redis's `isHLLObjectOrReply`: magic, encoding, dense length.
/// Sparse runs are checked by the operations that walk them.
pub fn check_header(s: &[u8]) -> Result<(), CmdError> {
    if s.len() < HLL_HDR_SIZE
        || &s[..4] != b"HYLL"
        || s[4] > HLL_SPARSE
        || (s[4] == HLL_DENSE && s.len() != HLL_DENSE_SIZE)
    {
        return Err(NOT_HLL);
    }
    Ok(())
}

/// One sparse opcode.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Zero(usize),
    XZero(usize),
    Val(u8, usize),
}

impl Op {
    /// The opcode at `p` of `s` and its length in bytes; `None` for an XZERO cut short.
    fn at(s: &[u8], p: usize) -> Option<(Op, usize)> {
        let b = s[p];
        Some(match b & 0xC0 {
            0x00 => (Op::Zero((b & 0x3F) as usize + 1), 1),
            0x40 => {
                let low = *s.get(p + 1)? as usize;
                (Op::XZero((((b & 0x3F) as usize) << 8 | low) + 1), 2)
            }
            _ => (Op::Val(((b >> 2) & 0x1F) + 1, (b & 0x03) as usize + 1), 1),
        })
    }

    fn span(self) -> usize {
        match self {
            Op::Zero(n) | Op::XZero(n) | Op::Val(_, n) => n,
        }
    }

    /// Appends the opcode's bytes (a zero run longer than ZERO's is an XZERO).
    fn push(self, out: &mut Vec<u8>) {
        match self {
            Op::Zero(n) | Op::XZero(n) if n > SPARSE_ZERO_MAX_LEN => {
                let l = n - 1;
                out.push(0x40 | (l >> 8) as u8);
                out.push((l & 0xFF) as u8);
            }
            Op::Zero(n) | Op::XZero(n) => out.push((n - 1) as u8),
            Op::Val(v, n) => out.push(val_byte(v, n)),
        }
    }
}

/// The VAL opcode of `n` registers (1..=4) of value `v` (1..=32).
fn val_byte(v: u8, n: usize) -> u8 {
    0x80 | ((v - 1) << 2) | (n - 1) as u8
}

/// The registers of a valid HLL string: `Err(NOT_HLL)` if it is not one (bad magic,
/// encoding or dense length), `Err(CORRUPT)` if its sparse runs do not add up.
pub fn registers(s: &[u8]) -> Result<Vec<u8>, CmdError> {
    check_header(s)?;
    let mut regs = vec![0u8; HLL_REGISTERS];
    if s[4] == HLL_DENSE {
        let body = &s[HLL_HDR_SIZE..];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = dense_get(body, i);
        }
        return Ok(regs);
    }
    let mut i = 0usize;
    let mut p = HLL_HDR_SIZE;
    while p < s.len() {
        let (op, len) = Op::at(s, p).ok_or(CORRUPT)?;
        p += len;
        let run = op.span();
        if i + run > HLL_REGISTERS {
            return Err(CORRUPT);
        }
        if let Op::Val(v, _) = op {
            regs[i..i + run].fill(v);
        }
        i += run;
    }
    if i != HLL_REGISTERS {
        return Err(CORRUPT);
    }
    Ok(regs)
}

/// A new HLL as Redis's `createHLLObject`: sparse, every register in XZERO runs, the
/// cached cardinality a valid 0.
pub fn new_sparse() -> Vec<u8> {
    let mut s = vec![0u8; HLL_HDR_SIZE];
    s[..4].copy_from_slice(b"HYLL");
    s[4] = HLL_SPARSE;
    let mut left = HLL_REGISTERS;
    while left > 0 {
        let run = left.min(SPARSE_XZERO_MAX_LEN);
        Op::XZero(run).push(&mut s);
        left -= run;
    }
    s
}

/// A dense HLL string of `regs`, its cached cardinality marked stale.
pub fn dense_string(regs: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; HLL_DENSE_SIZE];
    s[..4].copy_from_slice(b"HYLL");
    s[4] = HLL_DENSE;
    s[CACHE_STALE_BYTE] = CACHE_STALE_BIT;
    for (i, &r) in regs.iter().enumerate() {
        if r != 0 {
            dense_set(&mut s[HLL_HDR_SIZE..], i, r);
        }
    }
    s
}

/// Converts a sparse HLL to the dense encoding in place, keeping the header (and its
/// cached cardinality), as Redis's `hllSparseToDense`. A dense one is left alone.
pub fn to_dense(s: &mut Vec<u8>) -> Result<(), CmdError> {
    if s.get(4) != Some(&HLL_SPARSE) {
        return Ok(());
    }
    let regs = registers(s)?;
    let mut dense = dense_string(&regs);
    dense[5..HLL_HDR_SIZE].copy_from_slice(&s[5..HLL_HDR_SIZE]);
    *s = dense;
    Ok(())
}

/// Marks the cached cardinality stale.
pub fn invalidate_cache(s: &mut [u8]) {
    s[CACHE_STALE_BYTE] |= CACHE_STALE_BIT;
}

/// The cached cardinality, if it is valid.
pub fn cached(s: &[u8]) -> Option<u64> {
    if s[CACHE_STALE_BYTE] & CACHE_STALE_BIT != 0 {
        return None;
    }
    let mut card = [0u8; 8];
    card.copy_from_slice(&s[8..HLL_HDR_SIZE]);
    Some(u64::from_le_bytes(card))
}

/// Writes a valid cached cardinality.
pub fn set_cache(s: &mut [u8], card: u64) {
    s[8..HLL_HDR_SIZE].copy_from_slice(&card.to_le_bytes());
}

/// Raises register `index` to `count` if it is lower (Redis's `hllDenseSet` and
/// `hllSparseSet`): a sparse HLL is edited in place as Redis does, and promoted to dense
/// when `count` is too big for a VAL or the string would pass `sparse_max_bytes`.
/// Returns whether the register changed; `Err(CORRUPT)` for sparse runs that do not
/// cover the index. The cached cardinality is left to the caller.
pub fn set_register(
    s: &mut Vec<u8>,
    index: usize,
    count: u8,
    sparse_max_bytes: usize,
) -> Result<bool, CmdError> {
    if s[4] == HLL_DENSE {
        let regs = &mut s[HLL_HDR_SIZE..];
        if dense_get(regs, index) >= count {
            return Ok(false);
        }
        dense_set(regs, index, count);
        return Ok(true);
    }
    if count > SPARSE_VAL_MAX_VALUE {
        return promote(s, index, count);
    }
    // Step 1: the opcode covering `index`, the first register it covers, the one before.
    let mut p = HLL_HDR_SIZE;
    let mut first = 0usize;
    let mut prev = None;
    let mut found = None;
    while p < s.len() {
        let (op, len) = Op::at(s, p).ok_or(CORRUPT)?;
        if index < first + op.span() {
            found = Some((op, len));
            break;
        }
        prev = Some(p);
        p += len;
        first += op.span();
    }
    let Some((op, oplen)) = found else {
        return Err(CORRUPT);
    };
    // Step 2: the cases changed in place.
    let trivial = match op {
        Op::Val(old, _) if old >= count => return Ok(false),
        Op::Val(_, 1) | Op::Zero(1) => true,
        _ => false,
    };
    if trivial {
        s[p] = val_byte(count, 1);
    } else {
        // Step 3: split the run into up to three opcodes around the register.
        let last = first + op.span() - 1;
        let mut seq = Vec::with_capacity(5);
        let side = |n: usize| match op {
            Op::Val(v, _) => Op::Val(v, n),
            _ => Op::Zero(n),
        };
        if index != first {
            side(index - first).push(&mut seq);
        }
        Op::Val(count, 1).push(&mut seq);
        if index != last {
            side(last - index).push(&mut seq);
        }
        if seq.len() > oplen && s.len() + seq.len() - oplen > sparse_max_bytes {
            return promote(s, index, count);
        }
        s.splice(p..p + oplen, seq);
    }
    // Step 4: merge adjacent VALs of the same value, from the opcode before the change.
    let mut p = prev.unwrap_or(HLL_HDR_SIZE);
    let mut scan = SPARSE_MERGE_SCAN;
    while p < s.len() && scan > 0 {
        scan -= 1;
        let Some((op, len)) = Op::at(s, p) else { break };
        let Op::Val(v1, n1) = op else {
            p += len;
            continue;
        };
        if let Some((Op::Val(v2, n2), _)) = (p + 1 < s.len()).then(|| Op::at(s, p + 1)).flatten() {
            if v1 == v2 && n1 + n2 <= SPARSE_VAL_MAX_LEN {
                s[p + 1] = val_byte(v1, n1 + n2);
                s.remove(p);
                continue;
            }
        }
        p += 1;
    }
    Ok(true)
}

/// Redis's promotion: the HLL becomes dense, then the register is set there.
fn promote(s: &mut Vec<u8>, index: usize, count: u8) -> Result<bool, CmdError> {
    to_dense(s)?;
    dense_set(&mut s[HLL_HDR_SIZE..], index, count);
    Ok(true)
}

/// Adds `element` (Redis's `hllAdd`): whether a register changed.
pub fn add(s: &mut Vec<u8>, element: &[u8], sparse_max_bytes: usize) -> Result<bool, CmdError> {
    let (index, count) = pattern(element);
    set_register(s, index, count, sparse_max_bytes)
}

/// PFDEBUG DECODE's text of a sparse HLL: `z:N`, `Z:N` and `v:VALUE,N` runs.
pub fn decode_sparse(s: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut p = HLL_HDR_SIZE;
    while p < s.len() {
        // An XZERO cut short reads its missing byte as 0, as Redis's (which reads the
        // string's terminator).
        let (op, len) = Op::at(s, p).unwrap_or((Op::XZero((((s[p] & 0x3F) as usize) << 8) + 1), 2));
        p += len;
        parts.push(match op {
            Op::Zero(n) => format!("z:{n}"),
            Op::XZero(n) => format!("Z:{n}"),
            Op::Val(v, n) => format!("v:{v},{n}"),
        });
    }
    parts.join(" ")
}

/// PFDEBUG GETREG's registers, straight from a dense HLL.
pub fn dense_registers(s: &[u8]) -> Vec<u8> {
    let body = &s[HLL_HDR_SIZE..];
    (0..HLL_REGISTERS).map(|i| dense_get(body, i)).collect()
}
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if before == z {
            return z / 3.0;
        }
    }
}

/// Redis's estimator (Ertl's improved one) over the registers.
pub fn count(regs: &[u8]) -> u64 {
    let m = HLL_REGISTERS as f64;
    let mut histo = [0u32; 64];
    for &r in regs {
        histo[r as usize & 63] += 1;
    }
    let q = HLL_Q as usize;
    let mut z = m * tau((m - histo[q + 1] as f64) / m);
    for j in (1..=q).rev() {
        z += histo[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histo[0] as f64 / m);
    (HLL_ALPHA_INF * m * m / z).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_pack_like_redis() {
        let mut regs = vec![0u8; HLL_REGISTERS * HLL_BITS / 8];
        for i in [0, 1, 2, 3, 1000, HLL_REGISTERS - 1] {
            dense_set(&mut regs, i, (i % 63) as u8 + 1);
        }
        for i in [0, 1, 2, 3, 1000, HLL_REGISTERS - 1] {
            assert_eq!(dense_get(&regs, i), (i % 63) as u8 + 1);
        }
        assert_eq!(dense_get(&regs, 4), 0);
    }

    #[test]
    fn counts_are_close_and_sparse_reads() {
        let mut regs = vec![0u8; HLL_REGISTERS];
        assert_eq!(count(&regs), 0);
        for n in 0..1000u32 {
            let (i, run) = pattern(n.to_string().as_bytes());
            regs[i] = regs[i].max(run);
        }
        let c = count(&regs) as i64;
        assert!((c - 1000).abs() < 30, "{c}");
        // A new Redis HLL: header then XZERO of 16384 registers.
        let mut sparse = new_sparse();
        assert_eq!(&sparse[HLL_HDR_SIZE..], &[0x7F, 0xFF]);
        assert_eq!(registers(&sparse).unwrap(), vec![0u8; HLL_REGISTERS]);
        sparse.push(0x80);
        assert_eq!(registers(&sparse), Err(CORRUPT));
        assert_eq!(registers(b"HYLL"), Err(NOT_HLL));
        let dense = dense_string(&regs);
        assert_eq!(registers(&dense).unwrap(), regs);
    }

    /// The bytes redis-server 7.0.15 holds after `PFADD h a b c`.
    #[test]
    fn sparse_adds_write_redis_bytes() {
        let mut s = new_sparse();
        for e in [&b"a"[..], b"b", b"c"] {
            assert_eq!(add(&mut s, e, 3000), Ok(true));
        }
        invalidate_cache(&mut s);
        let mut want = b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80".to_vec();
        want.extend_from_slice(&[
            0x60, 0xf3, 0x80, 0x50, 0xb1, 0x84, 0x4b, 0xfb, 0x80, 0x42, 0x5a,
        ]);
        assert_eq!(s, want);
        assert_eq!(
            decode_sparse(&s),
            decode_sparse(&want),
            "decoded: {}",
            decode_sparse(&s)
        );
        assert_eq!(add(&mut s, b"a", 3000), Ok(false));
    }

    /// Sparse edits (splits, merges, promotion) keep the registers a dense HLL has.
    #[test]
    fn sparse_and_dense_agree_through_promotion() {
        let mut sparse = new_sparse();
        let mut dense = dense_string(&[0u8; HLL_REGISTERS]);
        let max_bytes = 300;
        for n in 0..3000u32 {
            let e = format!("element-{n}");
            assert_eq!(
                add(&mut sparse, e.as_bytes(), max_bytes),
                add(&mut dense, e.as_bytes(), max_bytes)
            );
            if sparse[4] == HLL_SPARSE {
                assert!(sparse.len() <= max_bytes);
            }
            if n % 97 == 0 {
                assert_eq!(
                    registers(&sparse).unwrap(),
                    registers(&dense).unwrap(),
                    "{n}"
                );
            }
        }
        assert_eq!(sparse[4], HLL_DENSE, "promoted past hll-sparse-max-bytes");
        assert_eq!(registers(&sparse).unwrap(), registers(&dense).unwrap());
        // Adjacent equal values merge into one VAL run of up to 4 registers.
        let mut s = new_sparse();
        for i in 10..16 {
            set_register(&mut s, i, 3, 3000).unwrap();
        }
        assert_eq!(decode_sparse(&s), "z:10 v:3,4 v:3,2 Z:16368");
        // A value above 32 promotes.
        let mut s = new_sparse();
        assert_eq!(set_register(&mut s, 5, 33, 3000), Ok(true));
        assert_eq!(s[4], HLL_DENSE);
        assert_eq!(dense_registers(&s)[5], 33);
    }

    #[test]
    fn corrupt_sparse_runs_are_errors_not_panics() {
        let mut s = new_sparse();
        s.truncate(HLL_HDR_SIZE + 1); // an XZERO cut short
        assert_eq!(registers(&s), Err(CORRUPT));
        assert_eq!(add(&mut s, b"x", 3000), Err(CORRUPT));
        assert_eq!(decode_sparse(&s), "Z:16129");
        let mut s = new_sparse();
        s.extend_from_slice(b"hello");
        assert_eq!(registers(&s), Err(CORRUPT));
        assert_eq!(to_dense(&mut s.clone()), Err(CORRUPT));
    }
}
