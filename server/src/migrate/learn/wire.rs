//! What the node and its training process say to each other (`crate::learning`): the
//! labelled samples down the child's stdin, the trained model (or why there is none)
//! back on its stdout. Little-endian, versioned by a magic word, every count bounded.
//!
//! ```text
//! samples  "KPS1" count:u32 { raw:f32 x RAW, touched:u8, class_len:u8, class } x count
//! model    "KPM1" weights, mean, scale: f64 x INPUTS each, intercept, overall_share:f64,
//!          trained_on, positives:u64, auc, heuristic_auc:f64, held_out, hits,
//!          heuristic_hits:u64, classes:u32 { len:u8, class, share:f64 } x classes
//! no model "KPE1" why (UTF-8, to the end)
//! ```

use std::io::{self, Write};

use super::features::{MAX_CLASS_BYTES, RAW};
use super::model::{Model, Sample, INPUTS, MAX_CLASSES};
use super::sampler::MAX_SAMPLES;

const SAMPLES: &[u8; 4] = b"KPS1";
const MODEL: &[u8; 4] = b"KPM1";
const NO_MODEL: &[u8; 4] = b"KPE1";

/// The most bytes a sample list takes (the child reads no more).
pub const MAX_SAMPLES_BYTES: usize = 8 + MAX_SAMPLES * (RAW * 4 + 2 + MAX_CLASS_BYTES);
/// The most bytes a reply takes (the node reads no more). A reason is cut to fit.
pub const MAX_REPLY_BYTES: usize = 4 + (3 * INPUTS + 6) * 8 + 4 + MAX_CLASSES * (1 + 255 + 8);

/// Writes `samples` (at most [`MAX_SAMPLES`] of them, the newest dropped past it).
pub fn write_samples(out: &mut impl Write, samples: &[Sample]) -> io::Result<()> {
    let samples = &samples[..samples.len().min(MAX_SAMPLES)];
    out.write_all(SAMPLES)?;
    out.write_all(&(samples.len() as u32).to_le_bytes())?;
    for s in samples {
        for v in &s.raw {
            out.write_all(&v.to_le_bytes())?;
        }
        let class = &s.class[..s.class.len().min(MAX_CLASS_BYTES)];
        out.write_all(&[u8::from(s.touched), class.len() as u8])?;
        out.write_all(class)?;
    }
    Ok(())
}

/// The samples [`write_samples`] wrote.
pub fn read_samples(b: &[u8]) -> Result<Vec<Sample>, String> {
    let mut r = Reader(b);
    r.magic(SAMPLES)?;
    let count = r.u32()? as usize;
    if count > MAX_SAMPLES {
        return Err(format!("{count} samples, at most {MAX_SAMPLES}"));
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let mut raw = [0f32; RAW];
        for v in &mut raw {
            *v = f32::from_le_bytes(r.array()?);
        }
        let touched = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(format!("touched is {other}")),
        };
        let len = r.u8()? as usize;
        if len > MAX_CLASS_BYTES {
            return Err(format!("a class of {len} bytes, at most {MAX_CLASS_BYTES}"));
        }
        let class = r.take(len)?.to_vec();
        samples.push(Sample {
            raw,
            class,
            touched,
        });
    }
    r.end()?;
    Ok(samples)
}

/// A training's outcome as the child answers it.
pub fn write_outcome(outcome: &Result<Model, String>) -> Vec<u8> {
    let mut out = Vec::new();
    match outcome {
        Ok(m) => {
            out.extend_from_slice(MODEL);
            for v in m.weights.iter().chain(&m.mean).chain(&m.scale) {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [m.intercept, m.overall_share] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [m.trained_on, m.positives] {
                out.extend_from_slice(&(v as u64).to_le_bytes());
            }
            for v in [m.auc, m.heuristic_auc] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [m.held_out, m.hits, m.heuristic_hits] {
                out.extend_from_slice(&(v as u64).to_le_bytes());
            }
            // A model keeps at most MAX_CLASSES classes of at most MAX_CLASS_BYTES each.
            let classes: Vec<_> = m
                .class_share
                .iter()
                .filter(|(c, _)| c.len() <= u8::MAX as usize)
                .take(MAX_CLASSES)
                .collect();
            out.extend_from_slice(&(classes.len() as u32).to_le_bytes());
            for (class, share) in classes {
                out.push(class.len() as u8);
                out.extend_from_slice(class);
                out.extend_from_slice(&share.to_le_bytes());
            }
        }
        Err(why) => {
            out.extend_from_slice(NO_MODEL);
            let mut end = why.len().min(MAX_REPLY_BYTES - 4);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&why.as_bytes()[..end]);
        }
    }
    out
}

