//! # chainference-server
//!
//! The server SDK of Chainference: sell a machine's inference time on chain.
//!
//! - [`runtime`]: [`runtime::Server::builder`] takes a chain transport, the server's wallet and a
//!   backend, registers the server's on-chain account, and serves: it watches for open requests
//!   it may take (core's lock rules plus an [`runtime::AcceptPolicy`]), locks them, streams the
//!   sealed answer one flush at a time, completes with the billed tokens, releases on failure,
//!   recovers after a restart and shuts down gracefully.
//! - [`InferenceBackend`]: a minimal trait with a documented contract (see [`backend`]), the
//!   [`InferenceBackendExt`] conveniences, and an exported [`conformance`] suite.
//! - Two real backends: [`candle::CandleBackend`] (feature `candle`, default) running quantized
//!   GGUF models with the tokenizer and chat template taken from the file itself, and
//!   [`openai::OpenAiBackend`] (feature `openai`, default) selling an existing OpenAI-compatible
//!   server (llama.cpp, Ollama, vLLM).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use chainference_chain::{EmbeddedChain, Keypair};
//! use chainference_server::candle::{CandleBackend, ModelSource};
//! use chainference_server::runtime::Server;
//!
//! let chain = EmbeddedChain::start()?;
//! let model = CandleBackend::load(&ModelSource::default_model())?;
//! let server = Server::builder(chain, Keypair::new(), model)
//!     .price(2_000_000) // lamports per million tokens
//!     .start()
//!     .await?;
//! // ... serve until it is time to stop, then finish or release what is in flight:
//! let counters = server.shutdown().await?;
//! println!("served {} requests, earned {} lamports", counters.completed, counters.earned);
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
