//! Single-flight streaming fill: one upstream download per digest, written to a temp file
//! while hashing; every client for that digest streams from the growing file as bytes land.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::error::FillError;
use crate::registry::digest::{Digest, Verifier};

/// Progress of one fill, broadcast to its readers.
#[derive(Debug, Clone, Default)]
pub struct FillState {
    /// Bytes written to the temp file so far.
    pub written: u64,
    /// Total size once the upstream said it (Content-Length).
    pub total: Option<u64>,
    /// Whether the upstream answered (size known or not).
    pub started: bool,
    /// `Some(Ok)` once verified and in the cache; `Some(Err)` when it failed.
    pub done: Option<Result<(), FillError>>,
    /// The fill is over: committed to the cache (and accounted for) or failed.
    pub settled: bool,
}

/// One in-flight download.
pub struct Fill {
    pub digest: Digest,
    /// Who the download runs for (`upstream|repo|credential identity`): the same requester
    /// needs no separate confirmation that it may see the bytes.
    pub owner: String,
    file: Arc<std::fs::File>,
    state: watch::Receiver<FillState>,
}

impl Fill {
    /// Bytes written so far (the contiguous prefix).
    pub fn written(&self) -> u64 {
        self.state.borrow().written
    }

    /// The size the upstream announced, once it answered.
    pub fn total(&self) -> Option<u64> {
        self.state.borrow().total
    }

    pub fn subscribe(&self) -> FillReader {
        FillReader {
            file: self.file.clone(),
            state: self.state.clone(),
        }
    }
}

/// A client's view of a fill: waits for bytes and reads them from the shared file.
pub struct FillReader {
    file: Arc<std::fs::File>,
    state: watch::Receiver<FillState>,
}

impl FillReader {
    /// The temp file being filled, for zero-copy readers.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Waits until more than `offset` bytes may be read; the readable length (the last byte
    /// held back until the digest verifies), or `Ok(None)` once a verified fill ends at `offset`.
    pub async fn available_after(&mut self, offset: u64) -> Result<Option<u64>, FillError> {
        loop {
            let (written, done) = {
                let s = self.state.borrow_and_update();
                (s.written, s.done.clone())
            };
            let available = if matches!(done, Some(Ok(()))) {
                written
            } else {
                written.saturating_sub(1)
            };
            if offset < available {
                return Ok(Some(available));
            }
            match done {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(e),
                None => {
                    if self.state.changed().await.is_err() {
                        return Err(FillError::transfer("fill abandoned"));
                    }
                }
            }
        }
    }

    /// Waits until the fill is over: its size once verified and stored, or its failure.
    pub async fn finished(&mut self) -> Result<u64, FillError> {
        loop {
            {
                let s = self.state.borrow_and_update();
                if s.settled {
                    return match &s.done {
                        Some(Ok(())) => Ok(s.written),
                        Some(Err(e)) => Err(e.clone()),
                        None => Err(FillError::transfer("fill abandoned")),
                    };
                }
            }
            if self.state.changed().await.is_err() {
                return Err(FillError::transfer("fill abandoned"));
            }
        }
    }

    /// Waits until the fill is over: its blob committed to the cache, or failed.
    pub async fn settled(&mut self) {
        while !self.state.borrow_and_update().settled {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the upstream answered; returns the size if known, or the failure.
    pub async fn started(&mut self) -> Result<Option<u64>, FillError> {
        loop {
            {
                let s = self.state.borrow_and_update();
                if let Some(Err(e)) = &s.done {
                    return Err(e.clone());
                }
                if s.started || s.done.is_some() {
                    return Ok(s.total.or(if s.done.is_some() {
                        Some(s.written)
                    } else {
                        None
                    }));
                }
            }
            if self.state.changed().await.is_err() {
                return Err(FillError::transfer("fill abandoned"));
            }
        }
    }

    /// The next chunk at `offset` (at most `max` bytes): `Ok(None)` at the end of a verified
    /// blob, `Err` when the fill failed, so the response is cut short, never completed.
    pub async fn read_at(&mut self, offset: u64, max: usize) -> Result<Option<Bytes>, FillError> {
        let Some(available) = self.available_after(offset).await? else {
            return Ok(None);
        };
        let n = ((available - offset) as usize).min(max);
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, offset)
                .map(|_| Some(Bytes::from(buf)))
        })
        .await
        .map_err(|e| FillError::transfer(format!("reading the cache: {e}")))?
        .map_err(|e| FillError::transfer(format!("reading the cache: {e}")))
    }
}

