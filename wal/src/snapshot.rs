//! Snapshot files: `KLVSNAP1`, header, CRC-framed chunks, trailer (see the crate docs).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use protobuf::Message;
use raft::eraftpb::SnapshotMetadata;

use crate::record::{le_u32, le_u64};
use crate::WalError;

const MAGIC: &[u8; 8] = b"KLVSNAP1";
const TRAILER_MARK: u32 = u32::MAX;
const TRAILER_LEN: usize = 4 + 8 + 4;

/// The file name of the snapshot at `term`/`index`: `<term>-<index>.snap`.
pub fn snapshot_file_name(term: u64, index: u64) -> String {
    format!("{term}-{index}.snap")
}

/// Writes a snapshot file: `<dir>/<term>-<index>.snap.tmp`, renamed into place by `finish`.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    dst: PathBuf,
    dir: PathBuf,
    crc: crc32fast::Hasher,
    chunks: u64,
}

impl SnapshotWriter {
    pub fn create(dir: &Path, meta: &SnapshotMetadata) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(WalError::io(dir))?;
        let dst = dir.join(snapshot_file_name(meta.term, meta.index));
        let tmp = dst.with_extension("snap.tmp");
        let file = File::create(&tmp).map_err(WalError::io(&tmp))?;
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            tmp,
            dst,
            dir: dir.to_owned(),
            crc: crc32fast::Hasher::new(),
            chunks: 0,
        };
        let meta = meta.write_to_bytes()?;
        w.put(MAGIC)?;
        w.framed(&meta)?;
        Ok(w)
    }

    /// Appends one chunk (`len < u32::MAX`).
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), WalError> {
        self.framed(chunk)?;
        self.chunks += 1;
        Ok(())
    }

    /// Writes the trailer, fsyncs, renames to `<term>-<index>.snap`, fsyncs the directory.
    pub fn finish(mut self) -> Result<PathBuf, WalError> {
        self.put(&TRAILER_MARK.to_le_bytes())?;
        self.put(&self.chunks.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.put(&crc.to_le_bytes())?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| WalError::io(&self.tmp)(e.into_error()))?;
        file.sync_all().map_err(WalError::io(&self.tmp))?;
        fs::rename(&self.tmp, &self.dst).map_err(WalError::io(&self.dst))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(WalError::io(&self.dir))?;
        Ok(self.dst)
    }

    fn framed(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l != TRAILER_MARK)
            .ok_or_else(|| WalError::Invalid("snapshot chunk of 4 GiB or more".into()))?;
        self.put(&len.to_le_bytes())?;
        self.put(&crc32fast::hash(bytes).to_le_bytes())?;
        self.put(bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).map_err(WalError::io(&self.tmp))
    }
}

/// A verified, memory-mapped snapshot file.
pub struct SnapshotReader {
    map: Mmap,
    meta: SnapshotMetadata,
    chunks: Vec<(usize, usize)>,
}

impl SnapshotReader {
    /// Maps `path` and verifies magic, header, every chunk CRC and the trailer.
    pub fn open(path: &Path) -> Result<Self, WalError> {
        let file = File::open(path).map_err(WalError::io(path))?;
        let len = file.metadata().map_err(WalError::io(path))?.len();
        if len < (MAGIC.len() + 8 + TRAILER_LEN) as u64 {
            return Err(WalError::corrupt(
                path,
                0,
                format!("file too short ({len} bytes)"),
            ));
        }
        // SAFETY: snapshot files are never modified once renamed into place (new snapshots
        // get new names, old ones are only deleted, which keeps the mapping valid), and every
        // byte is bounds-checked below, so the map behaves like an immutable slice.
        let map = unsafe { Mmap::map(&file) }.map_err(WalError::io(path))?;
        let data = &map[..];
        let bad = |off: usize, reason: String| WalError::corrupt(path, off, reason);
        if &data[..8] != MAGIC {
            return Err(bad(0, "bad magic (not a Kelvin snapshot)".into()));
        }
        let frame = |off: usize| -> Result<(usize, usize), WalError> {
            let (Some(n), Some(crc)) = (le_u32(data, off), le_u32(data, off + 4)) else {
                return Err(bad(off, "unexpected end of file, trailer missing".into()));
            };
            let start = off + 8;
            let end = start
                .checked_add(n as usize)
                .filter(|&e| e <= data.len())
                .ok_or_else(|| bad(off, format!("chunk of {n} bytes extends past end of file")))?;
            let actual = crc32fast::hash(&data[start..end]);
            if actual != crc {
                return Err(bad(
                    off,
                    format!("CRC mismatch (stored {crc:#010x}, computed {actual:#010x})"),
                ));
            }
            Ok((start, end))
        };
        let (hs, he) = frame(8)?;
        let meta = SnapshotMetadata::parse_from_bytes(&data[hs..he])
            .map_err(|e| bad(8, format!("bad snapshot metadata: {e}")))?;
        let mut chunks = Vec::new();
        let mut off = he;
        while le_u32(data, off) != Some(TRAILER_MARK) {
            let (s, e) = frame(off)?;
            chunks.push((s, e));
            off = e;
        }
        let count = le_u64(data, off + 4);
        let crc = le_u32(data, off + 12);
        if off + TRAILER_LEN != data.len() {
            return Err(bad(
                off,
                format!("trailer must be the last {TRAILER_LEN} bytes"),
            ));
        }
        if count != Some(chunks.len() as u64) {
            return Err(bad(
                off,
                format!("trailer counts {count:?} chunks, file has {}", chunks.len()),
            ));
        }
        let actual = crc32fast::hash(&data[..off + 12]);
        if crc != Some(actual) {
            return Err(bad(off, "file CRC mismatch".into()));
        }
        Ok(SnapshotReader { map, meta, chunks })
    }

    pub fn meta(&self) -> &SnapshotMetadata {
        &self.meta
    }

    /// The chunks in order, as slices of the mapped file.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.chunks.iter().map(|&(s, e)| &self.map[s..e])
    }
}
