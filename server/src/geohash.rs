//! Geohashes as Redis computes them (its `geohash.c` and `geohash_helper.c`, ported
//! bit for bit), for the GEO commands in [`crate::cmd::geo`].
//!
//! A position is stored as the score of a sorted set member: a 52-bit integer that
//! interleaves 26 bits of latitude (even bits) with 26 bits of longitude (odd bits), each
//! the position's offset in its range scaled to 2^26. Latitudes are limited to the
//! Web Mercator range (±85.05112878), so a payload DUMPed from Redis reads back here the
//! same and the reverse, and GEOHASH re-encodes over ±90 to print a standard geohash.
//!
//! A radius or box search covers its shape with the geohash box of the center at a
//! precision chosen from the radius plus its 8 neighbours, turns each box into a score
//! range of the sorted set, and keeps the points that really lie within the shape.
//! Distances are great-circle (haversine) on a sphere of Redis's radius.

use std::f64::consts::PI;

/// 26 bits per coordinate: 52 bits in all, exact in a double.
pub const STEP_MAX: u8 = 26;
pub const LAT_MIN: f64 = -85.05112878;
pub const LAT_MAX: f64 = 85.05112878;
pub const LONG_MIN: f64 = -180.0;
pub const LONG_MAX: f64 = 180.0;

/// Earth's quadratic mean radius for WGS-84, in meters (Redis's figure).
const EARTH_RADIUS_IN_METERS: f64 = 6372797.560856;
/// Half the Web Mercator world width, in meters: what the step estimate starts from.
const MERCATOR_MAX: f64 = 20037726.37;
const D_R: f64 = PI / 180.0;

fn deg_rad(ang: f64) -> f64 {
    ang * D_R
}

fn rad_deg(ang: f64) -> f64 {
    ang / D_R
}

/// A range of one coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

/// The ranges positions are stored in.
const LONG_RANGE: Range = Range {
    min: LONG_MIN,
    max: LONG_MAX,
};
const LAT_RANGE: Range = Range {
    min: LAT_MIN,
    max: LAT_MAX,
};

/// A geohash: `step` bits per coordinate, interleaved in the low `2 * step` bits.
/// All zero is "no box" (a neighbour that the search leaves out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashBits {
    pub bits: u64,
    pub step: u8,
}

impl HashBits {
    fn is_zero(&self) -> bool {
        self.bits == 0 && self.step == 0
    }

    /// The hash left-aligned to 52 bits: the smallest score of its box.
    pub fn align52(&self) -> u64 {
        self.bits << (52 - 2 * u32::from(self.step.min(STEP_MAX)))
    }
}

/// The box a geohash stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub longitude: Range,
    pub latitude: Range,
}

fn interleave64(xlo: u32, ylo: u32) -> u64 {
    const B: [u64; 5] = [
        0x5555555555555555,
        0x3333333333333333,
        0x0F0F0F0F0F0F0F0F,
        0x00FF00FF00FF00FF,
        0x0000FFFF0000FFFF,
    ];
    const S: [u32; 5] = [1, 2, 4, 8, 16];
    let (mut x, mut y) = (u64::from(xlo), u64::from(ylo));
    for i in (0..5).rev() {
        x = (x | (x << S[i])) & B[i];
        y = (y | (y << S[i])) & B[i];
    }
    x | (y << 1)
}

fn deinterleave64(interleaved: u64) -> u64 {
    const B: [u64; 6] = [
        0x5555555555555555,
        0x3333333333333333,
        0x0F0F0F0F0F0F0F0F,
        0x00FF00FF00FF00FF,
        0x0000FFFF0000FFFF,
        0x00000000FFFFFFFF,
    ];
    const S: [u32; 6] = [0, 1, 2, 4, 8, 16];
    let (mut x, mut y) = (interleaved, interleaved >> 1);
    for i in 0..6 {
        x = (x | (x >> S[i])) & B[i];
        y = (y | (y >> S[i])) & B[i];
    }
    x | (y << 32)
}