/// The outcome [`write_outcome`] wrote; `Err` also for a reply that is not one.
pub fn read_outcome(b: &[u8]) -> Result<Model, String> {
    let mut r = Reader(b);
    if b.starts_with(NO_MODEL) {
        return Err(String::from_utf8_lossy(&b[4..]).into_owned());
    }
    r.magic(MODEL)?;
    let mut f64s = |n: usize| -> Result<Vec<f64>, String> {
        (0..n).map(|_| Ok(f64::from_le_bytes(r.array()?))).collect()
    };
    let arrays = f64s(3 * INPUTS + 2)?;
    let array = |i: usize| -> [f64; INPUTS] {
        let mut a = [0.0; INPUTS];
        a.copy_from_slice(&arrays[i * INPUTS..(i + 1) * INPUTS]);
        a
    };
    let mut m = Model {
        weights: array(0),
        mean: array(1),
        scale: array(2),
        intercept: arrays[3 * INPUTS],
        overall_share: arrays[3 * INPUTS + 1],
        class_share: Default::default(),
        trained_on: r.u64()? as usize,
        positives: r.u64()? as usize,
        auc: f64::from_le_bytes(r.array()?),
        heuristic_auc: f64::from_le_bytes(r.array()?),
        held_out: r.u64()? as usize,
        hits: r.u64()? as usize,
        heuristic_hits: r.u64()? as usize,
    };
    let classes = r.u32()? as usize;
    if classes > MAX_CLASSES {
        return Err(format!("{classes} classes, at most {MAX_CLASSES}"));
    }
    for _ in 0..classes {
        let len = r.u8()? as usize;
        let class = r.take(len)?.to_vec();
        let share = f64::from_le_bytes(r.array()?);
        m.class_share.insert(class, share);
    }
    r.end()?;
    let values = arrays.iter().chain(m.class_share.values());
    if values
        .chain([&m.auc, &m.heuristic_auc])
        .any(|v| !v.is_finite())
    {
        return Err("a model value that is not a number".into());
    }
    // A scale of 0 would divide by zero when scoring (training never makes one).
    if m.scale.contains(&0.0) {
        return Err("a model input scaled by 0".into());
    }
    Ok(m)
}

/// Reads a byte slice front to back; every read checks the length left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn magic(&mut self, want: &[u8; 4]) -> Result<(), String> {
        match self.take(4)? {
            m if m == want => Ok(()),
            m => Err(format!(
                "starts with {:?}, not {:?}",
                String::from_utf8_lossy(m),
                String::from_utf8_lossy(want)
            )),
        }
    }

    fn end(&self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes past the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let mut raw = [0f32; RAW];
                for (j, v) in raw.iter_mut().enumerate() {
                    *v = ((i * 31 + j * 7) % 97) as f32 / 9.0;
                }
                // Touched when the counter feature is high, with some noise.
                let touched = raw[super::super::features::COUNTER] > 4.0 || i % 7 == 0;
                let class = format!("c{}", i % 5).into_bytes();
                Sample {
                    raw,
                    class,
                    touched,
                }
            })
            .collect()
    }

    #[test]
    fn samples_round_trip() {
        let s = samples(300);
        let mut b = Vec::new();
        write_samples(&mut b, &s).unwrap();
        let back = read_samples(&b).unwrap();
        assert_eq!(back.len(), s.len());
        for (a, b) in s.iter().zip(&back) {
            assert_eq!((a.raw, &a.class, a.touched), (b.raw, &b.class, b.touched));
        }
        // Cut anywhere, or with a byte more: an error, not a panic.
        for cut in [0, 3, 4, 8, b.len() / 2, b.len() - 1] {
            assert!(read_samples(&b[..cut]).is_err(), "cut at {cut}");
        }
        b.push(0);
        assert!(read_samples(&b).is_err());
    }

    #[test]
    fn a_model_round_trips_and_scores_the_same() {
        let s = samples(1000);
        let m = Model::train(&s).unwrap();
        let b = write_outcome(&Ok(m.clone()));
        assert!(b.len() <= MAX_REPLY_BYTES);
        let back = read_outcome(&b).unwrap();
        for x in &s[..50] {
            assert_eq!(m.score(&x.raw, &x.class), back.score(&x.raw, &x.class));
        }
        assert_eq!(
            (
                m.trained_on,
                m.positives,
                m.held_out,
                m.hits,
                m.heuristic_hits
            ),
            (
                back.trained_on,
                back.positives,
                back.held_out,
                back.hits,
                back.heuristic_hits
            )
        );
        assert_eq!((m.auc, m.heuristic_auc), (back.auc, back.heuristic_auc));
        for cut in [0, 4, 20, b.len() - 1] {
            assert!(read_outcome(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn no_model_says_why() {
        let b = write_outcome(&Err("12 labelled samples".into()));
        assert_eq!(read_outcome(&b).unwrap_err(), "12 labelled samples");
        assert!(read_outcome(b"garbage").is_err());
    }
}
