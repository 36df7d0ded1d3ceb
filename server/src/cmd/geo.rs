//! GEO commands: positions kept as the scores of a sorted set, exactly as Redis keeps
//! them (see [`crate::geohash`] for the encoding), so every sorted set command works on
//! a geo set and a DUMP of one restores in Redis and the reverse.
//!
//! GEOADD turns each position into a score and runs ZADD. The searches (GEORADIUS,
//! GEORADIUSBYMEMBER, their `_RO` forms, GEOSEARCH, GEOSEARCHSTORE) read the source in
//! two steps: under the borrow of the sorted set they parse the request (whose errors
//! depend on the set: an unknown FROMMEMBER) and collect the matching points; then
//! they answer or store. Arguments are checked in Redis's order, which decides which
//! error a bad request gets.

use bytes::Bytes;
use kelvin_protocol::ReplyWriter;

use crate::cmd::zset::{read_zset_out, store_result, strict_float, write_zset, zadd};
use crate::cmd::{
    data, flags::*, int_arg, is, CmdError, CmdResult, CommandSpec, Exec, KeySpec, KEY1,
};
use crate::geohash::{self, Shape, ShapeKind};
use crate::notify::GENERIC;
use crate::store::Blob;
use crate::zset::ZSet;

/// GEOSEARCHSTORE: destination then source.
const DST_SRC: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
};

pub const COMMANDS: &[CommandSpec] = &[
    data("geoadd", -5, WRITE | DENYOOM, KEY1, "geo", "Adds one or more members to a geospatial index. The key is created if it doesn't exist.", geoadd),
    data("geodist", -4, READONLY, KEY1, "geo", "Returns the distance between two members of a geospatial index.", geodist),
    data("geohash", -2, READONLY, KEY1, "geo", "Returns members from a geospatial index as geohash strings.", geohash),
    data("geopos", -2, READONLY, KEY1, "geo", "Returns the longitude and latitude of members from a geospatial index.", geopos),
    // Redis flags GEORADIUS and GEORADIUSBYMEMBER as writes (their STORE option); the
    // `_RO` forms are the read-only ones.
    data("georadius", -6, WRITE | DENYOOM, KEY1, "geo", "Queries a geospatial index for members within a distance from a coordinate, optionally stores the result.", georadius),
    data("georadius_ro", -6, READONLY, KEY1, "geo", "Returns members from a geospatial index that are within a distance from a coordinate.", georadius_ro),
    data("georadiusbymember", -5, WRITE | DENYOOM, KEY1, "geo", "Queries a geospatial index for members within a distance from a member, optionally stores the result.", georadiusbymember),
    data("georadiusbymember_ro", -5, READONLY, KEY1, "geo", "Returns members from a geospatial index that are within a distance from a member.", georadiusbymember_ro),
    data("geosearch", -7, READONLY, KEY1, "geo", "Queries a geospatial index for members inside an area of a box or a circle.", geosearch),
    data("geosearchstore", -8, WRITE | DENYOOM, DST_SRC, "geo", "Queries a geospatial index for members inside an area of a box or a circle, optionally stores the result.", geosearchstore),
];

const UNKNOWN_MEMBER: CmdError = CmdError(std::borrow::Cow::Borrowed(
    "ERR could not decode requested zset member",
));

// ---------------------------------------------------------------------------------------
// Arguments and reply formats
// ---------------------------------------------------------------------------------------

