//! The snapshot file: a group's state-machine rows and graph-dump files in one checksummed
//! stream ([`write_snapshot`]), read back entry by entry (`read_snapshot`). What a snapshot
//! holds and how it is installed is the state machine's business; this is only the format.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::storage::{Storage, Table};
use quiver_core::{Error, Result};

/// The first bytes of a snapshot file.
const SNAPSHOT_MAGIC: &[u8] = b"QSNAP3";
/// The table byte that starts a file entry (a derived file, such as a segment file).
const SNAPSHOT_FILE: u8 = 0xfe;
/// The table byte that starts a snapshot's trailer.
const SNAPSHOT_END: u8 = 0xff;

/// Writes a snapshot of `state` (a checkpoint) and the derived files under `derived` to `out`:
/// - the magic;
/// - per row of the state-machine tables: the table's tag ([`Table::tag`]), a u32 key length, the key, a u32 value
///   length and the value;
/// - per file under `derived`: `SNAPSHOT_FILE`, a u32 length and its `/`-separated path
///   relative to `derived`, a u64 length and its bytes;
/// - `SNAPSHOT_END`, the u64 count of rows and files, and the CRC-32 of everything before it.
///
/// Streams: nothing is held in memory beyond one row.
pub fn write_snapshot(state: &dyn Storage, derived: &Path, out: &mut impl Write) -> Result<()> {
    let io = |e: std::io::Error| Error::Storage(format!("write snapshot: {e}"));
    let mut out = Checksummed {
        inner: out,
        crc: crc32fast::Hasher::new(),
    };
    let mut entries = 0u64;
    out.write_all(SNAPSHOT_MAGIC).map_err(io)?;
    for table in Table::STATE_MACHINE {
        let tag = table.tag();
        state.for_each(table, b"", &mut |k, v| {
            out.write_all(&[tag]).map_err(io)?;
            for part in [k, v] {
                out.write_all(&(part.len() as u32).to_be_bytes())
                    .map_err(io)?;
                out.write_all(part).map_err(io)?;
            }
            entries += 1;
            Ok(true)
        })?;
    }
    for (relative, path) in files_under(derived).map_err(io)? {
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        out.write_all(&[SNAPSHOT_FILE]).map_err(io)?;
        out.write_all(&(relative.len() as u32).to_be_bytes())
            .map_err(io)?;
        out.write_all(relative.as_bytes()).map_err(io)?;
        out.write_all(&len.to_be_bytes()).map_err(io)?;
        let copied = std::io::copy(&mut (&mut file).take(len), &mut out).map_err(io)?;
        if copied != len {
            return Err(Error::Storage(format!(
                "write snapshot: {} changed while being read",
                path.display()
            )));
        }
        entries += 1;
    }
    out.write_all(&[SNAPSHOT_END]).map_err(io)?;
    let crc = out.crc.clone().finalize();
    let out = out.inner;
    out.write_all(&entries.to_be_bytes()).map_err(io)?;
    out.write_all(&crc.to_be_bytes()).map_err(io)?;
    out.flush().map_err(io)
}

/// Every file under `root` (none if it does not exist), sorted, with its `/`-separated path
/// relative to `root`.
fn files_under(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            entries => entries?,
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push((parts.join("/"), path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A relative path read from a snapshot, refused unless it stays below the directory it is
/// written under.
fn relative_path(bytes: Vec<u8>) -> Option<PathBuf> {
    let text = String::from_utf8(bytes).ok()?;
    let path = PathBuf::from(&text);
    let plain = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && !text.is_empty()).then_some(path)
}

/// A reader or writer that keeps the CRC-32 of what passed through it.
struct Checksummed<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One entry of a snapshot, as [`read_snapshot`] hands it over.
pub(crate) enum SnapshotEntry<'a> {
    Row(Table, Vec<u8>, Vec<u8>),
    /// A derived file (a segment's): its path relative to the derived root, and its bytes.
    File(PathBuf, &'a mut dyn Read),
}

/// Reads the entries of a snapshot written by [`write_snapshot`], handing each to `entry`. A
/// file that is cut short, altered, or goes on past its trailer is an error, which may come
/// after some entries were handed over.
pub(crate) fn read_snapshot(
    input: impl Read,
    entry: &mut dyn FnMut(SnapshotEntry<'_>) -> Result<()>,
) -> Result<()> {
    let corrupt = |what: &str| Error::Storage(format!("corrupt snapshot: {what}"));
    let mut input = Checksummed {
        inner: std::io::BufReader::new(input),
        crc: crc32fast::Hasher::new(),
    };
    // (grows as bytes arrive, so a corrupt length cannot make it allocate gigabytes up front)
    let take = |input: &mut Checksummed<_>, n: usize, what: &str| -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        match (&mut *input).take(n as u64).read_to_end(&mut bytes) {
            Ok(read) if read == n => Ok(bytes),
            _ => Err(corrupt(what)),
        }
    };
    if take(&mut input, SNAPSHOT_MAGIC.len(), "too short")? != SNAPSHOT_MAGIC {
        return Err(corrupt("not a quiver snapshot"));
    }
    let mut entries = 0u64;
    loop {
        let tag = take(&mut input, 1, "no trailer")?[0];
        if tag == SNAPSHOT_END {
            break;
        }
        let part = |input: &mut Checksummed<_>| -> Result<Vec<u8>> {
            let len = take(input, 4, "truncated entry")?;
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            take(input, len, "truncated entry")
        };
        if tag == SNAPSHOT_FILE {
            let path = relative_path(part(&mut input)?).ok_or_else(|| corrupt("bad file path"))?;
            let len = take(&mut input, 8, "truncated entry")?;
            let len = u64::from_be_bytes(len.try_into().expect("8 bytes"));
            let mut bytes = (&mut input).take(len);
            entry(SnapshotEntry::File(path, &mut bytes))?;
            // whatever the handler left unread
            std::io::copy(&mut bytes, &mut std::io::sink())
                .map_err(|_| corrupt("truncated file"))?;
            if bytes.limit() > 0 {
                return Err(corrupt("truncated file"));
            }
        } else {
            let table = Table::from_tag(tag)
                .filter(|t| Table::STATE_MACHINE.contains(t))
                .ok_or_else(|| corrupt("unknown table"))?;
            let key = part(&mut input)?;
            let value = part(&mut input)?;
            entry(SnapshotEntry::Row(table, key, value))?;
        }
        entries += 1;
    }
    let crc = input.crc.clone().finalize();
    let trailer = take(&mut input, 12, "truncated trailer")?;
    if trailer[..8] != entries.to_be_bytes() || trailer[8..] != crc.to_be_bytes() {
        return Err(corrupt("entry count or checksum does not match"));
    }
    match input.read(&mut [0u8; 1]) {
        Ok(0) => Ok(()),
        _ => Err(corrupt("bytes after the trailer")),
    }
}
