//! A backend that sells an existing OpenAI-compatible server's time: llama.cpp's
//! `llama-server`, `llama-cpp-python[server]`, Ollama, vLLM (feature `openai`).
//!
//! Generation is `POST {base_url}/chat/completions` with `stream: true`, read as server-sent
//! events. The contract's token counts come from the server's own tokenizer:
//!
//! - **prompt tokens** from a one-token probe (`max_tokens: 1`, whose `usage.prompt_tokens` is
//!   the rendered prompt's size), cached per conversation, so budgets are checked before the
//!   real generation; servers with a prompt cache (llama.cpp's) reuse the evaluated prompt;
//! - **completion tokens** from the final `usage` when the server reports it
//!   (`stream_options.include_usage`), else one per streamed content chunk (what llama.cpp
//!   sends). The last piece of text is held back until the end so that the `Text` events' counts
//!   add up to the reported total exactly.
//!
//! Dropping the stream closes the connection, which stops the server's generation.
//!
//! ```no_run
//! # async fn run() -> Result<(), chainference_server::BackendError> {
//! use chainference_server::openai::{OpenAiBackend, OpenAiConfig};
//! use chainference_server::{Generation, InferenceBackendExt};
//!
//! let backend = OpenAiBackend::new(OpenAiConfig::new(
//!     "http://127.0.0.1:8080/v1",
//!     "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1", // the id offered on chain
//!     "smollm2",                                   // the name the server knows it by
//! ))?;
//! let (text, usage) = backend.complete(Generation::user("What is the capital of France?", 256)).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chainference_core::prompt::{ChatMessage, Role};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::backend::{
    BackendError, FinishReason, Generation, GenerationEvent, GenerationStream, InferenceBackend, Usage,
};

/// Where the server is and what it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// The API root, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The canonical model id this backend serves on chain.
    pub model_id: String,
    /// The model name in the server's API (`model` in requests).
    pub remote_model: String,
    /// A bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// How long to wait to connect and for each response.
    pub timeout: Duration,
    /// Send `top_k` and `repeat_penalty` (llama.cpp and vLLM accept them; strict OpenAI
    /// servers reject unknown fields).
    pub extended_sampling: bool,
}

impl OpenAiConfig {
    /// A server at `base_url` serving `remote_model`, sold on chain as `model_id`.
    pub fn new(base_url: impl Into<String>, model_id: impl Into<String>, remote_model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            model_id: model_id.into(),
            remote_model: remote_model.into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            extended_sampling: true,
        }
    }
}

/// The OpenAI-compatible HTTP backend.
pub struct OpenAiBackend {
    http: reqwest::Client,
    config: OpenAiConfig,
    /// Prompt token counts by rendered conversation (bounded).
    prompt_cache: Mutex<HashMap<String, u32>>,
}

const PROMPT_CACHE_ENTRIES: usize = 256;

