//! The collector's write-ahead log: acknowledged events live here, on local disk and
//! fsynced, until a Delta commit holds them.
//!
//! A log is a folder of segment files `wal-<first sequence>.log`. A record is
//! `[payload length: u32 LE][crc32 of sequence and payload: u32 LE][sequence: u64 LE]
//! [payload]`; sequences increase by one per record across segments. Appends are
//! grouped: [`Wal::append`] writes any number of records and fsyncs once, so
//! concurrent requests share one fsync. On open, every complete record is read back;
//! a torn record at the end of the last segment (a write that never returned) is cut
//! off. Segments whose records are all in the lake are deleted by
//! [`Wal::release_through`].
//!
//! One process at a time has a log open: [`Wal::open`] takes an exclusive lock on the
//! folder's `lock` file (released by the kernel when the process ends, however it
//! ends) and fails with [`LakeError::WalInUse`] while another holds it.
//!
//! The log stores opaque bytes; it knows nothing of events, HTTP or Delta.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{LakeError, Result};

const HEADER: usize = 16;
/// Records larger than this are refused (and never read back as valid).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// An open write-ahead log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// `(first sequence, path, bytes)` of every segment, oldest first; the last is open.
    segments: Vec<(u64, PathBuf, u64)>,
    file: File,
    next_seq: u64,
    segment_bytes: u64,
    /// The folder's `lock` file, locked while the log is open.
    _lock: File,
    /// Set when a failed append could not be cut back off the open segment: the log
    /// refuses appends until it is opened again (which cuts the torn tail).
    broken: Option<String>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LakeError {
    let what = what.into();
    move |source| LakeError::Io { what, source }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.log"))
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads the complete records of one segment; returns them and the byte length of the
/// valid prefix.
fn read_segment(path: &Path) -> Result<(Vec<WalRecord>, u64)> {
    let mut reader =
        BufReader::new(File::open(path).map_err(io(format!("opening {}", path.display())))?);
    let mut records = Vec::new();
    let mut valid = 0u64;
    loop {
        let mut header = [0u8; HEADER];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&header[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        if len > MAX_RECORD_BYTES {
            break;
        }
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).is_err() || checksum(seq, &payload) != crc {
            break;
        }
        valid += (HEADER + len) as u64;
        records.push(WalRecord { seq, payload });
    }
    Ok((records, valid))
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`; returns it and every record it holds.
    /// A new segment is started once the current one exceeds `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Wal, Vec<WalRecord>)> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LakeError::WalInUse {
                    dir: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io(format!("locking {}", lock_path.display()))(e));
            }
        }
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(format!("listing {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let seq = name
                    .strip_prefix("wal-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((seq, p))
            })
            .collect();
        found.sort();
        let mut records = Vec::new();
        let mut segments = Vec::new();
        let count = found.len();
        for (i, (first, path)) in found.into_iter().enumerate() {
            let (mut recs, valid) = read_segment(&path)?;
            let len = std::fs::metadata(&path)
                .map_err(io(format!("reading {}", path.display())))?
                .len();
            if valid < len {
                if i + 1 < count {
                    return Err(LakeError::Io {
                        what: format!(
                            "write-ahead log segment {} is damaged before its end",
                            path.display()
                        ),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "bad record"),
                    });
                }
                // A torn write at the very end: never acknowledged, cut it off.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("opening {}", path.display())))?;
                f.set_len(valid)
                    .map_err(io(format!("truncating {}", path.display())))?;
                f.sync_all()
                    .map_err(io(format!("syncing {}", path.display())))?;
            }
            records.append(&mut recs);
            segments.push((first, path, valid));
        }
        let next_seq = records.last().map_or_else(
            || segments.last().map_or(1, |(first, _, _)| *first),
            |r| r.seq + 1,
        );
        let file = match segments.last() {
            Some((_, path, _)) => OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io(format!("opening {}", path.display())))?,
            None => {
                let path = segment_path(dir, next_seq);
                let f = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
                sync_dir(dir)?;
                segments.push((next_seq, path, 0));
                f
            }
        };
        Ok((
            Wal {
                dir: dir.to_owned(),
                segments,
                file,
                next_seq,
                segment_bytes,
                _lock: lock,
                broken: None,
            },
            records,
        ))
    }

    /// The sequence the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes on disk over all segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|(_, _, b)| b).sum()
    }

    /// Appends `payloads` as consecutive records and fsyncs once; returns the sequence of
    /// the first. When this returns `Ok`, every record is durable; when it returns an
    /// error (a full disk, an I/O error), none is: the bytes written are cut off again,
    /// so a later append never lands behind a torn record.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<u64> {
        if let Some(why) = &self.broken {
            return Err(LakeError::Io {
                what: "appending to the write-ahead log".into(),
                source: std::io::Error::other(format!(
                    "an earlier failed write could not be undone ({why}); restart to recover the log"
                )),
            });
        }
        let first = self.next_seq;
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
        for (i, p) in payloads.iter().enumerate() {
            if p.len() > MAX_RECORD_BYTES {
                return Err(LakeError::Io {
                    what: "appending to the write-ahead log".into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "record too large",
                    ),
                });
            }
            let seq = first + i as u64;
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(&checksum(seq, p).to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(p);
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.2 >= self.segment_bytes)
            && let Err(e) = self.roll()
        {
            // The full segment takes the records instead; rolling is tried again next time.
            tracing::warn!("starting a new write-ahead log segment: {e}");
        }
        let what = "writing the write-ahead log";
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.cut_back();
            return Err(io(what)(e));
        }
        self.next_seq += payloads.len() as u64;
        if let Some(last) = self.segments.last_mut() {
            last.2 += buf.len() as u64;
        }
        Ok(first)
    }

    /// After a failed append: truncates the open segment to its last complete record.
    fn cut_back(&mut self) {
        let Some((_, path, valid)) = self.segments.last() else {
            return;
        };
        let undone = self
            .file
            .set_len(*valid)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = undone {
            tracing::error!(
                "cutting a failed write off {}: {e}; the log takes no more records until restarted",
                path.display()
            );
            self.broken = Some(e.to_string());
        }
    }

    /// Starts a new segment.
    fn roll(&mut self) -> Result<()> {
        let path = segment_path(&self.dir, self.next_seq);
        let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        self.file = file;
        self.segments.push((self.next_seq, path, 0));
        sync_dir(&self.dir)
    }

    /// Deletes the segments whose records all have sequences `≤ seq` (they are in the
    /// lake). The open segment is rolled first if it is entirely covered.
    pub fn release_through(&mut self, seq: u64) -> Result<()> {
        // Older segments first: on a full disk their space is what lets the roll work.
        self.remove_covered(seq)?;
        if self.next_seq <= seq + 1 && self.segments.last().is_some_and(|s| s.2 > 0) {
            self.roll()?;
            self.remove_covered(seq)?;
        }
        Ok(())
    }

    /// Deletes the closed segments whose records all have sequences `≤ seq`.
    fn remove_covered(&mut self, seq: u64) -> Result<()> {
        while self.segments.len() > 1 {
            // Segment i holds sequences [first_i, first_{i+1}).
            let next_first = self.segments[1].0;
            if next_first > seq + 1 {
                break;
            }
            let (_, path, _) = self.segments.remove(0);
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_at_a_time_has_a_log_open() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1 << 20).unwrap();
        let e = Wal::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(e, LakeError::WalInUse { .. }), "{e}");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(wal);
        Wal::open(dir.path(), 1 << 20).unwrap();
    }

    #[test]
    fn records_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(records.is_empty());
        assert_eq!(wal.append(&[b"one", b"two"]).unwrap(), 1);
        assert_eq!(wal.append(&[b"three"]).unwrap(), 3);
        drop(wal);
        // A torn write: half a header at the end.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0]).unwrap();
        drop(f);
        let (mut wal, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, [b"one".as_slice(), b"two", b"three"]);
        assert_eq!(records[2].seq, 3);
        assert_eq!(wal.append(&[b"four"]).unwrap(), 4);
        drop(wal);
        let (_, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(records.len(), 4);
    }

    #[test]
    fn a_corrupt_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20).unwrap();
        wal.append(&[b"good", b"flipped"]).unwrap();
        drop(wal);
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let (wal, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(wal.next_seq(), 2);
    }

    #[test]
    fn a_failed_append_stores_nothing_and_later_appends_are_refused_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20).unwrap();
        wal.append(&[b"one"]).unwrap();
        // Every write to /dev/full fails with "no space left", and it cannot be truncated.
        wal.file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let e = wal.append(&[b"two"]).unwrap_err().to_string();
        assert!(e.contains("writing the write-ahead log"), "{e}");
        assert_eq!(wal.next_seq(), 2, "the failed record took no sequence");
        let e = wal.append(&[b"three"]).unwrap_err().to_string();
        assert!(e.contains("restart"), "{e}");
        drop(wal);
        let (mut wal, records) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(wal.append(&[b"two"]).unwrap(), 2);
    }

    #[test]
    fn released_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 10).unwrap();
        for i in 0..5u8 {
            wal.append(&[&[i; 20]]).unwrap();
        }
        let segments = || {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
                .collect();
            found.sort();
            found
        };
        let count = || segments().len();
        // What a reader of the folder finds (the log itself stays open).
        let on_disk = || -> Vec<u64> {
            segments()
                .iter()
                .flat_map(|p| read_segment(p).unwrap().0)
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(
            count(),
            5,
            "one segment per record (the next starts with the next write)"
        );
        wal.release_through(3).unwrap();
        assert_eq!(on_disk(), [4, 5]);
        wal.release_through(5).unwrap();
        drop(wal);
        let (wal, records) = Wal::open(dir.path(), 10).unwrap();
        assert!(records.is_empty());
        assert_eq!(wal.next_seq(), 6, "sequences continue after a full release");
    }
}
