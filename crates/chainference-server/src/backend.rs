//! The pluggable inference backend: what a server runs prompts on.
//!
//! ## The contract every [`InferenceBackend`] keeps
//!
//! - [`InferenceBackend::generate`] returns a stream whose first item is
//!   [`GenerationEvent::Prompt`] (the prompt's token count, as the chat template renders it), then
//!   any number of [`GenerationEvent::Text`] in order, then exactly one
//!   [`GenerationEvent::Done`] with the usage; nothing follows `Done` or an error.
//! - Token counts are the model's own tokenizer's: `Text.tokens` sum to
//!   `Usage::completion_tokens`, and `prompt_tokens + completion_tokens <= max_tokens` (the
//!   request's billable budget). A prompt that alone exceeds the budget is
//!   [`BackendError::PromptTooLong`] before anything is generated.
//! - Generation stops at the first stop token (`FinishReason::Stop`, the stop token itself is
//!   neither shown nor counted), or when the budget or `max_completion_tokens` is reached
//!   (`FinishReason::Length`).
//! - Temperature 0 is greedy and deterministic; with a temperature, the same seed gives the same
//!   tokens.
//! - Dropping the stream cancels the generation promptly.

use std::pin::Pin;

use chainference_core::prompt::{ChatMessage, PromptPayload};
use futures::Stream;

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus cut in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Top-k cut; 0 = off.
    pub top_k: u32,
    /// Penalty on tokens already in the context (1 = off).
    pub repetition_penalty: f32,
    /// Seed for sampling.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, repetition_penalty: 1.0, seed: 0 }
    }
}

/// One generation job.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The conversation; the model answers the last message.
    pub messages: Vec<ChatMessage>,
    /// Billable budget: prompt + completion tokens.
    pub max_tokens: u32,
    /// Most completion tokens (0: only the budget limits).
    pub max_completion_tokens: u32,
    /// How to pick tokens.
    pub sampling: Sampling,
}

impl Generation {
    /// The job a decrypted prompt payload asks for, within a request's `max_tokens`.
    pub fn from_payload(payload: &PromptPayload, max_tokens: u32) -> Self {
        Generation {
            messages: payload.messages.clone(),
            max_tokens,
            max_completion_tokens: payload.max_completion_tokens,
            sampling: Sampling {
                temperature: f32::from(payload.temperature_milli) / 1000.0,
                top_p: f32::from(payload.top_p_bps) / 10_000.0,
                top_k: u32::from(payload.top_k),
                repetition_penalty: 1.0,
                seed: payload.seed,
            },
        }
    }

    /// Greedy generation of an answer to one user message.
    pub fn user(text: impl Into<String>, max_tokens: u32) -> Self {
        Self::from_payload(&PromptPayload::user(text), max_tokens)
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// The model emitted a stop token.
    Stop,
    /// The budget or `max_completion_tokens` ran out.
    Length,
}

/// Token counts of a finished generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, as the chat template renders the messages.
    pub prompt_tokens: u32,
    /// Generated tokens (stop token excluded).
    pub completion_tokens: u32,
    /// Why it stopped.
    pub finish: FinishReason,
}

impl Usage {
    /// What a server bills: prompt + completion tokens (see docs/protocol.md).
    pub fn billed_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens).saturating_add(u64::from(self.completion_tokens))
    }
}

/// What a generation stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GenerationEvent {
    /// The prompt was tokenized and evaluated.
    Prompt {
        /// Its tokens.
        tokens: u32,
    },
    /// More text.
    Text {
        /// The text (whole UTF-8 characters).
        text: String,
        /// Tokens it came from.
        tokens: u32,
    },
    /// The end.
    Done(Usage),
}

/// A backend failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend does not serve this model.
    #[error("model {0} is not served by this backend")]
    UnknownModel(String),
    /// The prompt alone needs more tokens than the budget allows.
    #[error("the prompt needs {prompt_tokens} tokens but the budget is {max_tokens}")]
    PromptTooLong {
        /// Tokens the prompt needs.
        prompt_tokens: u32,
        /// The budget.
        max_tokens: u32,
    },
    /// The model could not be loaded.
    #[error("loading the model: {0}")]
    Load(String),
    /// The messages could not be rendered by the chat template.
    #[error("chat template: {0}")]
    Template(String),
    /// Tokenizing or decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Inference failed.
    #[error("inference: {0}")]
    Inference(String),
    /// A remote backend could not be reached, or its connection broke.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// A stream of generation events.
pub type GenerationStream = Pin<Box<dyn Stream<Item = Result<GenerationEvent, BackendError>> + Send>>;

/// Something that answers prompts. See the module docs for the contract.
#[async_trait::async_trait]
pub trait InferenceBackend: Send + Sync {
    /// The canonical model id it serves (what servers offer on chain).
    fn model_id(&self) -> &str;

    /// Tokens the messages take as a prompt (for checking a budget before locking).
    async fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError>;

    /// Starts generating.
    async fn generate(&self, job: Generation) -> Result<GenerationStream, BackendError>;
}

macro_rules! forward_backend {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl<T: InferenceBackend + ?Sized> InferenceBackend for $ty {
            fn model_id(&self) -> &str {
                (**self).model_id()
            }
            async fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError> {
                (**self).prompt_tokens(messages).await
            }
            async fn generate(&self, job: Generation) -> Result<GenerationStream, BackendError> {
                (**self).generate(job).await
            }
        }
    };
}

forward_backend!(std::sync::Arc<T>);
forward_backend!(Box<T>);

/// Conveniences over any backend.
#[async_trait::async_trait]
pub trait InferenceBackendExt: InferenceBackend {
    /// Runs a generation to the end: the whole text and its usage.
    async fn complete(&self, job: Generation) -> Result<(String, Usage), BackendError> {
        use futures::StreamExt;
        let mut stream = self.generate(job).await?;
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            match event? {
                GenerationEvent::Text { text: more, .. } => text.push_str(&more),
                GenerationEvent::Done(usage) => return Ok((text, usage)),
                GenerationEvent::Prompt { .. } => {}
            }
        }
        Err(BackendError::Inference("the stream ended without Done".into()))
    }
}

impl<T: InferenceBackend + ?Sized> InferenceBackendExt for T {}
