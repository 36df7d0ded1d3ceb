//! Hash slots, exactly as Redis Cluster computes them: CRC16 (XMODEM) of the key, or of
//! the part between the first `{` and the next `}` when that part is not empty, mod 16384.

/// Number of hash slots in the keyspace.
pub const SLOT_COUNT: usize = 16384;

/// Bytes [`crc16`] folds in per step.
const SLICE: usize = 8;

/// `TABLES[0]` is the byte-at-a-time CRC16 table; `TABLES[j][i]` is the CRC of byte `i`
/// followed by `j` zero bytes, so that 8 bytes fold in with 8 independent lookups
/// ("slicing-by-8") instead of a chain of 8 dependent ones.
const fn crc16_tables() -> [[u16; 256]; SLICE] {
    let mut tables = [[0u16; 256]; SLICE];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut j = 1;
    while j < SLICE {
        let mut i = 0;
        while i < 256 {
            let prev = tables[j - 1][i];
            tables[j][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        j += 1;
    }
    tables
}

static CRC16_TABLES: [[u16; 256]; SLICE] = crc16_tables();

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for slots: eight bytes a step
/// (the hot path hashes every key of every request), then the rest byte by byte.
pub fn crc16(bytes: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut crc = 0u16;
    let mut chunks = bytes.chunks_exact(SLICE);
    for c in &mut chunks {
        let x = crc ^ u16::from_be_bytes([c[0], c[1]]);
        crc = t[7][(x >> 8) as usize]
            ^ t[6][(x & 0xff) as usize]
            ^ t[5][c[2] as usize]
            ^ t[4][c[3] as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ t[0][(((crc >> 8) as u8) ^ b) as usize]
    })
}

/// The first `needle` in `hay`: eight bytes a step (SWAR: a byte of `x ^ pattern` is
/// zero where `needle` is), since keys are short and most hold no `{` at all.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ pattern;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return c.iter().position(|&b| b == needle).map(|i| base + i);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// The part of `key` that is hashed: the `{hash tag}` if there is a non-empty one.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find_byte(key, b'{') {
        if let Some(len) = find_byte(&key[open + 1..], b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The hash slot of `key`, in `0..16384`.
pub fn key_slot(key: &[u8]) -> u16 {
    if key.len() > MEMO_KEY_BYTES {
        return slot_of(key);
    }
    LAST_SLOT.with(|memo| {
        let mut memo = memo.borrow_mut();
        let (len, bytes, slot) = &mut *memo;
        if *len == key.len() && bytes[..key.len()] == *key {
            return *slot;
        }
        let s = slot_of(key);
        *len = key.len();
        bytes[..key.len()].copy_from_slice(key);
        *slot = s;
        s
    })
}

fn slot_of(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOT_COUNT as u16 - 1)
}

/// Longest key [`LAST_SLOT`] keeps.
const MEMO_KEY_BYTES: usize = 32;

thread_local! {
    /// The last key (up to [`MEMO_KEY_BYTES`]) this thread hashed, and its slot: the steps
    /// of one request hash its key one after another (routing, the store's lookups,
    /// notifications: five times for a SET), and comparing a short key costs a third of
    /// hashing it. (Length 0: the empty key, whose slot is 0.)
    static LAST_SLOT: std::cell::RefCell<(usize, [u8; MEMO_KEY_BYTES], u16)> =
        const { std::cell::RefCell::new((0, [0; MEMO_KEY_BYTES], 0)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_answers_as_the_hash_does() {
        let keys: [&[u8]; 8] = [
            b"foo",
            b"foo",
            b"bar",
            b"",
            b"{user1000}.following",
            b"{user1000}.followers",
            b"a key longer than the thirty-two bytes the memo keeps",
            b"foo",
        ];
        for k in keys {
            assert_eq!(key_slot(k), slot_of(k), "{k:?}");
            assert_eq!(key_slot(k), slot_of(k), "{k:?}");
        }
        assert_eq!(key_slot(b"foo"), 12182);
    }

    #[test]
    fn crc16_reference_value() {
        // The check value of CRC-16/XMODEM, also quoted in the Redis Cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    /// The plain byte-at-a-time CRC16 the sliced one must equal.
    fn crc16_bytewise(bytes: &[u8]) -> u16 {
        bytes.iter().fold(0u16, |crc, &b| {
            (crc << 8) ^ CRC16_TABLES[0][(((crc >> 8) as u8) ^ b) as usize]
        })
    }

    #[test]
    fn sliced_crc16_equals_bytewise_at_every_length() {
        let data: Vec<u8> = (0..100u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(
                crc16(&data[..len]),
                crc16_bytewise(&data[..len]),
                "len {len}"
            );
        }
        assert_eq!(crc16_bytewise(b"123456789"), 0x31C3);
    }

    #[test]
    fn find_byte_finds_the_first_at_every_place() {
        for len in 0..40 {
            for at in 0..=len {
                let mut hay = vec![b'a'; len];
                if at < len {
                    hay[at] = b'{';
                    // A later one must not win; bytes with the high bit set must not fool it.
                    hay.iter_mut()
                        .skip(at + 1)
                        .step_by(3)
                        .for_each(|b| *b = 0xfb);
                }
                let want = hay.iter().position(|&b| b == b'{');
                assert_eq!(find_byte(&hay, b'{'), want, "len {len} at {at}");
            }
        }
    }

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // Empty tag: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        // Only the first tag counts.
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace: the whole key.
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
    }
}