/// Encodes a position over the given ranges with `step` bits per coordinate; `None`
/// outside the ranges (or a step outside 1..=32).
pub fn encode(
    long_range: Range,
    lat_range: Range,
    longitude: f64,
    latitude: f64,
    step: u8,
) -> Option<HashBits> {
    if step == 0 || step > 32 {
        return None;
    }
    if !(LONG_MIN..=LONG_MAX).contains(&longitude) || !(LAT_MIN..=LAT_MAX).contains(&latitude) {
        return None;
    }
    if !(lat_range.min..=lat_range.max).contains(&latitude)
        || !(long_range.min..=long_range.max).contains(&longitude)
    {
        return None;
    }
    let scale = (1u64 << step) as f64;
    let lat_offset = (latitude - lat_range.min) / (lat_range.max - lat_range.min) * scale;
    let long_offset = (longitude - long_range.min) / (long_range.max - long_range.min) * scale;
    // As C's conversion of a double to uint32_t: the offsets are within 0..=2^step.
    Some(HashBits {
        bits: interleave64(lat_offset as u32, long_offset as u32),
        step,
    })
}

/// Encodes a position in the stored ranges (what GEOADD does with `STEP_MAX`).
pub fn encode_wgs84(longitude: f64, latitude: f64, step: u8) -> Option<HashBits> {
    encode(LONG_RANGE, LAT_RANGE, longitude, latitude, step)
}

/// The box of a geohash over the given ranges; `None` for the zero hash.
pub fn decode(long_range: Range, lat_range: Range, hash: HashBits) -> Option<Area> {
    if hash.is_zero() || hash.step > 32 {
        return None;
    }
    let sep = deinterleave64(hash.bits);
    let ilato = sep as u32;
    let ilono = (sep >> 32) as u32;
    let div = (1u64 << hash.step) as f64;
    let lat_scale = lat_range.max - lat_range.min;
    let long_scale = long_range.max - long_range.min;
    // `+ 1` in 32-bit arithmetic, as Redis's unsigned int.
    Some(Area {
        latitude: Range {
            min: lat_range.min + (f64::from(ilato) / div) * lat_scale,
            max: lat_range.min + (f64::from(ilato.wrapping_add(1)) / div) * lat_scale,
        },
        longitude: Range {
            min: long_range.min + (f64::from(ilono) / div) * long_scale,
            max: long_range.min + (f64::from(ilono.wrapping_add(1)) / div) * long_scale,
        },
    })
}

