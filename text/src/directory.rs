//! A tantivy [`Directory`] whose files live in a [`BlobStore`], under a key prefix.
//!
//! A file is stored in chunks of [`CHUNK_BYTES`] keyed `prefix ++ path ++ 0x00 ++ chunk (u32,
//! big-endian)`; chunk 0 exists for every file, so an empty file exists too. tantivy writes a
//! segment's files once and never changes them (only `meta.json` and `.managed.json` are
//! replaced, through `atomic_write`), so a file is read from the store once, whole, and then
//! served from memory; a file written is written in one atomic store write when tantivy
//! terminates its writer. Locks are held in memory, not in the store, so a crashed process
//! leaves none behind; a blocking one (tantivy's meta lock, taken by a reader's reload and by
//! the writer's file cleanup) waits for its holder, as tantivy's own directories do.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, DirectoryLock, FileHandle, FileSlice, Lock, TerminatingWrite, WatchCallback,
    WatchCallbackList, WatchHandle, WritePtr,
};
use tantivy::{Directory, HasLen};

use crate::store::BlobStore;

/// The size of a stored chunk of a file.
pub const CHUNK_BYTES: usize = 256 << 10;

/// The file tantivy replaces to publish a commit.
const META_FILE: &str = "meta.json";

/// How long a blocking lock waits for its holder (tantivy's own directories retry for 10 s).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A tantivy directory in a blob store. Clones share their state.
#[derive(Clone, Debug)]
pub struct BlobDirectory {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn BlobStore>,
    prefix: Vec<u8>,
    /// Files read or written, whole.
    files: RwLock<HashMap<PathBuf, FileSlice>>,
    /// Files being written.
    writing: Mutex<HashSet<PathBuf>>,
    /// Locks held (by this process: they are not stored), and the signal that one was released.
    locks: Mutex<HashSet<PathBuf>>,
    released: Condvar,
    watchers: WatchCallbackList,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobDirectory")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("files", &self.files.read().len())
            .finish()
    }
}

impl BlobDirectory {
    /// The directory of the files under `prefix` in `store`. No other directory in the store
    /// may have a prefix that starts with this one (give each a terminated prefix, such as a
    /// fixed-width id).
    pub fn new(store: Arc<dyn BlobStore>, prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                prefix: prefix.into(),
                files: RwLock::default(),
                writing: Mutex::default(),
                locks: Mutex::default(),
                released: Condvar::new(),
                watchers: WatchCallbackList::default(),
            }),
        }
    }

    /// Bytes of the files held in memory (read or written since the directory was made).
    pub fn cached_bytes(&self) -> usize {
        self.shared.files.read().values().map(|f| f.len()).sum()
    }
}

impl Shared {
    /// The key prefix of `path`'s chunks.
    fn file_prefix(&self, path: &Path) -> io::Result<Vec<u8>> {
        let name = path.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?} is not UTF-8"),
            )
        })?;
        if name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} holds a NUL byte"),
            ));
        }
        let mut key = self.prefix.clone();
        key.extend_from_slice(name.as_bytes());
        key.push(0);
        Ok(key)
    }

    fn chunk_key(file_prefix: &[u8], chunk: u32) -> Vec<u8> {
        let mut key = file_prefix.to_vec();
        key.extend_from_slice(&chunk.to_be_bytes());
        key
    }

    /// The stored chunks of `path`, in order (none when it does not exist). (No other file's
    /// key starts with `path ++ 0x00`: paths hold no NUL.)
    fn stored_chunks(&self, path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.store.scan(&self.file_prefix(path)?)
    }

    /// The keys of `path`'s stored chunks: from its length when it is in memory, else from the
    /// store.
    fn chunk_keys(&self, path: &Path) -> io::Result<Vec<Vec<u8>>> {
        if let Some(file) = self.files.read().get(path) {
            let prefix = self.file_prefix(path)?;
            let chunks = file.len().div_ceil(CHUNK_BYTES).max(1);
            return Ok((0..chunks as u32)
                .map(|i| Self::chunk_key(&prefix, i))
                .collect());
        }
        Ok(self
            .stored_chunks(path)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// `path` read whole from the store, if it is there.
    fn load(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let prefix = self.file_prefix(path)?.len();
        let chunks = self.stored_chunks(path)?;
        if chunks.is_empty() {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(chunks.iter().map(|(_, v)| v.len()).sum());
        for (i, (key, value)) in chunks.iter().enumerate() {
            let number = <[u8; 4]>::try_from(&key[prefix..])
                .ok()
                .map(u32::from_be_bytes);
            if number != Some(i as u32) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{path:?} is missing its chunk {i}"),
                ));
            }
            bytes.extend_from_slice(value);
        }
        Ok(Some(bytes))
    }

    /// Stores `data` as `path` in one store write, removing the chunks `stale` (those of an
    /// older, longer version that `data`'s chunks do not overwrite).
    fn store(&self, path: &Path, data: Vec<u8>, stale: Vec<Vec<u8>>) -> io::Result<()> {
        let prefix = self.file_prefix(path)?;
        let chunks: Vec<&[u8]> = match data.is_empty() {
            true => vec![&[]],
            false => data.chunks(CHUNK_BYTES).collect(),
        };
        let puts: Vec<(Vec<u8>, Vec<u8>)> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (Self::chunk_key(&prefix, i as u32), c.to_vec()))
            .collect();
        self.store.write(puts, stale)?;
        self.files
            .write()
            .insert(path.to_path_buf(), FileSlice::from(data));
        Ok(())
    }
}

