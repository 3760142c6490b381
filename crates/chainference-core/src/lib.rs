//! # chainference-core
//!
//! The shared rules of Chainference, decentralized AI inference on Solana: account and
//! instruction layouts, PDAs, the request lifecycle as one pure state machine, pricing and
//! reputation math, the numbered errors, and (feature `crypto`) the HPKE envelope. It is
//! `no_std` + `alloc`; the on-chain program builds it with default features off, and every other
//! crate (client, server, wasm) is a thin layer over it. Nothing here touches a network or a
//! clock: time comes in as an argument (sans-I/O).
//!
//! ```text
//!  client SDK / wasm ──builders──► instruction data ──► program ──► lifecycle::apply ──► Effects
//!        │                                                    ▲           (lamports, stats)
//!        └── envelope::seal_prompt ──► request account ──► server SDK ── envelope::open_prompt
//!                                                              └─ ResponseSealer ─► response account
//! ```
//!
//! ```
//! use chainference_core::{pricing, model::ModelId, instruction::Instruction};
//! let model = ModelId::parse("HuggingFaceTB/SmolLM2-135M-Instruct:q4_1").unwrap();
//! assert_eq!(model.canonical(), "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1");
//! // 1,000 tokens at 0.5 SOL per million tokens, 10% fee, 0.01 SOL staked:
//! let s = pricing::settle(1_000, 500_000_000, 10_000_000, 1_000).unwrap();
//! assert_eq!((s.cost, s.fee, s.server, s.refund), (500_000, 50_000, 450_000, 9_500_000));
//! assert_eq!(Instruction::decode(&[9]).unwrap(), Instruction::CancelRequest);
//! ```
//!
//! Features: `std` (std::error::Error), `crypto` (envelope, keys, commitments), `getrandom`
//! (OS randomness), `builders` (host-side instructions and PDA derivation).

#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

/// Declares a fieldless enum stored as one byte, with `from_u8` (the variant for a byte, if any)
/// and `name` (its name, stable across releases) generated from the one list of variants.
macro_rules! byte_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[repr(u8)]
        pub enum $name {
            $($(#[doc = $doc])* $variant = $value,)*
        }

        impl $name {
            /// The variant for a byte, if any.
            pub const fn from_u8(byte: u8) -> Option<Self> {
                match byte {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The variant's name as declared, stable across releases (for logs, JSON and JS).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

pub mod error;
pub mod instruction;
pub mod lifecycle;
pub mod model;
pub mod pda;
pub mod pricing;
#[cfg(feature = "alloc")]
pub mod prompt;
pub mod state;
pub mod wire;

#[cfg(feature = "alloc")]
pub mod base58;
#[cfg(feature = "builders")]
pub mod builders;
#[cfg(feature = "crypto")]
pub mod envelope;

pub use error::{Error, Result};

/// A 32-byte Solana address (public key or PDA).
pub type Address = [u8; 32];

/// Whether two addresses are equal, compared as four 8-byte words: on SBF that is a handful
/// of loads, where `==` on the arrays becomes a `sol_memcmp_` syscall (10 CU at least) at every
/// check of a signer, owner or authority.
#[inline(always)]
pub fn same_address(a: &Address, b: &Address) -> bool {
    let (a, b) = (a.as_chunks::<8>().0, b.as_chunks::<8>().0);
    a.iter().zip(b).all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
}

#[cfg(test)]
mod tests {
    use super::same_address;

    #[test]
    fn same_address_is_array_equality() {
        let base: [u8; 32] = core::array::from_fn(|i| u8::try_from(i * 7).unwrap_or(0));
        assert!(same_address(&base, &base));
        assert!(same_address(&[0; 32], &[0; 32]));
        // A difference in any byte (so in each of the four words, at each position) is seen.
        for i in 0..32 {
            for bit in [0x01u8, 0x80] {
                let mut other = base;
                other[i] ^= bit;
                assert!(!same_address(&base, &other), "byte {i} bit {bit:#x}");
                assert_eq!(same_address(&base, &other), base == other);
            }
        }
    }
}
