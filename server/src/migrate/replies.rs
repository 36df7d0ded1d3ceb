//! The RESP2 replies the migration driver reads from the groups' leaders (Kelvin's own
//! commands, `cmd/migrate/`), parsed just far enough: a malformed reply is `None`,
//! never a panic. Bulk strings of a reply held in [`Bytes`] are slices of it.

use bytes::Bytes;

/// `[index, log ms]` of a SEAL reply.
pub(super) fn seal_reply(reply: &[u8]) -> Option<[u64; 2]> {
    let text = std::str::from_utf8(reply).ok()?;
    let mut lines = text.split("\r\n");
    if lines.next()? != "*2" {
        return None;
    }
    let mut num = || lines.next()?.strip_prefix(':')?.parse().ok();
    Some([num()?, num()?])
}

/// Keys and bytes per class, as the plan counted them.
type Totals = Vec<(u64, u64)>;
/// The source's plan: critical keys, eager keys, totals per class.
pub(super) type Plan = (KeyList, KeyList, Totals);
/// Keys to move, `(db, key)`, in order.
pub type KeyList = Vec<(usize, Bytes)>;

/// What a `FILTER` plan adds: the filter of the source's keys, what ranked the eager
/// keys, and the keys only the model's plan held.
type PlanExtras = (Bytes, Bytes, KeyList);

/// A `KELVIN.MIGRATE-PLAN` reply: critical keys, eager keys, totals per class, and with
/// `FILTER` its [`PlanExtras`].
pub(super) fn plan_reply(reply: &[u8]) -> Option<(Plan, Option<PlanExtras>)> {
    let mut p = Parser::new(reply);
    let parts = p.header(b'*')?;
    if parts != 3 && parts != 6 {
        return None;
    }
    let key_list = |p: &mut Parser<'_>| -> Option<KeyList> {
        p.array(|p| {
            p.tuple(2)?;
            Some((usize::try_from(p.header(b':')?).ok()?, p.bulk()?))
        })
    };
    let mut lists = Vec::new();
    for _ in 0..2 {
        lists.push(key_list(&mut p)?);
    }
    let totals = p.array(|p| {
        p.tuple(2)?;
        Some((p.header(b':')? as u64, p.header(b':')? as u64))
    })?;
    let filter = match parts {
        6 => Some((p.bulk()?, p.bulk()?, key_list(&mut p)?)),
        _ => None,
    };
    let hot = lists.pop()?;
    Some(((lists.pop()?, hot, totals), filter))
}

/// A `KELVIN.MIGRATE-PULL` reply: per key, nil or (expire_at, payload). In RESP2 or RESP3
/// (a connection's fault-in reads it in the client's protocol): a nil is `$-1`, `*-1` or
/// `_`.
pub fn pull_reply(reply: &[u8]) -> Option<Vec<Option<(u64, Bytes)>>> {
    Parser::new(reply).array(|p| {
        if let Some(rest) = [&b"$-1\r\n"[..], b"*-1\r\n", b"_\r\n"]
            .iter()
            .find_map(|nil| p.buf.strip_prefix(*nil))
        {
            p.buf = rest;
            return Some(None);
        }
        p.tuple(2)?;
        let expire_at = p.header(b':')? as u64;
        Some(Some((expire_at, p.bulk()?)))
    })
}

/// A `KELVIN.MIGRATE-HOT` reply: `(db, key, bytes)` per key, the most read first.
pub(super) fn hot_reply(reply: &[u8]) -> Option<Vec<(usize, Bytes, u64)>> {
    Parser::new(reply).array(|p| {
        p.tuple(3)?;
        let db = usize::try_from(p.header(b':')?).ok()?;
        let key = p.bulk()?;
        Some((db, key, u64::try_from(p.header(b':')?).ok()?))
    })
}

/// The text of a bulk string reply (`CLUSTER KELVIN-TOPOLOGY`'s).
pub(super) fn bulk_text(reply: &[u8]) -> Option<&str> {
    let mut p = Parser::new(reply);
    let len = usize::try_from(p.header(b'$')?).ok()?;
    std::str::from_utf8(p.buf.get(..len)?).ok()
}

type Moved = (Bytes, u64, Bytes);

/// A `KELVIN.MIGRATE-SCAN` reply: next slot, next cursor, `(key, expire_at, payload)`s
/// (slices of `reply`).
pub(super) fn scan_page(reply: &Bytes) -> Option<(u64, u64, Vec<Moved>)> {
    let mut p = Parser {
        buf: reply,
        whole: Some(reply),
    };
    p.tuple(3)?;
    let slot = p.header(b':')? as u64;
    let cursor = p.header(b':')? as u64;
    let entries = p.array(|p| {
        p.tuple(3)?;
        let key = p.bulk()?;
        let expire_at = p.header(b':')? as u64;
        Some((key, expire_at, p.bulk()?))
    })?;
    Some((slot, cursor, entries))
}

/// Just enough RESP2 to read the driver's replies.
struct Parser<'a> {
    buf: &'a [u8],
    /// What `buf` is a part of, if it is held in [`Bytes`]: bulk strings are then
    /// slices of it instead of copies.
    whole: Option<&'a Bytes>,
}

impl<'a> Parser<'a> {
    /// A parser of a reply not held in [`Bytes`] (bulk strings are copied).
    fn new(buf: &'a [u8]) -> Self {
        Parser { buf, whole: None }
    }