fn read_error(path: &Path, e: io::Error) -> OpenReadError {
    OpenReadError::IoError {
        io_error: Arc::new(e),
        filepath: path.to_path_buf(),
    }
}

impl Directory for BlobDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(self.open_read(path)?))
    }

    fn open_read(&self, path: &Path) -> Result<FileSlice, OpenReadError> {
        if let Some(file) = self.shared.files.read().get(path) {
            return Ok(file.clone());
        }
        let bytes = self
            .shared
            .load(path)
            .map_err(|e| read_error(path, e))?
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_path_buf()))?;
        let file = FileSlice::from(bytes);
        self.shared
            .files
            .write()
            .insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        let io_error = |e: io::Error| DeleteError::IoError {
            io_error: Arc::new(e),
            filepath: path.to_path_buf(),
        };
        let keys = self.shared.chunk_keys(path).map_err(io_error)?;
        let cached = self.shared.files.write().remove(path).is_some();
        if keys.is_empty() && !cached {
            return Err(DeleteError::FileDoesNotExist(path.to_path_buf()));
        }
        self.shared.store.write(Vec::new(), keys).map_err(io_error)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        if self.shared.files.read().contains_key(path) {
            return Ok(true);
        }
        let prefix = self
            .shared
            .file_prefix(path)
            .map_err(|e| read_error(path, e))?;
        let first = Shared::chunk_key(&prefix, 0);
        Ok(self
            .shared
            .store
            .get(&first)
            .map_err(|e| read_error(path, e))?
            .is_some())
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let exists = self.exists(path).map_err(|e| OpenWriteError::IoError {
            io_error: Arc::new(io::Error::other(e.to_string())),
            filepath: path.to_path_buf(),
        })?;
        if exists || !self.shared.writing.lock().insert(path.to_path_buf()) {
            return Err(OpenWriteError::FileAlreadyExists(path.to_path_buf()));
        }
        Ok(BufWriter::new(Box::new(BlobWriter {
            directory: self.clone(),
            path: path.to_path_buf(),
            data: Vec::new(),
        })))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let file = self.open_read(path)?;
        let bytes = file.read_bytes().map_err(|e| read_error(path, e))?;
        Ok(bytes.as_slice().to_vec())
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let chunks = data.len().div_ceil(CHUNK_BYTES).max(1);
        // the older version's chunks past the new one's
        let stale = self
            .shared
            .chunk_keys(path)?
            .into_iter()
            .skip(chunks)
            .collect();
        self.shared.store(path, data.to_vec(), stale)?;
        if path == Path::new(META_FILE) {
            // the receiver of the callbacks' outcome is dropped: nobody waits for them
            drop(self.shared.watchers.broadcast());
        }
        Ok(())
    }

    fn sync_directory(&self) -> io::Result<()> {
        // every store write is already ordered after those before it
        Ok(())
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let mut held = self.shared.locks.lock();
        while held.contains(&lock.filepath) {
            let gave_up = !lock.is_blocking
                || self
                    .shared
                    .released
                    .wait_until(&mut held, deadline)
                    .timed_out();
            if gave_up && held.contains(&lock.filepath) {
                return Err(LockError::LockBusy);
            }
        }
        held.insert(lock.filepath.clone());
        drop(held);
        Ok(DirectoryLock::from(Box::new(HeldLock {
            directory: self.clone(),
            path: lock.filepath.clone(),
        })))
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(self.shared.watchers.subscribe(watch_callback))
    }
}

/// A lock held in memory; released when dropped.
struct HeldLock {
    directory: BlobDirectory,
    path: PathBuf,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.directory.shared.locks.lock().remove(&self.path);
        self.directory.shared.released.notify_all();
    }
}

/// A file being written: held in memory, stored whole when terminated.
struct BlobWriter {
    directory: BlobDirectory,
    path: PathBuf,
    data: Vec<u8>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for BlobWriter {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        // a new file (open_write refuses one that exists): no older chunks to remove
        let data = std::mem::take(&mut self.data);
        self.directory.shared.store(&self.path, data, Vec::new())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.directory.shared.writing.lock().remove(&self.path);
    }
}
