//! Bitmaps: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO.
//!
//! Bits live in plain string values, most significant bit of each byte first, as in
//! Redis (src/bitops.c): bit 0 is the top bit of byte 0. A write that reaches past the
//! end grows the string with zero bytes. Offsets are bounded by
//! [`MAX_STRING_LEN`](crate::cmd::string::MAX_STRING_LEN), a constant rather than the
//! node's `proto-max-bulk-len`, so every replica accepts or refuses the same offsets.

use bytes::Bytes;

use crate::cmd::string::MAX_STRING_LEN;
use crate::cmd::{
    data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec, KEY1,
};
use crate::notify::{GENERIC, STRING};
use crate::store::{Entry, Value};

/// BITOP's keys: the destination and every source.
const BITOP_KEYS: KeySpec = KeySpec {
    first: 2,
    last: -1,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("setbit", 4, WRITE | DENYOOM, KEY1, "bitmap", "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.", setbit),
    data("getbit", 3, READONLY | FAST, KEY1, "bitmap", "Returns a bit value by offset.", getbit),
    data("bitcount", -2, READONLY, KEY1, "bitmap", "Counts the number of set bits (population counting) in a string.", bitcount),
    data("bitpos", -3, READONLY, KEY1, "bitmap", "Finds the first set (1) or clear (0) bit in a string.", bitpos),
    data("bitop", -4, WRITE | DENYOOM, BITOP_KEYS, "bitmap", "Performs bitwise operations on multiple strings, and stores the result.", bitop),
    data("bitfield", -2, WRITE | DENYOOM, KEY1, "bitmap", "Performs arbitrary bitfield integer operations on strings.", bitfield),
    data("bitfield_ro", -2, READONLY | FAST, KEY1, "bitmap", "Performs arbitrary read-only bitfield integer operations on strings.", bitfield_ro),
];

const BAD_OFFSET: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR bit offset is not an integer or out of range",
));
const BAD_BIT: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR bit is not an integer or out of range",
));
const BAD_TYPE: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
));

/// A bit offset argument; with `width` (BITFIELD), `#n` means `n * width`.
fn bit_offset(arg: &[u8], width: Option<u32>) -> Result<u64, CmdError> {
    let (digits, mul) = match (arg.first(), width) {
        (Some(b'#'), Some(w)) => (&arg[1..], w as i64),
        _ => (arg, 1),
    };
    let n = kelvin_protocol::request::parse_i64(digits)
        .and_then(|n| n.checked_mul(mul))
        .ok_or(BAD_OFFSET)?;
    if n < 0 || (n >> 3) as u64 >= MAX_STRING_LEN as u64 {
        return Err(BAD_OFFSET);
    }
    Ok(n as u64)
}

/// The string under `key` for a read: empty if missing, WRONGTYPE if not a string.
fn read_bits<'e>(ex: &'e mut Exec<'_>, key: &[u8]) -> Result<Option<&'e [u8]>, CmdError> {
    match ex.read_value(key) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.as_slice())),
        Some(_) => Err(CmdError::WRONGTYPE),
    }
}

/// The string under `key` for a write, created or grown with zero bytes so that bit
/// `max_bit` exists (Redis's `lookupStringForBitCommand`). Returns it and whether it was
/// created or grown.
fn write_bits<'e>(
    ex: &'e mut Exec<'_>,
    key: &[u8],
    max_bit: u64,
) -> Result<(&'e mut Vec<u8>, bool), CmdError> {
    let need = (max_bit >> 3) as usize + 1;
    let exists = match ex.write(key) {
        None => false,
        Some(Entry {
            value: Value::Str(_),
            ..
        }) => true,
        Some(_) => return Err(CmdError::WRONGTYPE),
    };
    if !exists {
        ex.ks().insert(key, Entry::new(Value::Str(Vec::new())));
    }
    match ex.ks().raw_get_mut(key) {
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => {
            let grown = s.len() < need;
            if grown {
                s.resize(need, 0);
            }
            Ok((s, grown || !exists))
        }
        _ => Err(CmdError::WRONGTYPE),
    }
}

fn bit_at(s: &[u8], bit: u64) -> bool {
    s.get((bit >> 3) as usize)
        .is_some_and(|b| b & (0x80 >> (bit & 7)) != 0)
}

