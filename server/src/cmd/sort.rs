//! SORT and SORT_RO: sort a list, set or sorted set by value or by external weights
//! (BY), page it (LIMIT), fetch related values (GET), and keep the result (STORE).
//!
//! As Redis's src/sort.c, with one difference that determinism asks for: Redis breaks
//! ties between equal weights by comparing the elements only in numeric mode and leaves
//! them to `qsort` otherwise; Kelvin always breaks ties by the elements' bytes, and a set
//! sorted with `BY nosort` comes out in byte order (Redis does that only under STORE or
//! in scripts). So SORT ... STORE writes the same list on every replica.
//!
//! Pattern lookups (`weight_*`, `data_*->field`) read the store the command runs on: the
//! keys they form must live with the sorted key (same node in a single-node setup, same
//! group in a cluster).

use std::cmp::Ordering;

use bytes::Bytes;

use crate::cmd::{
    data, flags::*, float_arg, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KEY1,
};
use crate::notify::{GENERIC, LIST};
use crate::store::{Entry, Value};

pub const COMMANDS: &[CommandSpec] = &[
    data(
        "sort",
        -2,
        WRITE | DENYOOM,
        KEY1,
        "generic",
        "Sorts the elements in a list, a set, or a sorted set, optionally storing the result.",
        sort,
    ),
    data(
        "sort_ro",
        -2,
        READONLY,
        KEY1,
        "generic",
        "Returns the sorted elements of a list, a set, or a sorted set.",
        sort_ro,
    ),
];

/// Parsed SORT options.
struct SortOptions<'a> {
    desc: bool,
    alpha: bool,
    limit: Option<(i64, i64)>,
    by: Option<&'a [u8]>,
    /// BY a pattern without `*`: no sorting at all.
    dont_sort: bool,
    gets: Vec<&'a [u8]>,
    store: Option<&'a Bytes>,
}

fn parse_options(argv: &[Bytes], read_only: bool) -> Result<SortOptions<'_>, CmdError> {
    let mut o = SortOptions {
        desc: false,
        alpha: false,
        limit: None,
        by: None,
        dont_sort: false,
        gets: Vec::new(),
        store: None,
    };
    let mut j = 2;
    while j < argv.len() {
        let left = argv.len() - j - 1;
        let a = &argv[j];
        if is(a, "asc") {
            o.desc = false;
        } else if is(a, "desc") {
            o.desc = true;
        } else if is(a, "alpha") {
            o.alpha = true;
        } else if is(a, "limit") && left >= 2 {
            o.limit = Some((int_arg(&argv[j + 1])?, int_arg(&argv[j + 2])?));
            j += 2;
        } else if !read_only && is(a, "store") && left >= 1 {
            o.store = Some(&argv[j + 1]);
            j += 1;
        } else if is(a, "by") && left >= 1 {
            o.by = Some(&argv[j + 1]);
            o.dont_sort = !argv[j + 1].contains(&b'*');
            j += 1;
        } else if is(a, "get") && left >= 1 {
            o.gets.push(&argv[j + 1]);
            j += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        j += 1;
    }
    Ok(o)
}

/// What a pattern names for `element` (Redis's `lookupKeyByPattern`): `#` is the
/// element itself; `pre*post` the string at key `pre<element>post`; `pre*post->field` a
/// field of the hash at that key. `None` when there is no `*`, no such key, or the
/// wrong type.
fn lookup_pattern(ex: &mut Exec<'_>, pattern: &[u8], element: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(element.to_vec());
    }
    let star = pattern.iter().position(|&b| b == b'*')?;
    let after = &pattern[star + 1..];
    let field_at = after
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&i| i + 2 < after.len());
    let (post, field) = match field_at {
        Some(i) => (&after[..i], Some(&after[i + 2..])),
        None => (after, None),
    };
    let mut key = Vec::with_capacity(star + element.len() + post.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(post);
    let now = ex.now_ms;
    // Not an access of the looked-up keys (and no lazy deletion from inside a read).
    let entry = ex.ks().get(&key, now)?;
    match (&entry.value, field) {
        (Value::Str(s), None) => Some(s.clone()),
        (Value::Hash(h), Some(f)) => h.get(f).map(|v| v.to_vec()),
        _ => None,
    }
}

/// One element and what it sorts by.
struct Item {
    element: Vec<u8>,
    score: f64,
    by: Option<Vec<u8>>,
}

fn sort(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    run_sort(ex, argv, false)
}