impl OpenAiBackend {
    /// A backend for `config` (no request is made until it is used).
    pub fn new(config: OpenAiConfig) -> Result<Self, BackendError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .build()
            .map_err(|err| BackendError::Load(format!("HTTP client: {err}")))?;
        Ok(OpenAiBackend { http, config, prompt_cache: Mutex::new(HashMap::new()) })
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The model names the server lists at `GET /models`.
    pub async fn remote_models(&self) -> Result<Vec<String>, BackendError> {
        let response = self.authorized(self.http.get(format!("{}/models", self.config.base_url))).send().await;
        let body = read_json(response).await?;
        Ok(at(&body, "/data")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| at(m, "/id").as_str().map(str::to_string))
            .collect())
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn body(&self, messages: &[ChatMessage], job: Option<&Generation>, max_tokens: u32, stream: bool) -> Value {
        let messages: Vec<Value> =
            messages.iter().map(|m| json!({ "role": role_name(m.role), "content": m.content })).collect();
        let sampling = job.map(|job| job.sampling).unwrap_or_default();
        let mut body = serde_json::Map::new();
        body.insert("model".into(), json!(self.config.remote_model));
        body.insert("messages".into(), Value::Array(messages));
        body.insert("max_tokens".into(), json!(max_tokens));
        body.insert("stream".into(), json!(stream));
        body.insert("temperature".into(), json!(sampling.temperature));
        body.insert("top_p".into(), json!(sampling.top_p));
        body.insert("seed".into(), json!(sampling.seed));
        if stream {
            body.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        if self.config.extended_sampling {
            // 1 = off for llama.cpp's penalty; 0 = off for top-k (llama.cpp reads 0 as "all").
            body.insert("top_k".into(), json!(sampling.top_k));
            body.insert("repeat_penalty".into(), json!(sampling.repetition_penalty));
        }
        Value::Object(body)
    }

    async fn probe_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError> {
        let probe = self.body(messages, None, 1, false);
        let key = serde_json::to_string(at(&probe, "/messages")).unwrap_or_default();
        if let Some(tokens) = self.prompt_cache.lock().ok().and_then(|cache| cache.get(&key).copied()) {
            return Ok(tokens);
        }
        let request = self.http.post(format!("{}/chat/completions", self.config.base_url));
        let response = self.authorized(request).json(&probe).send().await;
        let body = read_json(response).await?;
        let tokens = at(&body, "/usage/prompt_tokens")
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| BackendError::Inference(format!("the server reported no prompt usage: {body}")))?;
        if let Ok(mut cache) = self.prompt_cache.lock() {
            if cache.len() >= PROMPT_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, tokens);
        }
        Ok(tokens)
    }
}

/// The value at a JSON pointer, `Null` when absent.
fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// The JSON body of a successful response, or the server's error as a [`BackendError`].
async fn read_json(response: Result<reqwest::Response, reqwest::Error>) -> Result<Value, BackendError> {
    let response = response.map_err(unreachable_server)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable_server)?;
    if !status.is_success() {
        return Err(remote_error(status, &text));
    }
    serde_json::from_str(&text)
        .map_err(|err| BackendError::Inference(format!("the server sent invalid JSON ({err}): {text}")))
}

fn unreachable_server(err: reqwest::Error) -> BackendError {
    BackendError::Unavailable(err.to_string())
}

fn remote_error(status: reqwest::StatusCode, body: &str) -> BackendError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| at(&v, "/error/message").as_str().or(at(&v, "/detail").as_str()).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(500).collect());
    BackendError::Inference(format!("the server answered {status}: {message}"))
}

#[async_trait::async_trait]
impl InferenceBackend for OpenAiBackend {
    fn model_id(&self) -> &str {
        &self.config.model_id
    }

    async fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError> {
        self.probe_prompt_tokens(messages).await
    }

