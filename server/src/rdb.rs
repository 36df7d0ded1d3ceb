//! Redis's serialization of one value (what DUMP answers and RESTORE takes): the RDB
//! encoding of the value, the RDB version (2 bytes, little endian) and a CRC-64 of all
//! that (8 bytes, little endian, Jones polynomial as Redis's src/crc64.c).
//!
//! ```text
//! <type byte> <value> <rdb version: u16 LE> <crc64: u64 LE>
//! ```
//!
//! Kelvin writes the plain RDB types every Redis since 2.x loads (`STRING`, `LIST`,
//! `SET`, `ZSET_2`, `HASH`) with version 10 (Redis 7.0's), and reads what Redis 7.0
//! writes: those, plus the compact ones (`LIST_QUICKLIST_2`, `SET_INTSET`,
//! `ZSET_LISTPACK`, `HASH_LISTPACK`), integer and LZF-compressed strings. Older compact
//! types (ziplists, from Redis 6 and before) are refused as bad data.
//!
//! Decoding never trusts a length: every read checks the bytes left first, and a
//! collection is never preallocated beyond the bytes that could hold it.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};

use crate::store::{Blob, Value};
use crate::zset::ZSet;

/// The RDB version Kelvin writes, and the newest it accepts (Redis 7.0's).
pub const RDB_VERSION: u16 = 10;

const TYPE_STRING: u8 = 0;
const TYPE_LIST: u8 = 1;
const TYPE_SET: u8 = 2;
const TYPE_HASH: u8 = 4;
const TYPE_ZSET_2: u8 = 5;
const TYPE_SET_INTSET: u8 = 11;
const TYPE_HASH_LISTPACK: u8 = 16;
const TYPE_ZSET_LISTPACK: u8 = 17;
const TYPE_LIST_QUICKLIST_2: u8 = 18;

/// Why a payload was refused; the texts are Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RdbError {
    #[error("ERR DUMP payload version or checksum are wrong")]
    VersionOrChecksum,
    #[error("ERR Bad data format")]
    BadData,
}

// ---------------------------------------------------------------------------------------
// CRC-64 (Jones, reflected, as Redis's crc64).

/// CRC-64/REDIS (Jones polynomial, reflected, no final xor) by carry-less multiplication
/// where the CPU has it (PCLMULQDQ, PMULL), tables elsewhere (`crc-fast`). A migration
/// checks every key it moves three times (DUMP at the source, RESTORE at each replica of
/// the target): with slicing-by-8 tables that was 8.7% of the machine's cycles during a
/// 1M-session drain.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Redis, data)
}

// ---------------------------------------------------------------------------------------
// Encoding.

fn put_len(out: &mut Vec<u8>, len: usize) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if len <= u32::MAX as usize {
        out.push(0x80);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len());
    out.extend_from_slice(s);
}