fn sort_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    run_sort(ex, argv, true)
}

fn run_sort(ex: &mut Exec<'_>, argv: &[Bytes], read_only: bool) -> CmdResult {
    let mut o = parse_options(argv, read_only)?;
    let now = ex.now_ms;
    // The elements in their native order (sets in byte order).
    let mut is_set = false;
    let mut elements: Vec<Vec<u8>> = match ex.ks().get(&argv[1], now).map(|e| &e.value) {
        None => Vec::new(),
        Some(Value::List(l)) => l.iter().map(|e| e.to_vec()).collect(),
        Some(Value::Set(s)) => {
            is_set = true;
            let mut v: Vec<Vec<u8>> = s.iter().map(|e| e.to_vec()).collect();
            v.sort_unstable();
            v
        }
        Some(Value::ZSet(z)) => z.iter().map(|(m, _)| m.to_vec()).collect(),
        Some(_) => return Err(CmdError::WRONGTYPE),
    };
    if o.dont_sort && is_set {
        // A set has no order of its own: sort it by its bytes (Redis forces this ALPHA
        // sort under STORE and in scripts; Kelvin always does, see the module doc).
        o.dont_sort = false;
        o.alpha = true;
        o.by = None;
    }
    let len = elements.len() as i64;
    let (offset, count) = o.limit.unwrap_or((0, -1));
    let start = offset.max(0).min(len);
    let count = count.max(-1).min(len);
    let (start, end) = if start >= len {
        (len - 1, len - 2)
    } else {
        let end = if count < 0 {
            len - 1
        } else {
            start + count - 1
        };
        (start, end.min(len - 1))
    };
    let chosen: Vec<Vec<u8>> = if o.dont_sort {
        if o.desc && !is_set {
            elements.reverse();
        }
        if end >= start {
            elements.drain(start as usize..=end as usize).collect()
        } else {
            Vec::new()
        }
    } else {
        let mut items = Vec::with_capacity(elements.len());
        for element in elements {
            let by = match o.by {
                Some(pattern) => lookup_pattern(ex, pattern, &element),
                None => None,
            };
            let score = if o.alpha {
                0.0
            } else {
                let weight = if o.by.is_some() {
                    by.as_deref()
                } else {
                    Some(&element[..])
                };
                match weight {
                    None => 0.0,
                    Some(w) => match float_arg(w) {
                        Ok(f) if !f.is_nan() => f,
                        _ => {
                            return Err(CmdError::err(
                                "One or more scores can't be converted into double",
                            ))
                        }
                    },
                }
            };
            items.push(Item { element, score, by });
        }
        let alpha = o.alpha;
        let by_pattern = o.by.is_some();
        items.sort_by(|a, b| {
            let primary = if !alpha {
                a.score.partial_cmp(&b.score).unwrap_or(Ordering::Equal)
            } else if by_pattern {
                // A missing weight sorts first.
                a.by.cmp(&b.by)
            } else {
                Ordering::Equal
            };
            let cmp = primary.then_with(|| a.element.cmp(&b.element));
            if o.desc {
                cmp.reverse()
            } else {
                cmp
            }
        });
        if end >= start {
            items
                .drain(start as usize..=end as usize)
                .map(|i| i.element)
                .collect()
        } else {
            Vec::new()
        }
    };
    // The output: the elements, or for each the values of its GET patterns.
    let mut output: Vec<Option<Vec<u8>>> = Vec::new();
    for element in chosen {
        if o.gets.is_empty() {
            output.push(Some(element));
            continue;
        }
        for pattern in &o.gets {
            output.push(lookup_pattern(ex, pattern, &element));
        }
    }
    let Some(dest) = o.store else {
        ex.out.array(output.len());
        for v in output {
            match v {
                Some(v) => ex.out.bulk(&v),
                None => ex.out.null(),
            }
        }
        return Ok(());
    };
    let n = output.len();
    if n > 0 {
        let list = output
            .into_iter()
            .map(|v| v.unwrap_or_default().into_boxed_slice())
            .collect();
        ex.expire_if_needed(dest);
        let mut entry = Entry::new(Value::List(Box::new(list)));
        entry.heat.touch(now, true);
        ex.ks().insert(dest, entry);
        ex.notify(LIST, "sortstore", dest);
    } else {
        ex.expire_if_needed(dest);
        if ex.ks().remove(dest).is_some() {
            ex.notify(GENERIC, "del", dest);
        }
    }
    ex.out.int(n as i64);
    Ok(())
}