/// The position a stored score stands for: the center of its 52-bit box, clamped to
/// the stored ranges. `[longitude, latitude]`.
pub fn decode_score(score: f64) -> Option<[f64; 2]> {
    // Redis converts with `(uint64_t)score`; Rust's `as` saturates where C is undefined.
    let hash = HashBits {
        bits: score as u64,
        step: STEP_MAX,
    };
    let area = decode(LONG_RANGE, LAT_RANGE, hash)?;
    let lon = ((area.longitude.min + area.longitude.max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let lat = ((area.latitude.min + area.latitude.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    Some([lon, lat])
}

/// The 11-character standard geohash of a stored score (GEOHASH): the position
/// re-encoded over latitudes ±90, the 11th character always `0` (52 bits fill 10).
pub fn standard_geohash(score: f64) -> Option<[u8; 11]> {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let [lon, lat] = decode_score(score)?;
    let world = |lo: f64, hi: f64| Range { min: lo, max: hi };
    let hash = encode(world(-180.0, 180.0), world(-90.0, 90.0), lon, lat, 26)?;
    let mut out = [b'0'; 11];
    for (i, c) in out.iter_mut().enumerate().take(10) {
        let idx = (hash.bits >> (52 - (i + 1) * 5)) & 0x1f;
        *c = ALPHABET[idx as usize];
    }
    Some(out)
}

/// Moves a geohash one box along one axis (`d` = 1 or -1; 0 stays): longitude bits
/// are the odd ones (`moving` = 0xaa...), latitude bits the even ones (0x55...).
fn move_axis(hash: &mut HashBits, d: i8, moving: u64) {
    if d == 0 {
        return;
    }
    let shift = 64 - 2 * u32::from(hash.step);
    let kept = !moving;
    let (m, k) = (hash.bits & moving, hash.bits & kept);
    // Filling the other axis' bits with ones carries (or borrows) across them.
    let zz = kept >> shift;
    let m = if d > 0 {
        m.wrapping_add(zz + 1)
    } else {
        (m | zz).wrapping_sub(zz + 1)
    };
    hash.bits = (m & (moving >> shift)) | k;
}

fn move_x(hash: &mut HashBits, d: i8) {
    move_axis(hash, d, 0xaaaaaaaaaaaaaaaa);
}

fn move_y(hash: &mut HashBits, d: i8) {
    move_axis(hash, d, 0x5555555555555555);
}

/// The 8 boxes around a geohash of step 1..=32, in Redis's order of search: north,
/// south, east, west, north-east, north-west, south-east, south-west.
fn neighbors(hash: HashBits) -> [HashBits; 8] {
    if hash.step == 0 || hash.step > 32 {
        return [HashBits::default(); 8];
    }
    let moved = |dx: i8, dy: i8| {
        let mut h = hash;
        move_x(&mut h, dx);
        move_y(&mut h, dy);
        h
    };
    [
        moved(0, 1),
        moved(0, -1),
        moved(1, 0),
        moved(-1, 0),
        moved(1, 1),
        moved(-1, 1),
        moved(1, -1),
        moved(-1, -1),
    ]
}

/// How a search area is measured: a circle of a radius or an axis-aligned box, in
/// the request's unit (`conversion` meters each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShapeKind {
    Radius(f64),
    Box { width: f64, height: f64 },
}

/// A search area: its center `[longitude, latitude]`, its kind and unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub center: [f64; 2],
    pub kind: ShapeKind,
    /// Meters per unit (1 for m, 1000 for km...).
    pub conversion: f64,
}

/// The precision (bits per coordinate) whose boxes are about the size of a search of
/// `range_meters` at latitude `lat`.
fn estimate_steps_by_radius(mut range_meters: f64, lat: f64) -> u8 {
    if range_meters == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range_meters < MERCATOR_MAX {
        range_meters *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

/// `[min_lon, min_lat, max_lon, max_lat]` of the area a shape can reach.
fn bounding_box(shape: &Shape) -> [f64; 4] {
    let [longitude, latitude] = shape.center;
    let (height, width) = match shape.kind {
        ShapeKind::Radius(r) => (r, r),
        ShapeKind::Box { width, height } => (height / 2.0, width / 2.0),
    };
    let (height, width) = (height * shape.conversion, width * shape.conversion);
    let lat_delta = rad_deg(height / EARTH_RADIUS_IN_METERS);
    let long_delta_top =
        rad_deg(width / EARTH_RADIUS_IN_METERS / deg_rad(latitude + lat_delta).cos());
    let long_delta_bottom =
        rad_deg(width / EARTH_RADIUS_IN_METERS / deg_rad(latitude - lat_delta).cos());
    let long_delta = if latitude < 0.0 {
        long_delta_bottom
    } else {
        long_delta_top
    };
    [
        longitude - long_delta,
        latitude - lat_delta,
        longitude + long_delta,
        latitude + lat_delta,
    ]
}

/// The 9 boxes (center first, then its neighbours in [`neighbors`]'s order) that cover
/// a shape; boxes the search need not look at are zero.
pub fn areas_for_shape(shape: &Shape) -> [HashBits; 9] {
    let [min_lon, min_lat, max_lon, max_lat] = bounding_box(shape);
    let [longitude, latitude] = shape.center;
    let radius_meters = match shape.kind {
        ShapeKind::Radius(r) => r,
        ShapeKind::Box { width, height } => {
            ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
        }
    } * shape.conversion;
    let mut steps = estimate_steps_by_radius(radius_meters, latitude);
    let cover = |steps: u8| {
        let hash = encode(LONG_RANGE, LAT_RANGE, longitude, latitude, steps).unwrap_or_default();
        (hash, neighbors(hash), decode(LONG_RANGE, LAT_RANGE, hash))
    };
    let (mut hash, mut around, mut area) = cover(steps);
    // Near the edge of its box, the estimated step can leave part of the search area
    // outside the 9 boxes: one step coarser then.
    let decode_at = |h: HashBits| decode(LONG_RANGE, LAT_RANGE, h);
    let (north, south, east, west) = (
        decode_at(around[0]),
        decode_at(around[1]),
        decode_at(around[2]),
        decode_at(around[3]),
    );
    let too_small = north.is_some_and(|a| a.latitude.max < max_lat)
        || south.is_some_and(|a| a.latitude.min > min_lat)
        || east.is_some_and(|a| a.longitude.max < max_lon)
        || west.is_some_and(|a| a.longitude.min > min_lon);
    if steps > 1 && too_small {
        steps -= 1;
        (hash, around, area) = cover(steps);
    }
    // Leave out the boxes the search area does not reach.
    if let (true, Some(area)) = (steps >= 2, area) {
        const N: usize = 0;
        const S: usize = 1;
        const E: usize = 2;
        const W: usize = 3;
        const NE: usize = 4;
        const NW: usize = 5;
        const SE: usize = 6;
        const SW: usize = 7;
        let mut drop = |which: [usize; 3]| {
            for i in which {
                around[i] = HashBits::default();
            }
        };
        if area.latitude.min < min_lat {
            drop([S, SW, SE]);
        }
        if area.latitude.max > max_lat {
            drop([N, NE, NW]);
        }
        if area.longitude.min < min_lon {
            drop([W, SW, NW]);
        }
        if area.longitude.max > max_lon {
            drop([E, SE, NE]);
        }
    }
    let mut all = [hash; 9];
    all[1..].copy_from_slice(&around);
    all
}

/// The score range `[min, max)` holding every position inside a box.
pub fn score_range(hash: HashBits) -> (f64, f64) {
    let min = hash.align52();
    let next = HashBits {
        bits: hash.bits.wrapping_add(1),
        step: hash.step,
    };
    (min as f64, next.align52() as f64)
}

/// Distance along a meridian, in meters.
fn lat_distance(lat1d: f64, lat2d: f64) -> f64 {
    EARTH_RADIUS_IN_METERS * (deg_rad(lat2d) - deg_rad(lat1d)).abs()
}

/// Great-circle distance between two positions, in meters (haversine).
pub fn distance(lon1d: f64, lat1d: f64, lon2d: f64, lat2d: f64) -> f64 {
    let (lon1r, lon2r) = (deg_rad(lon1d), deg_rad(lon2d));
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1d, lat2d);
    }
    let (lat1r, lat2r) = (deg_rad(lat1d), deg_rad(lat2d));
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_IN_METERS * a.sqrt().asin()
}

/// The distance in meters from the shape's center to `point`, if the point lies
/// within the shape.
pub fn within(shape: &Shape, point: [f64; 2]) -> Option<f64> {
    let [x1, y1] = shape.center;
    let [x2, y2] = point;
    match shape.kind {
        ShapeKind::Radius(r) => {
            let d = distance(x1, y1, x2, y2);
            (d <= r * shape.conversion).then_some(d)
        }
        ShapeKind::Box { width, height } => {
            if lat_distance(y2, y1) > height * shape.conversion / 2.0 {
                return None;
            }
            if distance(x2, y2, x1, y2) > width * shape.conversion / 2.0 {
                return None;
            }
            Some(distance(x1, y1, x2, y2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The score Redis 7 stores for Palermo (GEOADD Sicily 13.361389 38.115556 Palermo).
    const PALERMO: f64 = 3479099956230698.0;
    const CATANIA: f64 = 3479447370796909.0;

    #[test]
    fn encodes_as_redis() {
        let h = encode_wgs84(13.361389, 38.115556, STEP_MAX).unwrap();
        assert_eq!(h.align52() as f64, PALERMO);
        let h = encode_wgs84(15.087269, 37.502669, STEP_MAX).unwrap();
        assert_eq!(h.align52() as f64, CATANIA);
        assert!(encode_wgs84(181.0, 0.0, STEP_MAX).is_none());
        assert!(encode_wgs84(0.0, 85.06, STEP_MAX).is_none());
    }

    #[test]
    fn decodes_as_redis() {
        // Redis answers GEOPOS Sicily Palermo with these (printed with %.17Lf).
        let [lon, lat] = decode_score(PALERMO).unwrap();
        assert_eq!(format!("{lon:.17}"), "13.36138933897018433");
        assert_eq!(format!("{lat:.17}"), "38.11555639549629859");
    }

    #[test]
    fn distance_and_geohash_as_redis() {
        let [a, b] = decode_score(PALERMO).unwrap();
        let [c, d] = decode_score(CATANIA).unwrap();
        // GEODIST Sicily Palermo Catania: "166274.1516".
        assert_eq!(format!("{:.4}", distance(a, b, c, d)), "166274.1516");
        assert_eq!(&standard_geohash(PALERMO).unwrap(), b"sqc8b49rny0");
        assert_eq!(&standard_geohash(CATANIA).unwrap(), b"sqdtr74hyu0");
    }

    #[test]
    fn interleave_round_trips() {
        for (x, y) in [
            (0u32, 0u32),
            (1, 2),
            (0xffff_ffff, 0),
            (0x1234_5678, 0x9abc_def0),
        ] {
            let sep = deinterleave64(interleave64(x, y));
            assert_eq!((sep as u32, (sep >> 32) as u32), (x, y));
        }
    }

    #[test]
    fn neighbours_surround_the_box() {
        let h = encode_wgs84(13.36, 38.11, 10).unwrap();
        let center = decode(LONG_RANGE, LAT_RANGE, h).unwrap();
        let n = neighbors(h);
        let north = decode(LONG_RANGE, LAT_RANGE, n[0]).unwrap();
        let east = decode(LONG_RANGE, LAT_RANGE, n[2]).unwrap();
        assert_eq!(north.latitude.min, center.latitude.max);
        assert_eq!(north.longitude, center.longitude);
        assert_eq!(east.longitude.min, center.longitude.max);
        assert_eq!(east.latitude, center.latitude);
    }

    #[test]
    fn a_radius_search_covers_its_circle() {
        let shape = Shape {
            center: [15.0, 37.0],
            kind: ShapeKind::Radius(200.0),
            conversion: 1000.0,
        };
        let boxes = areas_for_shape(&shape);
        // Catania is 60 km away: inside one of the boxes and within the circle.
        let inside = boxes.iter().filter(|b| b.step != 0).any(|b| {
            let (lo, hi) = score_range(*b);
            (lo..hi).contains(&CATANIA)
        });
        assert!(inside);
        let [lon, lat] = decode_score(CATANIA).unwrap();
        assert!(within(&shape, [lon, lat]).is_some());
        let far = Shape {
            kind: ShapeKind::Radius(10.0),
            ..shape
        };
        assert!(within(&far, [lon, lat]).is_none());
    }

    #[test]
    fn step_estimate() {
        assert_eq!(estimate_steps_by_radius(0.0, 0.0), 26);
        assert_eq!(estimate_steps_by_radius(1e9, 0.0), 1);
        assert!(estimate_steps_by_radius(100.0, 0.0) > estimate_steps_by_radius(1e5, 0.0));
        assert!(estimate_steps_by_radius(1e5, 85.0) < estimate_steps_by_radius(1e5, 0.0));
    }
}
