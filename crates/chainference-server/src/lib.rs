//! # chainference-server
//!
//! The server SDK of Chainference. This release holds the pluggable inference backend:
//! [`InferenceBackend`] (a minimal trait with a documented contract, see [`backend`]), the
//! [`InferenceBackendExt`] conveniences, and the Candle backend ([`candle::CandleBackend`],
//! feature `candle`, default) running quantized GGUF models with the tokenizer and chat template
//! taken from the file itself.
//!
//! ```no_run
//! # async fn run() -> Result<(), chainference_server::BackendError> {
//! use chainference_server::candle::{CandleBackend, ModelSource};
//! use chainference_server::{Generation, InferenceBackendExt};
//!
//! let model = CandleBackend::load(&ModelSource::default_model())?;
//! let (text, usage) = model.complete(Generation::user("What is the capital of France?", 256)).await?;
//! println!("{text} ({} tokens billed)", usage.billed_tokens());
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]

pub mod backend;
#[cfg(feature = "candle")]
pub mod candle;
pub mod conformance;
#[cfg(feature = "openai")]
pub mod openai;

pub use backend::{
    BackendError, FinishReason, Generation, GenerationEvent, GenerationStream, InferenceBackend, InferenceBackendExt,
    Sampling, Usage,
};
pub mod runtime;