fn setbit(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let key = &argv[1];
    let offset = bit_offset(&argv[2], None)?;
    let on = match int_arg(&argv[3]).map_err(|_| BAD_BIT)? {
        0 => false,
        1 => true,
        _ => return Err(BAD_BIT),
    };
    let (s, dirty) = write_bits(ex, key, offset)?;
    let byte = &mut s[(offset >> 3) as usize];
    let mask = 0x80u8 >> (offset & 7);
    let was = *byte & mask != 0;
    if on {
        *byte |= mask;
    } else {
        *byte &= !mask;
    }
    if dirty || was != on {
        ex.notify(STRING, "setbit", key);
    }
    ex.out.int(was as i64);
    Ok(())
}

fn getbit(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let offset = bit_offset(&argv[2], None)?;
    let bit = read_bits(ex, &argv[1])?.is_some_and(|s| bit_at(s, offset));
    ex.out.int(bit as i64);
    Ok(())
}

/// A `start end [BYTE|BIT]` range resolved against a string of `len` bytes, as bit
/// positions `first..=last`; `None` when empty. `end` is `None` when not given (BITPOS).
fn bit_range(
    len: usize,
    start: i64,
    end: Option<i64>,
    unit: Option<&[u8]>,
) -> Result<Option<(u64, u64)>, CmdError> {
    let bits = match unit {
        None => false,
        Some(u) if is(u, "bit") => true,
        Some(u) if is(u, "byte") => false,
        Some(_) => return Err(CmdError::SYNTAX),
    };
    let total = if bits { len as i64 * 8 } else { len as i64 };
    let mut start = start;
    let mut end = end.unwrap_or(total - 1);
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    let start = start.max(0);
    let end = end.max(0).min(total - 1);
    if start > end {
        return Ok(None);
    }
    Ok(Some(if bits {
        (start as u64, end as u64)
    } else {
        (start as u64 * 8, end as u64 * 8 + 7)
    }))
}

/// Set bits among bit positions `first..=last` of `s`.
fn count_bits(s: &[u8], first: u64, last: u64) -> u64 {
    let (fb, lb) = ((first >> 3) as usize, (last >> 3) as usize);
    let mut count: u64 = s[fb..=lb].iter().map(|b| b.count_ones() as u64).sum();
    // Take back the bits of the edge bytes outside the range.
    let head = s[fb] & !(0xFFu8 >> (first & 7));
    let tail_mask = if last & 7 == 7 {
        0
    } else {
        0xFFu8 >> ((last & 7) + 1)
    };
    let tail = s[lb] & tail_mask;
    count -= (head.count_ones() + tail.count_ones()) as u64;
    count
}

fn bitcount(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    // Redis looks the key up first: a missing key answers 0 whatever the arguments.
    let Some(s) = read_bits(ex, &argv[1])? else {
        ex.out.int(0);
        return Ok(());
    };
    let range = match argv.len() {
        2 => (!s.is_empty()).then(|| (0, s.len() as u64 * 8 - 1)),
        4 | 5 => {
            let start = int_arg(&argv[2])?;
            let end = int_arg(&argv[3])?;
            if start < 0 && end < 0 && start > end {
                None
            } else {
                bit_range(s.len(), start, Some(end), argv.get(4).map(|b| &b[..]))?
            }
        }
        _ => return Err(CmdError::SYNTAX),
    };
    let n = range.map_or(0, |(first, last)| count_bits(s, first, last));
    ex.out.int(n as i64);
    Ok(())
}