/// `longitude latitude`, each a float, together within the storable ranges.
fn lon_lat(args: &[Bytes]) -> Result<[f64; 2], CmdError> {
    let lon = strict_float(&args[0]).ok_or(CmdError::NOT_FLOAT)?;
    let lat = strict_float(&args[1]).ok_or(CmdError::NOT_FLOAT)?;
    if !(geohash::LONG_MIN..=geohash::LONG_MAX).contains(&lon)
        || !(geohash::LAT_MIN..=geohash::LAT_MAX).contains(&lat)
    {
        return Err(CmdError::err(format!(
            "invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok([lon, lat])
}

/// Meters per unit: `m`, `km`, `ft`, `mi`.
fn unit(arg: &[u8]) -> Result<f64, CmdError> {
    Ok(if is(arg, "m") {
        1.0
    } else if is(arg, "km") {
        1000.0
    } else if is(arg, "ft") {
        0.3048
    } else if is(arg, "mi") {
        1609.34
    } else {
        return Err(CmdError::err(
            "unsupported unit provided. please use M, KM, FT, MI",
        ));
    })
}

/// A non-negative float, or `ERR <what>` if it is not a float.
fn size_arg(arg: &[u8], what: &str) -> Result<f64, CmdError> {
    strict_float(arg).ok_or_else(|| CmdError::err(what))
}

/// `radius unit`: the radius and the unit's meters.
fn radius_args(args: &[Bytes]) -> Result<(ShapeKind, f64), CmdError> {
    let radius = size_arg(&args[0], "need numeric radius")?;
    if radius < 0.0 {
        return Err(CmdError::err("radius cannot be negative"));
    }
    Ok((ShapeKind::Radius(radius), unit(&args[1])?))
}

/// `width height unit`.
fn box_args(args: &[Bytes]) -> Result<(ShapeKind, f64), CmdError> {
    let width = size_arg(&args[0], "need numeric width")?;
    let height = size_arg(&args[1], "need numeric height")?;
    if height < 0.0 || width < 0.0 {
        return Err(CmdError::err("height or width cannot be negative"));
    }
    Ok((ShapeKind::Box { width, height }, unit(&args[2])?))
}

/// A distance with 4 decimals, rounded half to even (Redis's `fixedpoint_d2string`).
fn distance_text(d: f64) -> String {
    let v = (d * 10000.0).round_ties_even() as i64;
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:04}", a / 10000, a % 10000)
}

/// A coordinate as Redis's `addReplyHumanLongDouble` writes it: 17 decimals, trailing
/// zeros dropped.
fn coordinate_text(d: f64) -> String {
    let mut s = format!("{d:.17}");
    if s.contains('.') {
        let kept = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(kept);
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

fn reply_position(out: &mut ReplyWriter, [lon, lat]: [f64; 2]) {
    out.array(2);
    out.double_text(&coordinate_text(lon));
    out.double_text(&coordinate_text(lat));
}

fn position_of(z: Option<&ZSet>, member: &[u8]) -> Option<[f64; 2]> {
    geohash::decode_score(z?.score(member)?)
}

// ---------------------------------------------------------------------------------------
// GEOADD, GEODIST, GEOHASH, GEOPOS
// ---------------------------------------------------------------------------------------

fn geoadd(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let mut at = 2;
    let (mut nx, mut xx) = (false, false);
    while at < argv.len() {
        let a = &argv[at];
        if is(a, "nx") {
            nx = true;
        } else if is(a, "xx") {
            xx = true;
        } else if !is(a, "ch") {
            break;
        }
        at += 1;
    }
    let triples = &argv[at..];
    if !triples.len().is_multiple_of(3) || (nx && xx) {
        return Err(CmdError::SYNTAX);
    }
    // ZADD key [options] score member ..., the score the position's 52-bit geohash.
    let mut zargv = Vec::with_capacity(at + triples.len() / 3 * 2);
    zargv.push(Bytes::from_static(b"zadd"));
    zargv.extend_from_slice(&argv[1..at]);
    for t in triples.chunks(3) {
        let [lon, lat] = lon_lat(&t[..2])?;
        let bits = geohash::encode_wgs84(lon, lat, geohash::STEP_MAX)
            .map(|h| h.align52())
            .unwrap_or(0);
        zargv.push(Bytes::from(bits.to_string()));
        zargv.push(t[2].clone());
    }
    zadd(ex, &zargv)
}

fn geodist(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let to_meters = match argv.len() {
        4 => 1.0,
        5 => unit(&argv[4])?,
        _ => return Err(CmdError::SYNTAX),
    };
    let (z, out) = read_zset_out(ex, &argv[1])?;
    match (position_of(z, &argv[2]), position_of(z, &argv[3])) {
        (Some([x1, y1]), Some([x2, y2])) => {
            let d = geohash::distance(x1, y1, x2, y2) / to_meters;
            out.bulk(distance_text(d).as_bytes());
        }
        _ => out.null(),
    }
    Ok(())
}

fn geohash(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (z, out) = read_zset_out(ex, &argv[1])?;
    out.array(argv.len() - 2);
    for member in &argv[2..] {
        match z
            .and_then(|z| z.score(member))
            .and_then(geohash::standard_geohash)
        {
            Some(text) => out.bulk(&text),
            None => out.null(),
        }
    }
    Ok(())
}

fn geopos(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    let (z, out) = read_zset_out(ex, &argv[1])?;
    out.array(argv.len() - 2);
    for member in &argv[2..] {
        match position_of(z, member) {
            Some(xy) => reply_position(out, xy),
            None => out.null_array(),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The searches
// ---------------------------------------------------------------------------------------

/// Which command a search is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// GEORADIUS[_RO] key longitude latitude radius unit ...
    Coords,
    /// GEORADIUSBYMEMBER[_RO] key member radius unit ...
    Member,
    /// GEOSEARCH key ... / GEOSEARCHSTORE destination source ...
    Search,
}

#[derive(Debug, Clone, Copy)]
struct Variant {
    form: Form,
    /// The `_RO` forms: no STORE / STOREDIST.
    no_store: bool,
    /// GEOSEARCHSTORE.
    search_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    None,
    Asc,
    Desc,
}

/// A point found by a search.
struct Point {
    member: Blob,
    /// Meters from the center until the reply converts it to the request's unit.
    dist: f64,
    score: f64,
    position: [f64; 2],
}

/// What a search found, to answer or store once the source is no longer borrowed.
enum Found {
    /// No source key.
    Missing { store: Option<Bytes> },
    Points {
        points: Vec<Point>,
        conversion: f64,
        withdist: bool,
        withhash: bool,
        withcoord: bool,
        /// The destination, and whether it gets distances (STOREDIST) or positions.
        store: Option<(Bytes, bool)>,
    },
}

/// Parses a search against its source (`None`: no such key) and collects its points.
fn search(argv: &[Bytes], v: Variant, z: Option<&ZSet>) -> Result<Found, CmdError> {
    let mut center = [0.0; 2];
    let mut kind = None;
    let mut conversion = 1.0;
    let mut store: Option<Bytes> = None;
    let mut storedist = false;
    let base = match v.form {
        Form::Coords => {
            center = lon_lat(&argv[2..4])?;
            let (k, c) = radius_args(&argv[4..6])?;
            (kind, conversion) = (Some(k), c);
            6
        }
        Form::Member => {
            // Without a source, the request is still parsed to choose the reply.
            if let Some(z) = z {
                center = position_of(Some(z), &argv[2]).ok_or(UNKNOWN_MEMBER)?;
                let (k, c) = radius_args(&argv[3..5])?;
                (kind, conversion) = (Some(k), c);
            }
            5
        }
        Form::Search if v.search_store => {
            store = Some(argv[1].clone());
            3
        }
        Form::Search => 2,
    };
    let search = v.form == Form::Search;
    let (mut withdist, mut withhash, mut withcoord) = (false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut sort = Sort::None;
    let mut any = false;
    let mut count: u64 = 0;
    let mut i = base;
    while i < argv.len() {
        let a = &argv[i];
        let left = argv.len() - i - 1;
        if is(a, "withdist") {
            withdist = true;
        } else if is(a, "withhash") {
            withhash = true;
        } else if is(a, "withcoord") {
            withcoord = true;
        } else if is(a, "any") {
            any = true;
        } else if is(a, "asc") {
            sort = Sort::Asc;
        } else if is(a, "desc") {
            sort = Sort::Desc;
        } else if is(a, "count") && left >= 1 {
            let n = int_arg(&argv[i + 1])?;
            if n <= 0 {
                return Err(CmdError::err("COUNT must be > 0"));
            }
            count = n as u64;
            i += 1;
        } else if (is(a, "store") || is(a, "storedist")) && left >= 1 && !v.no_store && !search {
            store = Some(argv[i + 1].clone());
            storedist = is(a, "storedist");
            i += 1;
        } else if is(a, "storedist") && v.search_store {
            storedist = true;
        } else if is(a, "frommember") && left >= 1 && search && !fromloc {
            if let Some(z) = z {
                center = position_of(Some(z), &argv[i + 1]).ok_or(UNKNOWN_MEMBER)?;
            }
            frommember = true;
            i += 1;
        } else if is(a, "fromlonlat") && left >= 2 && search && !frommember {
            center = lon_lat(&argv[i + 1..i + 3])?;
            fromloc = true;
            i += 2;
        } else if is(a, "byradius") && left >= 2 && search && !bybox {
            let (k, c) = radius_args(&argv[i + 1..i + 3])?;
            (kind, conversion) = (Some(k), c);
            byradius = true;
            i += 2;
        } else if is(a, "bybox") && left >= 3 && search && !byradius {
            let (k, c) = box_args(&argv[i + 1..i + 4])?;
            (kind, conversion) = (Some(k), c);
            bybox = true;
            i += 3;
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 1;
    }
    let name = String::from_utf8_lossy(&argv[0]);
    if store.is_some() && (withdist || withhash || withcoord) {
        let what = if v.search_store {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return Err(CmdError::err(format!(
            "{what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        )));
    }
    if search && !(frommember || fromloc) {
        return Err(CmdError::err(format!(
            "exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
        )));
    }
    if search && !(byradius || bybox) {
        return Err(CmdError::err(format!(
            "exactly one of BYRADIUS and BYBOX can be specified for {name}"
        )));
    }
    if any && count == 0 {
        return Err(CmdError::err("the ANY argument requires COUNT argument"));
    }
    let (Some(z), Some(kind)) = (z, kind) else {
        return Ok(Found::Missing { store });
    };
    // COUNT keeps the closest points, so it sorts (unless ANY: the first found).
    if count != 0 && sort == Sort::None && !any {
        sort = Sort::Asc;
    }
    let shape = Shape {
        center,
        kind,
        conversion,
    };
    let mut points = points_in(z, &shape, if any { count } else { 0 });
    match sort {
        Sort::None => {}
        Sort::Asc => points.sort_by(|a, b| a.dist.total_cmp(&b.dist)),
        Sort::Desc => points.sort_by(|a, b| b.dist.total_cmp(&a.dist)),
    }
    if count != 0 {
        points.truncate(usize::try_from(count).unwrap_or(usize::MAX));
    }
    Ok(Found::Points {
        points,
        conversion,
        withdist,
        withhash,
        withcoord,
        store: store.map(|s| (s, storedist)),
    })
}

/// The points of `z` inside `shape`, box by box as Redis walks them; with a `limit`
/// (ANY), the walk stops once it has that many.
fn points_in(z: &ZSet, shape: &Shape, limit: u64) -> Vec<Point> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let full = |found: &Vec<Point>| limit != 0 && found.len() >= limit;
    let boxes = geohash::areas_for_shape(shape);
    let mut found = Vec::new();
    let mut last_processed = 0;
    for (i, b) in boxes.iter().enumerate() {
        if b.step == 0 && b.bits == 0 {
            continue;
        }
        // With huge radiuses neighbouring boxes can be the same box: skip a repeat.
        if last_processed != 0 && *b == boxes[last_processed] {
            continue;
        }
        if full(&found) {
            break;
        }
        let (min, max) = geohash::score_range(*b);
        let range = z.range_by_score(
            std::ops::Bound::Included(min),
            std::ops::Bound::Excluded(max),
        );
        for (member, score) in range {
            if let Some(position) = geohash::decode_score(score) {
                if let Some(dist) = geohash::within(shape, position) {
                    found.push(Point {
                        member: member.into(),
                        dist,
                        score,
                        position,
                    });
                }
            }
            if full(&found) {
                break;
            }
        }
        last_processed = i;
    }
    found
}

fn search_generic(ex: &mut Exec<'_>, argv: &[Bytes], src_at: usize, v: Variant) -> CmdResult {
    let key = &argv[src_at];
    // The forms that may store run as writes (through the log): their source is looked
    // up as a write looks up a key, which deletes it if expired.
    let found = if v.search_store || (v.form != Form::Search && !v.no_store) {
        let z = write_zset(ex, key)?;
        search(argv, v, z.map(|z| &*z))?
    } else {
        let (z, _) = read_zset_out(ex, key)?;
        search(argv, v, z)?
    };
    match found {
        Found::Missing { store: Some(dst) } => {
            ex.expire_if_needed(&dst);
            if ex.ks().remove(&dst).is_some() {
                ex.notify(GENERIC, "del", &dst);
            }
            ex.out.int(0);
        }
        Found::Missing { store: None } => ex.out.array(0),
        Found::Points {
            points,
            conversion,
            store: Some((dst, storedist)),
            ..
        } => {
            let mut z = ZSet::default();
            for p in &points {
                let score = if storedist {
                    p.dist / conversion
                } else {
                    p.score
                };
                z.insert(&p.member, score);
            }
            let event = if v.form == Form::Search {
                "geosearchstore"
            } else {
                "georadiusstore"
            };
            store_result(ex, &dst, z, event);
        }
        Found::Points {
            points,
            conversion,
            withdist,
            withhash,
            withcoord,
            store: None,
        } => {
            let out = &mut *ex.out;
            let extra = usize::from(withdist) + usize::from(withhash) + usize::from(withcoord);
            out.array(points.len());
            for p in &points {
                if extra > 0 {
                    out.array(extra + 1);
                }
                out.bulk(&p.member);
                if withdist {
                    out.bulk(distance_text(p.dist / conversion).as_bytes());
                }
                if withhash {
                    out.int(p.score as i64);
                }
                if withcoord {
                    reply_position(out, p.position);
                }
            }
        }
    }
    Ok(())
}

const fn variant(form: Form, no_store: bool, search_store: bool) -> Variant {
    Variant {
        form,
        no_store,
        search_store,
    }
}

fn georadius(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    search_generic(ex, argv, 1, variant(Form::Coords, false, false))
}

fn georadius_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    search_generic(ex, argv, 1, variant(Form::Coords, true, false))
}

fn georadiusbymember(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    search_generic(ex, argv, 1, variant(Form::Member, false, false))
}

fn georadiusbymember_ro(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    search_generic(ex, argv, 1, variant(Form::Member, true, false))
}

fn geosearch(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    search_generic(ex, argv, 1, variant(Form::Search, true, false))
}

fn geosearchstore(ex: &mut Exec<'_>, argv: &[Bytes]) -> CmdResult {
    search_generic(ex, argv, 2, variant(Form::Search, false, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_have_four_decimals_rounded_half_even() {
        assert_eq!(distance_text(0.0), "0.0000");
        assert_eq!(distance_text(166274.15156960033), "166274.1516");
        assert_eq!(distance_text(0.00004), "0.0000");
        assert_eq!(distance_text(1.5), "1.5000");
        // Exact ties (1/32, 3/32 meters) go to the even neighbour, as llrint does.
        assert_eq!(distance_text(0.03125), "0.0312");
        assert_eq!(distance_text(0.09375), "0.0938");
    }

    #[test]
    fn coordinates_are_human_long_doubles() {
        assert_eq!(coordinate_text(13.361389338970184), "13.36138933897018433");
        assert_eq!(coordinate_text(-180.0), "-180");
        assert_eq!(coordinate_text(0.5), "0.5");
        assert_eq!(coordinate_text(-0.0), "0");
    }

    #[test]
    fn units_and_positions() {
        assert_eq!(unit(b"KM"), Ok(1000.0));
        assert_eq!(unit(b"mi"), Ok(1609.34));
        assert!(unit(b"yd").is_err());
        let ok = [Bytes::from_static(b"13.5"), Bytes::from_static(b"38")];
        assert_eq!(lon_lat(&ok), Ok([13.5, 38.0]));
        let bad = [Bytes::from_static(b"200"), Bytes::from_static(b"100")];
        assert_eq!(
            lon_lat(&bad).unwrap_err().0,
            "ERR invalid longitude,latitude pair 200.000000,100.000000"
        );
        let nan = [Bytes::from_static(b"x"), Bytes::from_static(b"1")];
        assert_eq!(lon_lat(&nan), Err(CmdError::NOT_FLOAT));
    }

    #[test]
    fn searches_check_their_options_in_redis_order() {
        let argv = |words: &str| -> Vec<Bytes> {
            words
                .split(' ')
                .map(|w| Bytes::from(w.to_string()))
                .collect()
        };
        let v = variant(Form::Search, true, false);
        let err = |words: &str| match search(&argv(words), v, None) {
            Err(e) => e.0.into_owned(),
            Ok(_) => "ok".into(),
        };
        assert_eq!(
            err("geosearch k byradius 10 km"),
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for geosearch"
        );
        assert_eq!(
            err("geosearch k fromlonlat 1 1"),
            "ERR exactly one of BYRADIUS and BYBOX can be specified for geosearch"
        );
        assert_eq!(
            err("geosearch k fromlonlat 1 1 byradius 1 km any"),
            "ERR the ANY argument requires COUNT argument"
        );
        assert_eq!(
            err("geosearch k fromlonlat 1 1 byradius 1 km store x"),
            "ERR syntax error"
        );
        assert_eq!(
            err("geosearch k fromlonlat 1 1 byradius -1 km"),
            "ERR radius cannot be negative"
        );
        assert_eq!(err("geosearch k frommember m byradius 1 km"), "ok");
    }

    #[test]
    fn a_search_finds_the_points_within_its_radius() {
        let mut z = ZSet::default();
        for (name, lon, lat) in [
            ("palermo", 13.361389, 38.115556),
            ("catania", 15.087269, 37.502669),
            ("rome", 12.496366, 41.902782),
        ] {
            let h = geohash::encode_wgs84(lon, lat, geohash::STEP_MAX).unwrap();
            z.insert(name.as_bytes(), h.align52() as f64);
        }
        let shape = Shape {
            center: [15.0, 37.0],
            kind: ShapeKind::Radius(200.0),
            conversion: 1000.0,
        };
        let mut names: Vec<_> = points_in(&z, &shape, 0)
            .into_iter()
            .map(|p| String::from_utf8_lossy(&p.member).into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["catania", "palermo"]);
        assert_eq!(points_in(&z, &shape, 1).len(), 1);
    }
}