/// The DUMP payload of `value`. Set and hash members go out in byte order, so the
/// payload is the same on every replica.
pub fn dump(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        Value::Str(s) => {
            // type, length (at most 9 bytes), the string, version and CRC: one allocation.
            out.reserve_exact(1 + 9 + s.len() + 10);
            out.push(TYPE_STRING);
            put_str(&mut out, s);
        }
        Value::List(l) => {
            out.push(TYPE_LIST);
            put_len(&mut out, l.len());
            for e in l.iter() {
                put_str(&mut out, e);
            }
        }
        Value::Set(s) => {
            out.push(TYPE_SET);
            let mut members: Vec<&Blob> = s.iter().collect();
            members.sort_unstable();
            put_len(&mut out, members.len());
            for m in members {
                put_str(&mut out, m);
            }
        }
        Value::ZSet(z) => {
            out.push(TYPE_ZSET_2);
            put_len(&mut out, z.len());
            // Redis writes them from the highest score down (it loads faster).
            for (member, score) in z.iter().rev() {
                put_str(&mut out, member);
                out.extend_from_slice(&score.to_le_bytes());
            }
        }
        Value::Hash(h) => {
            out.push(TYPE_HASH);
            let mut pairs: Vec<(&Blob, &Blob)> = h.iter().collect();
            pairs.sort_unstable();
            put_len(&mut out, pairs.len());
            for (f, v) in pairs {
                put_str(&mut out, f);
                put_str(&mut out, v);
            }
        }
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------
// Decoding.

/// The body of a DUMP payload once its footer (version, CRC) checks out.
fn checked_body(payload: &[u8]) -> Result<&[u8], RdbError> {
    if payload.len() < 10 {
        return Err(RdbError::VersionOrChecksum);
    }
    let (body, footer) = payload.split_at(payload.len() - 10);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let mut crc_bytes = [0u8; 8];
    crc_bytes.copy_from_slice(&footer[2..]);
    if version > RDB_VERSION
        || crc64(&payload[..payload.len() - 8]) != u64::from_le_bytes(crc_bytes)
    {
        return Err(RdbError::VersionOrChecksum);
    }
    Ok(body)
}

/// Redis's RDB opcode of a function library (its code as one string).
const OPCODE_FUNCTION2: u8 = 245;

/// FUNCTION DUMP's payload: each library's code after `OPCODE_FUNCTION2`, then the
/// footer, as Redis's `functionDumpCommand`.
pub fn dump_functions<'a>(codes: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for code in codes {
        out.push(OPCODE_FUNCTION2);
        put_str(&mut out, code);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why FUNCTION RESTORE could not read a payload (Redis's texts).
#[derive(Debug, thiserror::Error)]
pub enum FunctionPayloadError {
    #[error("ERR payload version or checksum are wrong")]
    VersionOrChecksum,
    #[error("ERR given type is not a function")]
    NotAFunction,
    #[error("ERR failed loading the given functions payload")]
    BadData,
}

/// The library codes of a FUNCTION DUMP payload (Redis's, LZF-compressed strings too).
pub fn function_codes(payload: &[u8]) -> Result<Vec<Vec<u8>>, FunctionPayloadError> {
    let body = checked_body(payload).map_err(|_| FunctionPayloadError::VersionOrChecksum)?;
    let mut r = Reader { buf: body };
    let mut codes = Vec::new();
    while !r.buf.is_empty() {
        if r.byte().map_err(|_| FunctionPayloadError::BadData)? != OPCODE_FUNCTION2 {
            return Err(FunctionPayloadError::NotAFunction);
        }
        codes.push(r.string().map_err(|_| FunctionPayloadError::BadData)?);
    }
    Ok(codes)
}

/// Checks the footer (version, CRC) and decodes the value.
pub fn restore(payload: &[u8]) -> Result<Value, RdbError> {
    let body = checked_body(payload)?;
    let mut r = Reader { buf: body };
    let value = r.value()?;
    if !r.buf.is_empty() || value.is_empty_collection() {
        return Err(RdbError::BadData);
    }
    Ok(value)
}

struct Reader<'a> {
    buf: &'a [u8],
}

/// A length, or one of the special string encodings.
enum Len {
    Plain(usize),
    Special(u8),
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RdbError> {
        if n > self.buf.len() {
            return Err(RdbError::BadData);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, RdbError> {
        Ok(self.take(1)?[0])
    }

    fn raw_len(&mut self) -> Result<Len, RdbError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Len::Plain((first & 0x3F) as usize),
            1 => Len::Plain((((first & 0x3F) as usize) << 8) | self.byte()? as usize),
            2 if first == 0x80 => {
                let b = self.take(4)?;
                Len::Plain(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            }
            2 if first == 0x81 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.take(8)?);
                Len::Plain(usize::try_from(u64::from_be_bytes(b)).map_err(|_| RdbError::BadData)?)
            }
            3 => Len::Special(first & 0x3F),
            _ => return Err(RdbError::BadData),
        })
    }

    fn len(&mut self) -> Result<usize, RdbError> {
        match self.raw_len()? {
            Len::Plain(n) => Ok(n),
            Len::Special(_) => Err(RdbError::BadData),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.raw_len()? {
            Len::Plain(n) => Ok(self.take(n)?.to_vec()),
            Len::Special(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Len::Special(1) => {
                let b = self.take(2)?;
                Ok(i16::from_le_bytes([b[0], b[1]]).to_string().into_bytes())
            }
            Len::Special(2) => {
                let b = self.take(4)?;
                Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    .to_string()
                    .into_bytes())
            }
            Len::Special(3) => {
                let compressed_len = self.len()?;
                let len = self.len()?;
                let compressed = self.take(compressed_len)?;
                lzf_decompress(compressed, len)
            }
            Len::Special(_) => Err(RdbError::BadData),
        }
    }

    fn double_le(&mut self) -> Result<f64, RdbError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        let d = f64::from_le_bytes(b);
        if d.is_nan() {
            return Err(RdbError::BadData);
        }
        Ok(d)
    }

    /// A collection's element count, capped by what the remaining bytes could hold
    /// (each element takes at least `min_bytes`), for preallocation.
    fn count(&mut self, min_bytes: usize) -> Result<(usize, usize), RdbError> {
        let n = self.len()?;
        Ok((n, n.min(self.buf.len() / min_bytes.max(1))))
    }

    fn value(&mut self) -> Result<Value, RdbError> {
        let kind = self.byte()?;
        Ok(match kind {
            TYPE_STRING => Value::Str(self.string()?),
            TYPE_LIST => {
                let (n, cap) = self.count(1)?;
                let mut list = VecDeque::with_capacity(cap);
                for _ in 0..n {
                    list.push_back(self.string()?.into_boxed_slice());
                }
                Value::List(Box::new(list))
            }
            TYPE_SET => {
                let (n, cap) = self.count(1)?;
                let mut set = HashSet::with_capacity(cap);
                for _ in 0..n {
                    if !set.insert(self.string()?.into_boxed_slice()) {
                        return Err(RdbError::BadData);
                    }
                }
                Value::Set(Box::new(set))
            }
            TYPE_ZSET_2 => {
                let (n, _) = self.count(9)?;
                let mut z = ZSet::default();
                for _ in 0..n {
                    let member = self.string()?;
                    let score = self.double_le()?;
                    if !z.insert(&member, score) {
                        return Err(RdbError::BadData);
                    }
                }
                Value::ZSet(Box::new(z))
            }
            TYPE_HASH => {
                let (n, cap) = self.count(2)?;
                let mut h = HashMap::with_capacity(cap);
                for _ in 0..n {
                    let field = self.string()?.into_boxed_slice();
                    let value = self.string()?.into_boxed_slice();
                    if h.insert(field, value).is_some() {
                        return Err(RdbError::BadData);
                    }
                }
                Value::Hash(Box::new(h))
            }
            TYPE_SET_INTSET => {
                let blob = self.string()?;
                let mut set = HashSet::new();
                for n in intset(&blob)? {
                    if !set.insert(n.to_string().into_bytes().into_boxed_slice()) {
                        return Err(RdbError::BadData);
                    }
                }
                Value::Set(Box::new(set))
            }
            TYPE_HASH_LISTPACK => {
                let items = listpack(&self.string()?)?;
                if items.len() % 2 != 0 {
                    return Err(RdbError::BadData);
                }
                let mut h = HashMap::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    if h.insert(f.into_boxed_slice(), v.into_boxed_slice())
                        .is_some()
                    {
                        return Err(RdbError::BadData);
                    }
                }
                Value::Hash(Box::new(h))
            }
            TYPE_ZSET_LISTPACK => {
                let items = listpack(&self.string()?)?;
                if items.len() % 2 != 0 {
                    return Err(RdbError::BadData);
                }
                let mut z = ZSet::default();
                let mut it = items.into_iter();
                while let (Some(m), Some(s)) = (it.next(), it.next()) {
                    let score = kelvin_protocol::reply::parse_f64(&s)
                        .filter(|d| !d.is_nan())
                        .ok_or(RdbError::BadData)?;
                    if !z.insert(&m, score) {
                        return Err(RdbError::BadData);
                    }
                }
                Value::ZSet(Box::new(z))
            }
            TYPE_LIST_QUICKLIST_2 => {
                let (n, _) = self.count(2)?;
                let mut list = VecDeque::new();
                for _ in 0..n {
                    let container = self.len()?;
                    let blob = self.string()?;
                    match container {
                        // PLAIN: one big element as is.
                        1 => list.push_back(blob.into_boxed_slice()),
                        // PACKED: a listpack of elements.
                        2 => {
                            let items = listpack(&blob)?;
                            if items.is_empty() {
                                return Err(RdbError::BadData);
                            }
                            list.extend(items.into_iter().map(Vec::into_boxed_slice));
                        }
                        _ => return Err(RdbError::BadData),
                    }
                }
                Value::List(Box::new(list))
            }
            _ => return Err(RdbError::BadData),
        })
    }
}

