//! # chainference
//!
//! Decentralized AI inference on Solana. Servers sell their idle hardware's time; clients pay
//! for inference on open models with an escrowed SOL stake, their prompts and answers sealed
//! with HPKE so only the chosen servers and the client can read them. This facade re-exports the
//! workspace's crates: [`core`] (layouts, instructions, the lifecycle state machine, pricing and
//! the envelope) and, with the default `client` feature, [`client`] (the async client SDK and
//! its chain transports).
//!
//! ```
//! use chainference::core::{envelope::{ClientSecret, ServerKeyPair, seal_prompt, open_prompt}, pricing};
//! let request = [3u8; 32];
//! let server = ServerKeyPair::from_seed(&[5; 32]);
//! let keys = ClientSecret::from_wallet_signature(&[1; 64]).request_keys(&request);
//! let sealed = seal_prompt(&request, &[server.public_key()], &keys.prompt_public_key(), b"2+2?").unwrap();
//! assert_eq!(&*open_prompt(&sealed, &request, 0, server.secret()).unwrap(), b"2+2?");
//! assert_eq!(pricing::cost(300, 2_000_000, u64::MAX), 600);
//! ```

pub use chainference_core as core;

#[cfg(feature = "client")]
pub use chainference_client as client;