/// The source of a fill's bytes: a stream of chunks and the size the upstream announced; with
/// `rest`, the stream carries only the first part and each further part comes over its own
/// connection (a Range response), written into place.
pub struct Download {
    pub total: Option<u64>,
    pub chunks: Chunks,
    pub rest: Vec<Segment>,
}

pub type Chunks = futures_util::stream::BoxStream<'static, Result<Bytes, FillError>>;

/// One further part of a parallel download: `len` bytes at `offset`.
pub struct Segment {
    pub offset: u64,
    pub len: u64,
    pub chunks: Chunks,
}

/// All fills in flight, by digest.
#[derive(Default)]
pub struct Fills {
    map: Mutex<HashMap<Digest, Arc<Fill>>>,
}

pub enum Joined {
    /// We started the fill; the caller must drive `start` with the download.
    Leader(Arc<Fill>, FillDriver),
    /// Someone else is filling it.
    Follower(Arc<Fill>),
    /// No fill runs and the blob is in the cache (a fill just finished).
    Cached,
}

/// The writer side of a fill, owned by the task that downloads.
pub struct FillDriver {
    tx: watch::Sender<FillState>,
    file: Arc<std::fs::File>,
    tmp: PathBuf,
    digest: Digest,
}

impl FillDriver {
    /// Nobody but the fill table watches this fill any more (every client went away).
    pub fn abandoned(&self) -> bool {
        self.tx.receiver_count() <= 1
    }
}

impl Fills {
    /// The fill running for `digest`, if any.
    pub fn get(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.lock().get(digest).cloned()
    }

    /// Every digest being filled now.
    pub fn digests(&self) -> Vec<Digest> {
        self.lock().keys().cloned().collect()
    }

    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the fill for `digest`, creating it (with a temp file in `tmp_dir`) if none runs
    /// and `cached` (its place in the cache) does not exist: a fill leaves this table only after
    /// its rename, so looking under the lock closes the gap since the caller's own cache check.
    pub fn join(
        &self,
        digest: &Digest,
        owner: &str,
        tmp_dir: &std::path::Path,
        cached: &std::path::Path,
    ) -> std::io::Result<Joined> {
        let mut map = self.lock();
        if let Some(f) = map.get(digest) {
            return Ok(Joined::Follower(f.clone()));
        }
        if cached.exists() {
            return Ok(Joined::Cached);
        }
        let tmp = tmp_dir.join(format!("{}.{}", digest.hex(), std::process::id()));
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .mode(0o600)
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&tmp)?,
        );
        let (tx, rx) = watch::channel(FillState::default());
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            owner: owner.to_string(),
            file: file.clone(),
            state: rx,
        });
        map.insert(digest.clone(), fill.clone());
        Ok(Joined::Leader(
            fill,
            FillDriver {
                tx,
                file,
                tmp,
                digest: digest.clone(),
            },
        ))
    }

    /// Runs a download to completion: write + hash each chunk, announce progress, verify and
    /// release readers, then commit into `final_path`; or delete the temp file and fail every
    /// reader. `verified` runs before the blob can appear in the cache and `committed` before
    /// the fill leaves the table, so no request finds the file without what they record.
    pub async fn drive(
        self: &Arc<Self>,
        driver: FillDriver,
        download: Result<Download, FillError>,
        final_path: PathBuf,
        verified: impl FnOnce(),
        committed: impl FnOnce(u64),
    ) -> Result<u64, FillError> {
        let result = match drive_inner(&driver, download).await {
            Ok(n) => {
                verified();
                // The bytes are verified, so readers may take the last one now; syncing 512 MiB
                // to disk would otherwise sit between every client and the end of its body.
                // Requests arriving meanwhile still join this fill and read the open file.
                driver.tx.send_modify(|s| {
                    s.written = n;
                    s.done = Some(Ok(()));
                });
                commit(&driver, &final_path).await.map(|()| n)
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(n) => {
                committed(*n);
                // Later requests see the cache instead of this fill.
                self.lock().remove(&driver.digest);
                driver.tx.send_modify(|s| s.settled = true);
            }
            Err(e) => {
                // Out of the table first: a request arriving now starts afresh rather than
                // joining a fill that is about to report failure.
                self.lock().remove(&driver.digest);
                let _ = std::fs::remove_file(&driver.tmp);
                // A failed commit after verification leaves readers' (correct) bytes alone.
                driver.tx.send_modify(|s| {
                    if s.done.is_none() {
                        s.done = Some(Err(e.clone()));
                    }
                    s.settled = true;
                });
            }
        }
        result
    }
}

