//! HyperLogLog: PFADD, PFCOUNT, PFMERGE, in Redis's own representation (src/hyperloglog.c),
//! so a value DUMPed from Redis restores here and counts the same, and the reverse.
//!
//! ```text
//! "HYLL" <encoding: 0 dense, 1 sparse> <3 unused> <cached cardinality: u64 LE, top bit = stale>
//! dense:  16384 registers of 6 bits, packed least significant bits first
//! sparse: ZERO 00xxxxxx | XZERO 01xxxxxx yyyyyyyy | VAL 1vvvvvxx runs
//! ```
//!
//! Kelvin reads both encodings and writes the dense one: a new or changed HLL is dense
//! (12 KiB), where Redis starts sparse and promotes. The registers, hence every count,
//! are Redis's; PFCOUNT does not write its cached cardinality back (it is a read here,
//! so it never goes through the log).

use bytes::Bytes;

use crate::cmd::{data, flags::*, CmdError, CmdResult, CommandSpec, Exec, ALL_KEYS, KEY1};
use crate::notify::STRING;
use crate::store::{Entry, Value};

pub const COMMANDS: &[CommandSpec] = &[
    data(
        "pfadd",
        -2,
        WRITE | DENYOOM | FAST,
        KEY1,
        "hyperloglog",
        "Adds elements to a HyperLogLog key. Creates the key if it doesn't exist.",
        pfadd,
    ),
    data(
        "pfcount",
        -2,
        READONLY,
        ALL_KEYS,
        "hyperloglog",
        "Returns the approximated cardinality of the set(s) observed by the HyperLogLog key(s).",
        pfcount,
    ),
    data(
        "pfmerge",
        -2,
        WRITE | DENYOOM,
        ALL_KEYS,
        "hyperloglog",
        "Merges one or more HyperLogLog values into a single key.",
        pfmerge,
    ),
];

/// Register index bits: 2^14 registers.
const HLL_P: u32 = 14;
/// Hash bits left for the run of zeros.
const HLL_Q: u32 = 64 - HLL_P;
const HLL_REGISTERS: usize = 1 << HLL_P;
const HLL_BITS: usize = 6;
const HLL_REGISTER_MAX: u8 = (1 << HLL_BITS) - 1;
const HLL_HDR_SIZE: usize = 16;
const HLL_DENSE_SIZE: usize = HLL_HDR_SIZE + (HLL_REGISTERS * HLL_BITS).div_ceil(8);
const HLL_DENSE: u8 = 0;
const HLL_SPARSE: u8 = 1;
/// Redis's MurmurHash64A seed for HLL elements.
const HLL_HASH_SEED: u64 = 0xadc8_3b19;
const HLL_ALPHA_INF: f64 = 0.721_347_520_444_481_7;