    /// An array, each element read by `item`; the first allocation is bounded, whatever
    /// length the header claims.
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let n = self.header(b'*')?;
        let mut out = Vec::with_capacity(n.clamp(0, 1 << 16) as usize);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Some(out)
    }

    /// An array header of exactly `width` elements.
    fn tuple(&mut self, width: i64) -> Option<()> {
        (self.header(b'*')? == width).then_some(())
    }

    /// A line `<kind><number>\r\n`: the number.
    fn header(&mut self, kind: u8) -> Option<i64> {
        let rest = self.buf.strip_prefix(&[kind])?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        self.buf = &rest[end + 2..];
        Some(n)
    }

    fn bulk(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.header(b'$')?).ok()?;
        let body = self.buf.get(..len)?;
        let value = match self.whole {
            Some(whole) => whole.slice_ref(body),
            None => Bytes::copy_from_slice(body),
        };
        self.buf = self.buf.get(len + 2..)?;
        Some(value)
    }
}

/// An integer reply, or an array of integers, as numbers (`None` for anything else).
pub(super) fn integers(reply: &[u8]) -> Option<Vec<u64>> {
    let text = std::str::from_utf8(reply).ok()?;
    let mut lines = text.split("\r\n");
    let head = lines.next()?;
    if let Some(n) = head.strip_prefix(':') {
        return Some(vec![n.parse().ok()?]);
    }
    let n: usize = head.strip_prefix('*')?.parse().ok()?;
    let values = lines
        .take(n)
        .map(|l| l.strip_prefix(':')?.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    (values.len() == n).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_replies_as_text() {
        assert_eq!(bulk_text(b"$5\r\nepoch\r\n"), Some("epoch"));
        assert_eq!(bulk_text(b"$0\r\n\r\n"), Some(""));
        assert_eq!(bulk_text(b"$9\r\nepoch\r\n"), None);
        assert_eq!(
            bulk_text(b"-ERR this node is not part of a cluster yet\r\n"),
            None
        );
        assert_eq!(bulk_text(b"$x\r\n"), None);
        assert_eq!(bulk_text(b"$-1\r\n"), None);
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            hot_reply(b"*2\r\n*3\r\n:0\r\n$1\r\na\r\n:40\r\n*3\r\n:3\r\n$2\r\nbc\r\n:7\r\n"),
            Some(vec![
                (0, Bytes::from_static(b"a"), 40),
                (3, Bytes::from_static(b"bc"), 7)
            ])
        );
        assert_eq!(hot_reply(b"*0\r\n"), Some(vec![]));
        assert_eq!(hot_reply(b"*1\r\n*3\r\n:0\r\n$1\r\na\r\n"), None);
        assert_eq!(hot_reply(b"*1\r\n*3\r\n:-1\r\n$1\r\na\r\n:1\r\n"), None);
        assert_eq!(hot_reply(b"-ERR unknown command\r\n"), None);
        assert_eq!(seal_reply(b"*2\r\n:17\r\n:1700\r\n"), Some([17, 1700]));
        assert_eq!(
            seal_reply(b"-ERR slot 5 is already in migration 3\r\n"),
            None
        );
        let page = b"*3\r\n:12\r\n:0\r\n*2\r\n*3\r\n$1\r\na\r\n:0\r\n$2\r\nxy\r\n*3\r\n$1\r\nb\r\n:99\r\n$0\r\n\r\n";
        let (slot, cursor, entries) = scan_page(&Bytes::from_static(page)).unwrap();
        assert_eq!((slot, cursor), (12, 0));
        assert_eq!(
            entries,
            vec![
                (Bytes::from_static(b"a"), 0, Bytes::from_static(b"xy")),
                (Bytes::from_static(b"b"), 99, Bytes::new()),
            ]
        );
        assert!(scan_page(&Bytes::from_static(b"*3\r\n:12\r\n:0\r\n*1\r\n")).is_none());
        let pulled = pull_reply(b"*2\r\n$-1\r\n*2\r\n:5\r\n$2\r\nab\r\n").unwrap();
        assert_eq!(pulled, vec![None, Some((5, Bytes::from_static(b"ab")))]);
        let plan = b"*3\r\n*1\r\n*2\r\n:0\r\n$4\r\nauth\r\n*0\r\n*1\r\n*2\r\n:1\r\n:4\r\n";
        let ((critical, hot, totals), filter) = plan_reply(plan).unwrap();
        assert_eq!(critical, vec![(0, Bytes::from_static(b"auth"))]);
        assert!(hot.is_empty());
        assert_eq!(totals, vec![(1, 4)]);
        assert_eq!(filter, None);
        let plan = b"*6\r\n*0\r\n*0\r\n*0\r\n$8\r\n\x01\0\0\0\0\0\0\0\r\n$4\r\nheat\r\n*1\r\n*2\r\n:0\r\n$1\r\nk\r\n";
        let (_, filter) = plan_reply(plan).unwrap();
        let (filter, ranking, model_only) = filter.unwrap();
        assert_eq!(&filter[..], b"\x01\0\0\0\0\0\0\0");
        assert_eq!(&ranking[..], b"heat");
        assert_eq!(model_only, vec![(0, Bytes::from_static(b"k"))]);
        assert!(plan_reply(b"*5\r\n").is_none());
        assert!(plan_reply(b"*4\r\n*0\r\n*0\r\n*0\r\n$0\r\n\r\n").is_none());
        assert_eq!(integers(b":7\r\n"), Some(vec![7]));
        assert_eq!(integers(b"*3\r\n:1\r\n:2\r\n:0\r\n"), Some(vec![1, 2, 0]));
        assert_eq!(integers(b"*3\r\n:1\r\n:2\r\n"), None);
        assert_eq!(integers(b"-ERR no\r\n"), None);
    }
}
