//! Keyspace notifications (`notify-keyspace-events`), with Redis's flag letters.
//!
//! Commands report each change as a [`KeyEvent`]; after the batch that made them, the
//! connection publishes them on `__keyspace@<db>__:<key>` and `__keyevent@<db>__:<event>`
//! as the configured classes ask. Spring Session relies on `expired` to end sessions.

use crate::store::Blob;

pub const KEYSPACE: u32 = 1 << 0; // K
pub const KEYEVENT: u32 = 1 << 1; // E
pub const GENERIC: u32 = 1 << 2; // g
pub const STRING: u32 = 1 << 3; // $
pub const LIST: u32 = 1 << 4; // l
pub const SET: u32 = 1 << 5; // s
pub const HASH: u32 = 1 << 6; // h
pub const ZSET: u32 = 1 << 7; // z
pub const EXPIRED: u32 = 1 << 8; // x
pub const EVICTED: u32 = 1 << 9; // e
pub const STREAM: u32 = 1 << 10; // t
pub const KEY_MISS: u32 = 1 << 11; // m
pub const MODULE: u32 = 1 << 13; // d
pub const NEW: u32 = 1 << 14; // n
/// `A`: every class but key-miss and new, as in Redis.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

const LETTERS: [(char, u32); 11] = [
    ('g', GENERIC),
    ('$', STRING),
    ('l', LIST),
    ('s', SET),
    ('h', HASH),
    ('z', ZSET),
    ('x', EXPIRED),
    ('e', EVICTED),
    ('t', STREAM),
    ('m', KEY_MISS),
    ('d', MODULE),
];

/// One change to a key, to be published if notifications ask for its class.
#[derive(Debug, Clone)]
pub struct KeyEvent {
    pub db: usize,
    pub event: &'static str,
    pub key: Blob,
}

/// Parses the letters of `notify-keyspace-events`; `None` on an unknown letter.
pub fn parse_flags(s: &str) -> Option<u32> {
    let mut flags = 0;
    for c in s.chars() {
        flags |= match c {
            'A' => ALL,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            'n' => NEW,
            c => LETTERS.iter().find(|(l, _)| *l == c)?.1,
        };
    }
    // Without K or E nothing is delivered; Redis stores 0 then.
    if flags & (KEYSPACE | KEYEVENT) == 0 {
        flags = 0;
    }
    Some(flags)
}

/// The canonical string CONFIG GET shows for `flags`.
pub fn flags_to_string(flags: u32) -> String {
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (c, f) in LETTERS {
            if f != KEY_MISS && flags & f != 0 {
                s.push(c);
            }
        }
    }
    if flags & KEYSPACE != 0 {
        s.push('K');
    }
    if flags & KEYEVENT != 0 {
        s.push('E');
    }
    if flags & KEY_MISS != 0 {
        s.push('m');
    }
    if flags & NEW != 0 {
        s.push('n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!(parse_flags("Ex"), Some(KEYEVENT | EXPIRED));
        assert_eq!(flags_to_string(parse_flags("Ex").unwrap()), "xE");
        assert_eq!(flags_to_string(parse_flags("KEA").unwrap()), "AKE");
        assert_eq!(parse_flags("x"), Some(0));
        assert_eq!(parse_flags("Q"), None);
        assert_eq!(parse_flags(""), Some(0));
    }
}