fn bitpos(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let want = match int_arg(&argv[2])? {
        0 => false,
        1 => true,
        _ => return Err(CmdError::err("The bit argument must be 1 or 0.")),
    };
    // A missing key is an endless run of zero bits.
    let Some(s) = read_bits(ex, &argv[1])? else {
        ex.out.int(if want { -1 } else { 0 });
        return Ok(());
    };
    let (range, end_given) = match argv.len() {
        3 => ((!s.is_empty()).then(|| (0, s.len() as u64 * 8 - 1)), false),
        4..=6 => {
            let start = int_arg(&argv[3])?;
            let unit = argv.get(5).map(|b| &b[..]);
            if let Some(u) = unit {
                if !is(u, "bit") && !is(u, "byte") {
                    return Err(CmdError::SYNTAX);
                }
            }
            let end = argv.get(4).map(|e| int_arg(e)).transpose()?;
            (bit_range(s.len(), start, end, unit)?, end.is_some())
        }
        _ => return Err(CmdError::SYNTAX),
    };
    let Some((first, last)) = range else {
        ex.out.int(-1);
        return Ok(());
    };
    let pos = find_bit(s, first, last, want);
    let answer = match pos {
        Some(p) => p as i64,
        // Looking for a clear bit without an explicit end: the string is taken as padded
        // with zeros on the right, so the first bit after the range is clear.
        None if !want && !end_given => last as i64 + 1,
        None => -1,
    };
    ex.out.int(answer);
    Ok(())
}