/// The integers of an intset blob: `encoding: u32 LE` (2, 4 or 8 bytes per integer),
/// `length: u32 LE`, then the integers, little endian, ascending.
fn intset(blob: &[u8]) -> Result<Vec<i64>, RdbError> {
    if blob.len() < 8 {
        return Err(RdbError::BadData);
    }
    let width = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    let n = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) || blob.len() != 8 + width * n {
        return Err(RdbError::BadData);
    }
    Ok(blob[8..]
        .chunks_exact(width)
        .map(|c| match width {
            2 => i16::from_le_bytes([c[0], c[1]]) as i64,
            4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            }
        })
        .collect())
}

/// The elements of a listpack (integers as their decimal text):
///
/// ```text
/// <total bytes: u32 LE> <count: u16 LE> (<encoding+data> <backlen>)* 0xFF
/// ```
fn listpack(blob: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    if blob.len() < 7
        || u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize != blob.len()
    {
        return Err(RdbError::BadData);
    }
    let mut p = &blob[6..];
    let mut items = Vec::new();
    let need = |p: &[u8], n: usize| {
        if p.len() < n {
            Err(RdbError::BadData)
        } else {
            Ok(())
        }
    };
    loop {
        need(p, 1)?;
        let b = p[0];
        if b == 0xFF {
            if p.len() != 1 {
                return Err(RdbError::BadData);
            }
            break;
        }
        // (header bytes, data bytes, the element)
        let (head, data, item): (usize, usize, Vec<u8>) = if b & 0x80 == 0 {
            (1, 0, ((b & 0x7F) as i64).to_string().into_bytes())
        } else if b & 0xC0 == 0x80 {
            let n = (b & 0x3F) as usize;
            need(p, 1 + n)?;
            (1, n, p[1..1 + n].to_vec())
        } else if b & 0xE0 == 0xC0 {
            need(p, 2)?;
            let v = (((b & 0x1F) as i64) << 8) | p[1] as i64;
            let v = if v >= 1 << 12 { v - (1 << 13) } else { v };
            (2, 0, v.to_string().into_bytes())
        } else if b & 0xF0 == 0xE0 {
            need(p, 2)?;
            let n = (((b & 0x0F) as usize) << 8) | p[1] as usize;
            need(p, 2 + n)?;
            (2, n, p[2..2 + n].to_vec())
        } else {
            let int = |bytes: &[u8]| -> i64 {
                let mut b = [0u8; 8];
                b[..bytes.len()].copy_from_slice(bytes);
                let shift = 64 - 8 * bytes.len() as u32;
                (i64::from_le_bytes(b) << shift) >> shift
            };
            match b {
                0xF0 => {
                    need(p, 5)?;
                    let n = u32::from_le_bytes([p[1], p[2], p[3], p[4]]) as usize;
                    need(p, 5 + n)?;
                    (5, n, p[5..5 + n].to_vec())
                }
                0xF1..=0xF4 => {
                    let width = match b {
                        0xF1 => 2,
                        0xF2 => 3,
                        0xF3 => 4,
                        _ => 8,
                    };
                    need(p, 1 + width)?;
                    (1 + width, 0, int(&p[1..1 + width]).to_string().into_bytes())
                }
                _ => return Err(RdbError::BadData),
            }
        };
        let entry = if b & 0xC0 == 0x80 || b & 0xF0 == 0xE0 || b == 0xF0 {
            head + data
        } else {
            head
        };
        let backlen = match entry {
            0..=127 => 1,
            128..=16383 => 2,
            16384..=2097151 => 3,
            2097152..=268435455 => 4,
            _ => 5,
        };
        need(p, entry + backlen)?;
        p = &p[entry + backlen..];
        items.push(item);
    }
    let declared = u16::from_le_bytes([blob[4], blob[5]]);
    if declared != u16::MAX && declared as usize != items.len() {
        return Err(RdbError::BadData);
    }
    Ok(items)
}