    async fn generate(&self, job: Generation) -> Result<GenerationStream, BackendError> {
        let prompt_tokens = self.probe_prompt_tokens(&job.messages).await?;
        if prompt_tokens >= job.max_tokens {
            return Err(BackendError::PromptTooLong { prompt_tokens, max_tokens: job.max_tokens });
        }
        let mut limit = job.max_tokens.saturating_sub(prompt_tokens);
        if job.max_completion_tokens > 0 {
            limit = limit.min(job.max_completion_tokens);
        }
        let body = self.body(&job.messages, Some(&job), limit, true);
        let request = self.http.post(format!("{}/chat/completions", self.config.base_url));
        let response = self.authorized(request).json(&body).send().await.map_err(unreachable_server)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(remote_error(status, &text));
        }
        let bytes = response.bytes_stream();
        let state = SseState {
            bytes: Box::pin(bytes),
            buffer: Vec::new(),
            held: None,
            counted: 0,
            finish: None,
            reported: None,
            ended: false,
            done: false,
            started: false,
        };
        let events = futures::stream::unfold(state, move |mut state| async move {
            let event = state.next_event(prompt_tokens, limit).await?;
            Some((event, state))
        });
        Ok(Box::pin(events))
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Reads server-sent events into generation events.
struct SseState {
    bytes: ByteStream,
    buffer: Vec<u8>,
    /// The last text piece, held back until the end (see the module docs).
    held: Option<String>,
    /// Tokens in `Text` events sent so far.
    counted: u32,
    finish: Option<FinishReason>,
    /// `usage.completion_tokens` if the server sent it.
    reported: Option<u32>,
    /// The body ended (or said `[DONE]`).
    ended: bool,
    done: bool,
    started: bool,
}

impl SseState {
    async fn next_event(&mut self, prompt_tokens: u32, limit: u32) -> Option<Result<GenerationEvent, BackendError>> {
        if !self.started {
            self.started = true;
            return Some(Ok(GenerationEvent::Prompt { tokens: prompt_tokens }));
        }
        loop {
            if self.done {
                return None;
            }
            if self.ended {
                return Some(Ok(self.last_events(prompt_tokens, limit)));
            }
            let data = match self.next_data().await {
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
                Ok(None) if self.finish.is_none() => {
                    // Neither `[DONE]` nor a finish reason: the answer was cut off, not finished.
                    self.done = true;
                    return Some(Err(BackendError::Unavailable("the stream ended before the answer did".into())));
                }
                Ok(None) => {
                    self.ended = true;
                    continue;
                }
                Ok(Some(data)) if data.trim() == "[DONE]" => {
                    self.ended = true;
                    continue;
                }
                Ok(Some(data)) => data,
            };
            let chunk: Value = match serde_json::from_str(&data) {
                Ok(chunk) => chunk,
                Err(err) => {
                    self.done = true;
                    return Some(Err(BackendError::Inference(format!("bad event ({err}): {data}"))));
                }
            };
            if let Some(message) = at(&chunk, "/error/message").as_str().or_else(|| at(&chunk, "/error").as_str()) {
                self.done = true;
                return Some(Err(BackendError::Inference(format!("the server failed mid-answer: {message}"))));
            }
            if let Some(tokens) = at(&chunk, "/usage/completion_tokens").as_u64() {
                self.reported = u32::try_from(tokens).ok();
            }
            let choice = at(&chunk, "/choices/0");
            match at(choice, "/finish_reason").as_str() {
                Some("length") => self.finish = Some(FinishReason::Length),
                Some(_) => self.finish = Some(FinishReason::Stop),
                None => {}
            }
            let content = at(choice, "/delta/content").as_str().unwrap_or_default();
            if content.is_empty() {
                continue;
            }
            // Send the piece held before (one token), hold this one.
            if let Some(previous) = self.held.replace(content.to_string()) {
                self.counted = self.counted.saturating_add(1);
                return Some(Ok(GenerationEvent::Text { text: previous, tokens: 1 }));
            }
        }
    }

    /// After the body ended: the held piece, carrying whatever the reported total leaves (at
    /// least one token, never past the limit), then `Done`.
    fn last_events(&mut self, prompt_tokens: u32, limit: u32) -> GenerationEvent {
        if let Some(text) = self.held.take() {
            let at_least = self.counted.saturating_add(1);
            let total = self.reported.unwrap_or(at_least).clamp(at_least, limit.max(at_least));
            let tokens = total.saturating_sub(self.counted);
            self.counted = total;
            return GenerationEvent::Text { text, tokens };
        }
        self.done = true;
        let finish =
            self.finish.unwrap_or(if self.counted >= limit { FinishReason::Length } else { FinishReason::Stop });
        GenerationEvent::Done(Usage { prompt_tokens, completion_tokens: self.counted, finish })
    }

    /// The next `data:` payload, `None` at the end of the body.
    async fn next_data(&mut self) -> Result<Option<String>, BackendError> {
        loop {
            // Events are separated by a blank line; `data:` lines carry the payload.
            if let Some(end) = find_event_end(&self.buffer) {
                let raw: Vec<u8> = self.buffer.drain(..end.1).collect();
                let event = String::from_utf8_lossy(raw.get(..end.0).unwrap_or_default()).into_owned();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d)))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Ok(Some(data.join("\n")));
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(err)) => return Err(BackendError::Unavailable(format!("the stream broke: {err}"))),
                None => {
                    if self.buffer.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    // A last event without its blank line.
                    self.buffer.extend_from_slice(b"\n\n");
                }
            }
        }
    }
}

/// `(end of the event, end including its separator)` of the first complete event.
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, i.saturating_add(2)));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i.saturating_add(4)));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