/// Allocates `len` bytes for the temp file up front: a full disk fails the fill before any
/// client waits on it, and the filesystem maps the blocks once instead of page by page.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn reserve(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(std::io::Error::from(std::io::ErrorKind::FileTooLarge));
    };
    // SAFETY: the descriptor is open for the call; mode 0 only allocates within [0, len).
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Filesystems without fallocate (tmpfs on old kernels, some FUSE) just fill as they go.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

/// Without fallocate the file grows as bytes land.
#[cfg(not(target_os = "linux"))]
fn reserve(_: &std::fs::File, _: u64) -> std::io::Result<()> {
    Ok(())
}

/// Makes a verified temp file the cache entry: fsync, rename, fsync the directory, so a crash
/// never leaves a named blob with unsynced contents.
async fn commit(driver: &FillDriver, final_path: &std::path::Path) -> Result<(), FillError> {
    let file = driver.file.clone();
    let tmp = driver.tmp.clone();
    let dest = final_path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        file.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| FillError::transfer(format!("storing the blob: {e}")))?
    .map_err(|e| FillError::transfer(format!("storing the blob: {e}")))
}

/// Writes every part of a parallel download into place as it arrives, and hashes (and releases
/// to readers) the contiguous prefix as it grows: clients still read in order, and nothing is
/// visible before the one digest over the whole blob verifies.
async fn drive_parallel(driver: &FillDriver, download: Download) -> Result<u64, FillError> {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let Some(total) = download.total else {
        return Err(FillError::transfer(
            "a parallel download needs the blob's size",
        ));
    };
    driver.tx.send_modify(|s| {
        s.started = true;
        s.total = Some(total);
    });
    let file = driver.file.clone();
    tokio::task::spawn_blocking(move || reserve(&file, total))
        .await
        .map_err(|e| FillError::transfer(format!("reserving {total} bytes in the cache: {e}")))?
        .map_err(|e| FillError::transfer(format!("reserving {total} bytes in the cache: {e}")))?;
    let first_len = download.rest.first().map_or(total, |s| s.offset);
    let mut parts = vec![(0u64, first_len, download.chunks)];
    parts.extend(
        download
            .rest
            .into_iter()
            .map(|s| (s.offset, s.len, s.chunks)),
    );
    let layout: Vec<(u64, u64)> = parts.iter().map(|(o, l, _)| (*o, *l)).collect();
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new(layout.iter().map(|_| AtomicU64::new(0)).collect());
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (offset, len, mut chunks)) in parts.into_iter().enumerate() {
        let (file, progress, wake) = (driver.file.clone(), progress.clone(), wake.clone());
        tasks.spawn(async move {
            let mut done = 0u64;
            while done < len {
                let chunk = chunks.next().await.ok_or_else(|| {
                    FillError::transfer(format!(
                        "part at {offset} ended after {done} of {len} bytes"
                    ))
                })??;
                let take = (chunk.len() as u64).min(len - done) as usize;
                let part = chunk.slice(..take);
                let (f, at) = (file.clone(), offset + done);
                tokio::task::spawn_blocking(move || f.write_all_at(&part, at))
                    .await
                    .map_err(|e| FillError::transfer(format!("writing the cache: {e}")))?
                    .map_err(|e| FillError::transfer(format!("writing the cache: {e}")))?;
                done += take as u64;
                progress[i].store(done, Ordering::Release);
                wake.notify_one();
            }
            Ok::<(), FillError>(())
        });
    }
    let contiguous = || {
        let mut upto = 0;
        for (i, (offset, len)) in layout.iter().enumerate() {
            let p = progress[i].load(Ordering::Acquire);
            upto = offset + p;
            if p < *len {
                break;
            }
        }
        upto
    };
    let mut verifier = Verifier::new();
    let mut hashed = 0u64;
    loop {
        let upto = contiguous();
        while hashed < upto {
            let n = (upto - hashed).min(1 << 20) as usize;
            let (f, at) = (driver.file.clone(), hashed);
            let buf = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                f.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await
            .map_err(|e| FillError::transfer(format!("reading the cache: {e}")))?
            .map_err(|e| FillError::transfer(format!("reading the cache: {e}")))?;
            verifier.update(&buf);
            hashed += n as u64;
            driver.tx.send_modify(|s| s.written = hashed);
        }
        if hashed >= total {
            break;
        }
        tokio::select! {
            _ = wake.notified() => {}
            joined = tasks.join_next() => match joined {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(FillError::transfer(format!("a part's task failed: {e}"))),
                None => {
                    if contiguous() < total {
                        return Err(FillError::transfer("parts ended before the blob was whole"));
                    }
                }
            },
        }
    }
    let actual = verifier.finish();
    if actual != driver.digest {
        return Err(FillError::transfer(format!(
            "digest mismatch: expected {}, got {actual}",
            driver.digest
        )));
    }
    Ok(total)
}