/// LZF decompression (Redis's lzf_d.c) into exactly `len` bytes.
fn lzf_decompress(input: &[u8], len: usize) -> Result<Vec<u8>, RdbError> {
    // The output can be at most ~ 264x the input (a 2-byte back reference copies 264
    // bytes); a larger claim is a lie, refused before allocating.
    if len > input.len().saturating_mul(264) {
        return Err(RdbError::BadData);
    }
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            if i + n > input.len() || out.len() + n > len {
                return Err(RdbError::BadData);
            }
            out.extend_from_slice(&input[i..i + n]);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += *input.get(i).ok_or(RdbError::BadData)? as usize;
                i += 1;
            }
            n += 2;
            let low = *input.get(i).ok_or(RdbError::BadData)? as usize;
            i += 1;
            let back = ((ctrl & 0x1F) << 8) + low + 1;
            if back > out.len() || out.len() + n > len {
                return Err(RdbError::BadData);
            }
            let start = out.len() - back;
            for k in 0..n {
                let b = out[start + k];
                out.push(b);
            }
        }
    }
    if out.len() != len {
        return Err(RdbError::BadData);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_redis() {
        // Redis's crc64 test vector (src/crc64.c).
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        // The carry-less multiplication agrees with the definition (a bit at a time,
        // Jones polynomial reflected), at every length and offset: short inputs take
        // another path than long ones.
        let bitwise = |data: &[u8]| {
            data.iter().fold(0u64, |mut crc, &b| {
                crc ^= u64::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0x95ac_9329_ac4b_c9b5
                    } else {
                        crc >> 1
                    };
                }
                crc
            })
        };
        let data: Vec<u8> = (0..1100u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for start in 0..17 {
            for end in start..data.len() {
                assert_eq!(crc64(&data[start..end]), bitwise(&data[start..end]));
            }
        }
    }

    #[test]
    fn every_type_round_trips() {
        let mut z = ZSet::default();
        z.insert(b"a", 1.5);
        z.insert(b"b", -2.0);
        let values = [
            Value::Str(b"hello".to_vec()),
            Value::Str(vec![7u8; 100_000]),
            Value::List(Box::new(
                ["x", "y", "x"]
                    .iter()
                    .map(|s| s.as_bytes().into())
                    .collect(),
            )),
            Value::Set(Box::new(
                ["1", "b"].iter().map(|s| s.as_bytes().into()).collect(),
            )),
            Value::ZSet(Box::new(z)),
            Value::Hash(Box::new(
                [("f".as_bytes().into(), "v".as_bytes().into())]
                    .into_iter()
                    .collect(),
            )),
        ];
        for v in values {
            let payload = dump(&v);
            let back = restore(&payload).unwrap();
            assert_eq!(dump(&back), payload);
        }
    }

    #[test]
    fn corrupt_payloads_are_refused() {
        let mut payload = dump(&Value::Str(b"hello".to_vec()));
        assert_eq!(
            restore(&payload[..5]).err(),
            Some(RdbError::VersionOrChecksum)
        );
        let n = payload.len();
        payload[1] ^= 1;
        assert_eq!(restore(&payload).err(), Some(RdbError::VersionOrChecksum));
        payload[1] ^= 1;
        payload[n - 10] = 11; // version 11
        assert_eq!(restore(&payload).err(), Some(RdbError::VersionOrChecksum));
        // A length that claims more than there is, with a right checksum.
        let mut body = vec![TYPE_STRING, 0x80, 0x7f, 0xff, 0xff, 0xff, b'x'];
        body.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = crc64(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(restore(&body).err(), Some(RdbError::BadData));
    }

    #[test]
    fn listpack_integers_and_strings() {
        // "a", 5, -3 (13-bit), 1000 (13-bit), 70000 (24-bit).
        let mut lp = vec![0, 0, 0, 0, 5, 0];
        lp.extend_from_slice(&[0x81, b'a', 2]);
        lp.extend_from_slice(&[0x05, 1]);
        let minus3 = (1i64 << 13) - 3;
        lp.extend_from_slice(&[0xC0 | (minus3 >> 8) as u8, minus3 as u8, 2]);
        lp.extend_from_slice(&[0xC0 | (1000 >> 8) as u8, (1000 & 0xFF) as u8, 2]);
        lp.extend_from_slice(&[0xF2, 0x70, 0x11, 0x01, 4]);
        lp.push(0xFF);
        let total = lp.len() as u32;
        lp[..4].copy_from_slice(&total.to_le_bytes());
        let items = listpack(&lp).unwrap();
        let text: Vec<String> = items
            .iter()
            .map(|i| String::from_utf8_lossy(i).into())
            .collect();
        assert_eq!(text, ["a", "5", "-3", "1000", "70000"]);
    }
}