const NOT_HLL: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "WRONGTYPE Key is not a valid HyperLogLog string value.",
));
const CORRUPT: CmdError = CmdError(std::borrow::Cow::Borrowed(
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
fn pattern(element: &[u8]) -> (usize, u8) {
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

/// The registers of a valid HLL string: `Err(NOT_HLL)` if it is not one (bad magic,
/// encoding or dense length), `Err(CORRUPT)` if its sparse runs do not add up.
fn registers(s: &[u8]) -> Result<Vec<u8>, CmdError> {
    if s.len() < HLL_HDR_SIZE || &s[..4] != b"HYLL" || s[4] > HLL_SPARSE {
        return Err(NOT_HLL);
    }
    let body = &s[HLL_HDR_SIZE..];
    let mut regs = vec![0u8; HLL_REGISTERS];
    if s[4] == HLL_DENSE {
        if s.len() != HLL_DENSE_SIZE {
            return Err(NOT_HLL);
        }
        for (i, r) in regs.iter_mut().enumerate() {
            *r = dense_get(body, i);
        }
        return Ok(regs);
    }
    let mut i = 0usize;
    let mut p = 0usize;
    while p < body.len() {
        let op = body[p];
        let (run, value) = if op & 0xC0 == 0x00 {
            p += 1;
            ((op & 0x3F) as usize + 1, 0)
        } else if op & 0xC0 == 0x40 {
            let low = *body.get(p + 1).ok_or(CORRUPT)? as usize;
            p += 2;
            ((((op & 0x3F) as usize) << 8 | low) + 1, 0)
        } else {
            p += 1;
            ((op & 0x03) as usize + 1, ((op >> 2) & 0x1F) + 1)
        };
        if i + run > HLL_REGISTERS {
            return Err(CORRUPT);
        }
        regs[i..i + run].fill(value);
        i += run;
    }
    if i != HLL_REGISTERS {
        return Err(CORRUPT);
    }
    Ok(regs)
}

/// A dense HLL string of `regs`, its cached cardinality marked stale.
fn dense_string(regs: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; HLL_DENSE_SIZE];
    s[..4].copy_from_slice(b"HYLL");
    s[4] = HLL_DENSE;
    s[15] = 0x80;
    for (i, &r) in regs.iter().enumerate() {
        if r != 0 {
            dense_set(&mut s[HLL_HDR_SIZE..], i, r);
        }
    }
    s
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
fn count(regs: &[u8]) -> u64 {
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

/// The registers under `key` for a read: `None` if missing.
fn read_registers(ex: &mut Exec<'_>, key: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
    match ex.read_value(key) {
        None => Ok(None),
        Some(Value::Str(s)) => registers(s).map(Some),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// Stores `regs` as a dense HLL under `key`, keeping its TTL (Redis changes the string
/// in place).
fn store_registers(ex: &mut Exec<'_>, key: &[u8], regs: &[u8]) {
    let s = dense_string(regs);
    match ex.ks().raw_get_mut(key) {
        Some(entry) => entry.value = Value::Str(s),
        None => {
            let now = ex.now_ms;
            let mut entry = Entry::new(Value::Str(s));
            entry.heat.touch(now, true);
            ex.ks().insert(key, entry);
        }
    }
}

fn pfadd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let existing = match ex.write(key) {
        None => None,
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => Some(registers(s)?),
        Some(_) => return Err(CmdError::WRONGTYPE),
    };
    let created = existing.is_none();
    let mut regs = existing.unwrap_or_else(|| vec![0u8; HLL_REGISTERS]);
    let mut updated = created;
    for element in &argv[2..] {
        let (i, run) = pattern(element);
        if run > regs[i] {
            regs[i] = run;
            updated = true;
        }
    }
    if updated {
        store_registers(ex, key, &regs);
        ex.notify(STRING, "pfadd", key);
    }
    ex.out.int(updated as i64);
    Ok(())
}

fn pfcount(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    if argv.len() == 2 {
        // A valid cached cardinality (from Redis, say) answers as Redis would.
        if let Some(Value::Str(s)) = ex.read_value(&argv[1]) {
            if registers(s).is_ok() && s[15] & 0x80 == 0 {
                let mut card = [0u8; 8];
                card.copy_from_slice(&s[8..16]);
                ex.out.int(u64::from_le_bytes(card) as i64);
                return Ok(());
            }
        }
    }
    let mut union = vec![0u8; HLL_REGISTERS];
    for key in &argv[1..] {
        if let Some(regs) = read_registers(ex, key)? {
            for (u, r) in union.iter_mut().zip(regs) {
                *u = (*u).max(r);
            }
        }
    }
    ex.out.int(count(&union) as i64);
    Ok(())
}

fn pfmerge(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let dest = &argv[1];
    let mut union = vec![0u8; HLL_REGISTERS];
    for key in &argv[1..] {
        if let Some(regs) = read_registers(ex, key)? {
            for (u, r) in union.iter_mut().zip(regs) {
                *u = (*u).max(r);
            }
        }
    }
    ex.expire_if_needed(dest);
    store_registers(ex, dest, &union);
    ex.notify(STRING, "pfadd", dest);
    ex.out.ok();
    Ok(())
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
        let mut sparse = b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        sparse.extend_from_slice(&[0x7F, 0xFF]);
        assert_eq!(registers(&sparse).unwrap(), vec![0u8; HLL_REGISTERS]);
        sparse.push(0x80);
        assert_eq!(registers(&sparse), Err(CORRUPT));
        assert_eq!(registers(b"HYLL"), Err(NOT_HLL));
        let dense = dense_string(&regs);
        assert_eq!(registers(&dense).unwrap(), regs);
    }
}