/// Downloads, writes and verifies; `Ok(size)` once every byte is in the temp file and matches.
async fn drive_inner(
    driver: &FillDriver,
    download: Result<Download, FillError>,
) -> Result<u64, FillError> {
    use futures_util::StreamExt;
    let mut download = download?;
    if !download.rest.is_empty() {
        return drive_parallel(driver, download).await;
    }
    driver.tx.send_modify(|s| {
        s.started = true;
        s.total = download.total;
    });
    if let Some(total) = download.total.filter(|t| *t > 0) {
        let file = driver.file.clone();
        tokio::task::spawn_blocking(move || reserve(&file, total))
            .await
            .map_err(|e| FillError::transfer(format!("reserving {total} bytes in the cache: {e}")))?
            .map_err(|e| {
                FillError::transfer(format!("reserving {total} bytes in the cache: {e}"))
            })?;
    }
    let mut verifier = Verifier::new();
    let mut written: u64 = 0;
    // Batch small network chunks so each disk write and reader wake-up carries real data.
    let mut pending: Vec<u8> = Vec::with_capacity(256 * 1024);
    loop {
        let next = download.chunks.next().await;
        let end = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk?;
            verifier.update(&chunk);
            pending.extend_from_slice(&chunk);
            if let Some(total) = download.total {
                if written + pending.len() as u64 > total {
                    return Err(FillError::transfer(format!(
                        "upstream sent more than the {total} bytes it announced"
                    )));
                }
            }
        }
        if !pending.is_empty() && (end || pending.len() >= 128 * 1024) {
            let file = driver.file.clone();
            let buf = std::mem::take(&mut pending);
            let len = buf.len() as u64;
            let buf = tokio::task::spawn_blocking(move || (&*file).write_all(&buf).map(|_| buf))
                .await
                .map_err(|e| FillError::transfer(format!("writing the cache: {e}")))?
                .map_err(|e| FillError::transfer(format!("writing the cache: {e}")))?;
            pending = buf;
            pending.clear();
            written += len;
            driver.tx.send_modify(|s| s.written = written);
        }
        if end {
            break;
        }
    }
    if let Some(total) = download.total {
        if written != total {
            return Err(FillError::transfer(format!(
                "upstream sent {written} of {total} bytes"
            )));
        }
    }
    let actual = verifier.finish();
    if actual != driver.digest {
        return Err(FillError::transfer(format!(
            "digest mismatch: expected {}, got {actual}",
            driver.digest
        )));
    }
    Ok(written)
}