/// The first bit equal to `want` among positions `first..=last` of `s`.
fn find_bit(s: &[u8], first: u64, last: u64, want: bool) -> Option<u64> {
    let skip = if want { 0x00 } else { 0xFF };
    let mut bit = first;
    while bit <= last {
        if bit & 7 == 0 && bit + 7 <= last && s[(bit >> 3) as usize] == skip {
            bit += 8;
            continue;
        }
        if bit_at(s, bit) == want {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

fn bitop(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let op = &argv[1];
    let dest = &argv[2];
    let sources = &argv[3..];
    let not = is(op, "not");
    if !(not || is(op, "and") || is(op, "or") || is(op, "xor")) {
        return Err(CmdError::SYNTAX);
    }
    if not && sources.len() != 1 {
        return Err(CmdError::err(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    let mut inputs: Vec<Vec<u8>> = Vec::with_capacity(sources.len());
    for key in sources {
        inputs.push(read_bits(ex, key)?.map(<[u8]>::to_vec).unwrap_or_default());
    }
    let len = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let mut result = vec![0u8; len];
    for (i, out) in result.iter_mut().enumerate() {
        let byte = |input: &Vec<u8>| input.get(i).copied().unwrap_or(0);
        *out = if not {
            !byte(&inputs[0])
        } else if is(op, "and") {
            inputs.iter().fold(0xFF, |acc, s| acc & byte(s))
        } else if is(op, "or") {
            inputs.iter().fold(0, |acc, s| acc | byte(s))
        } else {
            inputs.iter().fold(0, |acc, s| acc ^ byte(s))
        };
    }
    if result.is_empty() {
        ex.expire_if_needed(dest);
        if ex.ks().remove(dest).is_some() {
            ex.notify(GENERIC, "del", dest);
        }
    } else {
        // Replaces any value and TTL, with the `set` event, as Redis's setKey.
        crate::cmd::string::store_string(ex, dest, &result, 0, false);
    }
    ex.out.int(len as i64);
    Ok(())
}

/// BITFIELD's OVERFLOW behaviours.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

/// One BITFIELD operation, parsed.
#[derive(Debug, Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    width: u32,
    offset: u64,
    overflow: Overflow,
}

/// `i1`..`i64`, `u1`..`u63`.
fn field_type(arg: &[u8]) -> Result<(bool, u32), CmdError> {
    let signed = match arg.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(BAD_TYPE),
    };
    let width = kelvin_protocol::request::parse_i64(&arg[1..]).ok_or(BAD_TYPE)?;
    if width < 1 || width > if signed { 64 } else { 63 } {
        return Err(BAD_TYPE);
    }
    Ok((signed, width as u32))
}

fn parse_fields(argv: &[Bytes]) -> Result<Vec<Field>, CmdError> {
    let mut fields = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    while i < argv.len() {
        let rest = argv.len() - i - 1;
        let sub = &argv[i];
        if is(sub, "overflow") && rest >= 1 {
            let kind = &argv[i + 1];
            overflow = if is(kind, "wrap") {
                Overflow::Wrap
            } else if is(kind, "sat") {
                Overflow::Sat
            } else if is(kind, "fail") {
                Overflow::Fail
            } else {
                return Err(CmdError::err("Invalid OVERFLOW type specified"));
            };
            i += 2;
            continue;
        }
        let get = is(sub, "get") && rest >= 2;
        let set = is(sub, "set") && rest >= 3;
        let incr = is(sub, "incrby") && rest >= 3;
        if !(get || set || incr) {
            return Err(CmdError::SYNTAX);
        }
        let (signed, width) = field_type(&argv[i + 1])?;
        let offset = bit_offset(&argv[i + 2], Some(width))?;
        let op = if get {
            FieldOp::Get
        } else {
            let n = int_arg(&argv[i + 3])?;
            if set {
                FieldOp::Set(n)
            } else {
                FieldOp::IncrBy(n)
            }
        };
        fields.push(Field {
            op,
            signed,
            width,
            offset,
            overflow,
        });
        i += if get { 3 } else { 4 };
    }
    Ok(fields)
}

/// The `width`-bit field at bit `offset` of `s` (zeros past its end), as raw bits.
fn get_field(s: &[u8], offset: u64, width: u32) -> u64 {
    let mut v = 0u64;
    for i in 0..width as u64 {
        v = (v << 1) | bit_at(s, offset + i) as u64;
    }
    v
}

/// Writes the low `width` bits of `value` at bit `offset` (the string is long enough).
fn set_field(s: &mut [u8], offset: u64, width: u32, value: u64) {
    for i in 0..width as u64 {
        let bit = offset + i;
        let mask = 0x80u8 >> (bit & 7);
        let byte = &mut s[(bit >> 3) as usize];
        if value >> (width as u64 - 1 - i) & 1 == 1 {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

/// Raw bits read as a signed `width`-bit integer.
fn sign_extend(raw: u64, width: u32) -> i64 {
    let shift = 64 - width;
    ((raw << shift) as i64) >> shift
}

/// `value + incr` in a signed `width`-bit field: the value to store, or `None` when it
/// overflows and the behaviour is FAIL (Redis's `checkSignedBitfieldOverflow`).
fn signed_add(value: i64, incr: i64, width: u32, overflow: Overflow) -> Option<i64> {
    let max = if width == 64 {
        i64::MAX
    } else {
        (1i64 << (width - 1)) - 1
    };
    let min = -max - 1;
    let sum = value as i128 + incr as i128;
    if sum >= min as i128 && sum <= max as i128 {
        return Some(sum as i64);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if sum > max as i128 { max } else { min }),
        Overflow::Wrap => Some(sign_extend((value as u64).wrapping_add(incr as u64), width)),
    }
}

/// `value + incr` in an unsigned `width`-bit field (`width` <= 63), as
/// [`signed_add`] (Redis's `checkUnsignedBitfieldOverflow`).
fn unsigned_add(value: u64, incr: i64, width: u32, overflow: Overflow) -> Option<u64> {
    let max = (1u64 << width) - 1;
    let sum = value as i128 + incr as i128;
    if sum >= 0 && sum <= max as i128 {
        return Some(sum as u64);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if sum > max as i128 { max } else { 0 }),
        Overflow::Wrap => Some(value.wrapping_add(incr as u64) & max),
    }
}

fn bitfield(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    run_bitfield(ex, argv, false)
}

fn bitfield_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    run_bitfield(ex, argv, true)
}

fn run_bitfield(ex: &mut Exec<'_>, argv: &[Bytes], read_only: bool) -> CmdResult {
    let key = &argv[1];
    let fields = parse_fields(argv)?;
    let highest_write = fields
        .iter()
        .filter(|f| f.op != FieldOp::Get)
        .map(|f| f.offset + f.width as u64 - 1)
        .max();
    let Some(highest_write) = highest_write else {
        let s = read_bits(ex, key)?.unwrap_or(&[]);
        let values: Vec<i64> = fields
            .iter()
            .map(|f| {
                let raw = get_field(s, f.offset, f.width);
                if f.signed {
                    sign_extend(raw, f.width)
                } else {
                    raw as i64
                }
            })
            .collect();
        ex.out.array(values.len());
        for v in values {
            ex.out.int(v);
        }
        return Ok(());
    };
    if read_only {
        return Err(CmdError::err(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    let (s, dirty) = write_bits(ex, key, highest_write)?;
    let mut replies: Vec<Option<i64>> = Vec::with_capacity(fields.len());
    let mut changed = dirty;
    for f in &fields {
        let raw = get_field(s, f.offset, f.width);
        let reply = if f.signed {
            let old = sign_extend(raw, f.width);
            let (new, reply) = match f.op {
                FieldOp::Get => (None, Some(old)),
                FieldOp::Set(v) => {
                    let new = signed_add(v, 0, f.width, f.overflow);
                    (new, new.map(|_| old))
                }
                FieldOp::IncrBy(n) => {
                    let new = signed_add(old, n, f.width, f.overflow);
                    (new, new)
                }
            };
            if let Some(new) = new {
                set_field(s, f.offset, f.width, new as u64);
                changed |= new != old;
            }
            reply
        } else {
            let old = raw;
            let (new, reply) = match f.op {
                FieldOp::Get => (None, Some(old as i64)),
                FieldOp::Set(v) => {
                    let new = unsigned_set(v, f.width, f.overflow);
                    (new, new.map(|_| old as i64))
                }
                FieldOp::IncrBy(n) => {
                    let new = unsigned_add(old, n, f.width, f.overflow);
                    (new, new.map(|v| v as i64))
                }
            };
            if let Some(new) = new {
                set_field(s, f.offset, f.width, new);
                changed |= new != old;
            }
            reply
        };
        replies.push(reply);
    }
    if changed {
        ex.notify(STRING, "setbit", key);
    }
    ex.out.array(replies.len());
    for r in replies {
        match r {
            Some(v) => ex.out.int(v),
            None => ex.out.null(),
        }
    }
    Ok(())
}

/// SET of `value` into an unsigned `width`-bit field: Redis checks the value as an
/// unsigned 64-bit number (a negative one is huge), then wraps, saturates or fails.
fn unsigned_set(value: i64, width: u32, overflow: Overflow) -> Option<u64> {
    let max = (1u64 << width) - 1;
    let v = value as u64;
    if v <= max {
        return Some(v);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(max),
        Overflow::Wrap => Some(v & max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_and_write_msb_first() {
        let mut s = vec![0u8; 3];
        set_field(&mut s, 4, 8, 0xAB);
        assert_eq!(s, [0x0A, 0xB0, 0]);
        assert_eq!(get_field(&s, 4, 8), 0xAB);
        assert_eq!(sign_extend(get_field(&s, 4, 4), 4), -6);
        assert_eq!(get_field(&s, 20, 8), 0, "past the end reads zeros");
    }

    #[test]
    fn overflow_rules_follow_redis() {
        assert_eq!(signed_add(100, 100, 8, Overflow::Wrap), Some(-56));
        assert_eq!(signed_add(100, 100, 8, Overflow::Sat), Some(127));
        assert_eq!(signed_add(-100, -100, 8, Overflow::Sat), Some(-128));
        assert_eq!(signed_add(100, 100, 8, Overflow::Fail), None);
        assert_eq!(signed_add(i64::MAX, 1, 64, Overflow::Wrap), Some(i64::MIN));
        assert_eq!(unsigned_add(250, 10, 8, Overflow::Wrap), Some(4));
        assert_eq!(unsigned_add(5, -10, 8, Overflow::Sat), Some(0));
        assert_eq!(unsigned_add(5, -10, 8, Overflow::Wrap), Some(251));
        assert_eq!(unsigned_set(-1, 8, Overflow::Sat), Some(255));
        assert_eq!(unsigned_set(256, 8, Overflow::Fail), None);
    }

    #[test]
    fn ranges_and_counts() {
        let s = [0xFFu8, 0xF0, 0x00];
        assert_eq!(bit_range(3, 0, Some(-1), None).unwrap(), Some((0, 23)));
        assert_eq!(
            bit_range(3, 5, Some(30), Some(b"bit")).unwrap(),
            Some((5, 23))
        );
        assert_eq!(count_bits(&s, 0, 23), 12);
        assert_eq!(count_bits(&s, 5, 11), 7);
        assert_eq!(count_bits(&s, 9, 9), 1);
        assert_eq!(find_bit(&s, 0, 23, false), Some(12));
        assert_eq!(find_bit(&s, 13, 23, true), None);
        assert_eq!(bit_range(3, 2, Some(1), None).unwrap(), None);
    }
}
