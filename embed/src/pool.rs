//! A pool of threads running one model for many callers: requests wait in a bounded queue (a
//! full one refuses at once), and a thread takes several at a time to embed them in one pass of
//! up to `batch` texts.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use futures_channel::oneshot;

use crate::{EmbedError, Embedder};

/// One request: its texts and where the vectors go.
struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// Threads embedding texts with one model.
pub struct EmbedPool {
    queue: SyncSender<Job>,
    dim: usize,
    model_id: String,
}

impl std::fmt::Debug for EmbedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedPool").field("dim", &self.dim).finish()
    }
}

impl EmbedPool {
    /// `threads` threads (at least one) running `model`, `batch` texts a pass, with room for
    /// `queue` requests waiting.
    pub fn start(model: Embedder, threads: usize, batch: usize, queue: usize) -> Self {
        let dim = model.dim();
        let model_id = model.id().to_owned();
        let model = Arc::new(model);
        let (sender, receiver) = sync_channel::<Job>(queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let (model, receiver) = (model.clone(), receiver.clone());
            let batch = batch.max(1);
            let spawned = std::thread::Builder::new()
                .name(format!("embed {i}"))
                .spawn(move || work(&model, &receiver, batch));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an embedding thread");
            }
        }
        Self {
            queue: sender,
            dim,
            model_id,
        }
    }

    /// What names the model's vectors (see [`Embedder::id`]).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The length of the vectors it makes.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The vectors of `texts`, in their order; refused at once ([`EmbedError::Busy`]) when the
    /// queue is full.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { texts, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EmbedError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Stopped),
        }
        answer.await.map_err(|_| EmbedError::Stopped)?
    }
}

/// A thread's loop: takes a request, and more while they fit in one pass, embeds them together
/// and answers each.
fn work(model: &Embedder, receiver: &Mutex<Receiver<Job>>, batch: usize) {
    loop {
        let mut jobs = Vec::new();
        {
            let Ok(receiver) = receiver.lock() else {
                return;
            };
            let Ok(first) = receiver.recv() else {
                return;
            };
            let mut texts = first.texts.len();
            jobs.push(first);
            while texts < batch {
                match receiver.try_recv() {
                    Ok(job) => {
                        texts += job.texts.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let all: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        let mut vectors = Vec::with_capacity(all.len());
        let mut failed = None;
        for chunk in all.chunks(batch) {
            match model.embed(chunk) {
                Ok(v) => vectors.extend(v),
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        let mut vectors = vectors.into_iter();
        for job in jobs {
            let answer = match &failed {
                Some(e) => Err(EmbedError::Failed(e.clone())),
                None => Ok(vectors.by_ref().take(job.texts.len()).collect()),
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// Where a model is and how to run it, loaded into an [`EmbedPool`] when first asked for: a
/// process without a model serves everything but embeddings, and says why those fail.
pub struct LazyEmbedder {
    model_dir: Option<std::path::PathBuf>,
    python: std::path::PathBuf,
    threads: usize,
    batch: usize,
    queue: usize,
    pool: Mutex<Option<Arc<EmbedPool>>>,
}

impl std::fmt::Debug for LazyEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyEmbedder")
            .field("model_dir", &self.model_dir)
            .finish()
    }
}

impl LazyEmbedder {
    /// The model in `model_dir`, or (when it is empty) the one the Python package ships for
    /// `python`; run by `threads` threads, `batch` texts a pass, `queue` requests waiting.
    pub fn new(
        model_dir: &std::path::Path,
        python: &std::path::Path,
        threads: usize,
        batch: usize,
        queue: usize,
    ) -> Self {
        Self {
            model_dir: (!model_dir.as_os_str().is_empty()).then(|| model_dir.to_path_buf()),
            python: python.to_path_buf(),
            threads,
            batch,
            queue,
            pool: Mutex::new(None),
        }
    }

    /// The running pool, loading the model on the first call (blocking, about a second). A
    /// failure is not remembered: a model installed later is found by the next call.
    pub fn get(&self) -> Result<Arc<EmbedPool>, EmbedError> {
        let mut pool = self.pool.lock().map_err(|_| EmbedError::Stopped)?;
        if let Some(pool) = pool.as_ref() {
            return Ok(pool.clone());
        }
        let dir = crate::find_model_dir(self.model_dir.as_deref(), Some(&self.python))?;
        let started = std::time::Instant::now();
        let model = Embedder::load(&dir)?;
        tracing::info!(
            model_dir = %dir.display(),
            dim = model.dim(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedding model loaded"
        );
        let loaded = Arc::new(EmbedPool::start(
            model,
            self.threads,
            self.batch,
            self.queue,
        ));
        *pool = Some(loaded.clone());
        Ok(loaded)
    }
}
