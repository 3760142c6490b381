//! # chainference-chain
//!
//! The chain transport under Chainference's client and server SDKs: one small async trait,
//! [`Chain`], and two real backends that pass one conformance suite ([`conformance`]):
//!
//! - [`EmbeddedChain`] (feature `embedded`, default): LiteSVM in-process, running the program's
//!   real SBF `.so`, its clock following wall time (and [`EmbeddedChain::advance`] on demand),
//!   airdrops for local wallets, and account notifications after every transaction. No cluster,
//!   no network: what the demo and the tests use.
//! - `RpcChain` (feature `rpc`): any cluster over JSON-RPC and websocket pubsub, with blockhash
//!   refresh and resend, a chosen confirmation level, and subscriptions that fall back to
//!   polling when the websocket drops.
//!
//! ```no_run
//! # async fn run() -> Result<(), chainference_chain::ChainError> {
//! use chainference_chain::{Chain, EmbeddedChain, Signer};
//! use solana_keypair::Keypair;
//!
//! // The program deployed from its built `.so`, the config initialized with defaults.
//! let chain = EmbeddedChain::start()?;
//! let wallet = Keypair::new();
//! chain.airdrop(&wallet.pubkey(), 1_000_000_000).await?;
//! assert_eq!(chain.balance(&wallet.pubkey()).await?, 1_000_000_000);
//! # Ok(()) }
//! ```
//!
//! ## The contract every backend keeps
//!
//! - [`Chain::send`] signs with the given signers (the first pays the fee) over a current
//!   blockhash, submits, and returns only once the transaction is **confirmed** at the backend's
//!   commitment, with the fee it paid. A transaction that fails returns
//!   [`ChainError::Transaction`] with the runtime's error and logs, and changed nothing but the
//!   fee. Two identical sends are two transactions.
//! - Reads ([`Chain::account`], [`Chain::accounts`], [`Chain::program_accounts`]) see at least
//!   every transaction a `send` on the same backend has returned for.
//! - [`Chain::subscribe`] yields the account's state first when the subscription starts, then
//!   after changes, in order; states in between may be coalesced (the latest wins), and `None`
//!   means the account is gone. The stream ends only when the backend shuts down.
//! - The clock ([`Chain::clock`]) is the one the program sees, and never goes back.

#![deny(unsafe_code)]

#[cfg(feature = "rpc")]
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

pub mod conformance;
#[cfg(feature = "embedded")]
mod embedded;
pub mod outage;
#[cfg(feature = "rpc")]
mod rpc;

#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedChain, EmbeddedConfig};

/// Moved to [`chainference_host::program_so`], the one rule for where the `.so` is.
#[cfg(feature = "embedded")]
#[deprecated(since = "0.1.0", note = "use chainference_host::program_so")]
pub fn program_so_path() -> std::path::PathBuf {
    chainference_host::program_so()
}
#[cfg(feature = "rpc")]
pub use rpc::{RpcChain, RpcConfig};
/// The commitment levels [`RpcConfig::commitment`] takes.
#[cfg(feature = "rpc")]
pub use solana_commitment_config::CommitmentConfig;

pub use solana_account::Account;
pub use solana_address::Address;
pub use solana_instruction::{AccountMeta, Instruction};
pub use solana_keypair::Keypair;
pub use solana_signature::Signature;
pub use solana_signer::Signer;
pub use solana_transaction_error::TransactionError;

use chainference_core::builders::BuiltInstruction;

/// A signer the transport may hold across an `await`: any wallet that is `Send + Sync`.
pub type SignerRef<'a> = &'a (dyn Signer + Send + Sync);

/// A stream of an account's states (see the crate docs for what it promises).
pub type AccountUpdates = Pin<Box<dyn Stream<Item = Option<Account>> + Send>>;

/// A confirmed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its signature.
    pub signature: Signature,
    /// The fee it paid, in lamports.
    pub fee: u64,
    /// The slot it landed in.
    pub slot: u64,
}

/// A confirmed transaction that mentions an address ([`Chain::signatures_for`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRef {
    /// Its signature.
    pub signature: Signature,
    /// The slot it landed in.
    pub slot: u64,
    /// Unix time (seconds) of that slot, when the chain knows it.
    pub block_time: Option<i64>,
    /// Whether it failed (it changed nothing but its fee).
    pub failed: bool,
}

/// An account's lamports before and after a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceChange {
    /// The account.
    pub address: Address,
    /// Lamports before.
    pub before: u64,
    /// Lamports after.
    pub after: u64,
}

/// A confirmed transaction as it was sent ([`Chain::transaction`]): its instructions with their
/// accounts resolved, and what it did to every account's lamports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmedTransaction {
    /// Where and when it landed.
    pub reference: TransactionRef,
    /// Its instructions, in order (signer and writable flags from the message header).
    pub instructions: Vec<Instruction>,
    /// The lamports of every account it names, before and after (fees included).
    pub balances: Vec<BalanceChange>,
}

/// The cluster's clock as the program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainClock {
    /// Current slot.
    pub slot: u64,
    /// Unix time (seconds) of that slot.
    pub unix_timestamp: i64,
}

/// A filter for [`Chain::program_accounts`], as the RPC's `getProgramAccounts` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountFilter {
    /// The data at `offset` starts with `bytes`.
    Memcmp {
        /// Where to compare.
        offset: usize,
        /// What must be there.
        bytes: Vec<u8>,
    },
    /// The data is exactly this long.
    DataSize(u64),
}

impl AccountFilter {
    /// Whether `data` passes this filter.
    pub fn matches(&self, data: &[u8]) -> bool {
        match self {
            AccountFilter::Memcmp { offset, bytes } => {
                offset.checked_add(bytes.len()).and_then(|end| data.get(*offset..end)).is_some_and(|s| s == bytes)
            }
            AccountFilter::DataSize(len) => data.len() as u64 == *len,
        }
    }
}

/// What went wrong talking to a chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The transaction was processed and failed; only its fee was charged.
    #[error("transaction failed: {error}")]
    Transaction {
        /// The runtime's error.
        error: TransactionError,
        /// The program logs, if the backend returned them.
        logs: Vec<String>,
        /// The fee charged for it: 0 when a node's preflight simulation caught it.
        charged: u64,
    },
    /// The transaction was rejected before execution (bad signature, unknown blockhash, a
    /// payer that cannot pay the fee...): nothing was charged.
    #[error("transaction rejected: {0}")]
    Rejected(String),
    /// The backend did not confirm in time; the transaction may still land.
    #[error("not confirmed after {seconds} s: {signature}")]
    Unconfirmed {
        /// The last signature sent.
        signature: Signature,
        /// How long we waited.
        seconds: u64,
    },
    /// Transport failure (HTTP, websocket, node error).
    #[error("rpc: {0}")]
    Rpc(String),
    /// The backend cannot do this (e.g. an airdrop on a cluster without a faucet).
    #[error("not supported by this chain: {0}")]
    Unsupported(&'static str),
    /// The program's `.so` could not be loaded.
    #[error("program {path}: {reason}")]
    Program {
        /// Where it was looked for.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// Bad input to the transport itself (no signers, an address it cannot parse...).
    #[error("invalid: {0}")]
    Invalid(String),
}

impl ChainError {
    /// The program's custom error code and the failing instruction's index, when the
    /// transaction failed inside a program with `Custom(code)`.
    pub fn program_error(&self) -> Option<(u8, u32)> {
        match self {
            ChainError::Transaction {
                error:
                    TransactionError::InstructionError(index, solana_instruction_error::InstructionError::Custom(code)),
                ..
            } => Some((*index, *code)),
            _ => None,
        }
    }
}

/// The chain transport: what the SDKs need of a cluster, and nothing more.
///
/// See the crate docs for the contract. Implemented for `Arc<T>` and `Box<T>`, so one chain
/// can be shared between a client, servers and tasks.
#[async_trait::async_trait]
pub trait Chain: Send + Sync {
    /// Signs `instructions` with `signers` (the first pays), sends, and waits for confirmation.
    async fn send(&self, instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<Sent, ChainError>;

    /// The fee [`Chain::send`] would charge for these instructions paid by `payer`.
    async fn fee_for(&self, instructions: &[Instruction], payer: &Address) -> Result<u64, ChainError>;

    /// One account, `None` if it does not exist.
    async fn account(&self, address: &Address) -> Result<Option<Account>, ChainError>;

    /// Many accounts at once, in the order asked.
    async fn accounts(&self, addresses: &[Address]) -> Result<Vec<Option<Account>>, ChainError>;

    /// Every account `program` owns that passes all `filters`.
    async fn program_accounts(
        &self,
        program: &Address,
        filters: &[AccountFilter],
    ) -> Result<Vec<(Address, Account)>, ChainError>;

    /// The account's states from now on.
    async fn subscribe(&self, address: &Address) -> Result<AccountUpdates, ChainError>;

    /// The clock the program sees.
    async fn clock(&self) -> Result<ChainClock, ChainError>;

    /// Lamports an account of `data_len` bytes needs to be rent-exempt.
    async fn rent_exempt_minimum(&self, data_len: usize) -> Result<u64, ChainError>;

    /// Credits `lamports` to `to` from the chain's faucet, confirmed on return.
    async fn airdrop(&self, to: &Address, lamports: u64) -> Result<(), ChainError>;

    /// Confirmed transactions that name `address`, newest first: at most `limit`, and only those
    /// older than `before` when it is given (to page back). History is kept at the `confirmed`
    /// commitment, so on a cluster a transaction shows here a slot or two after
    /// [`Chain::send`] returned.
    /// The default: [`ChainError::Unsupported`], for a transport without history.
    async fn signatures_for(
        &self,
        address: &Address,
        before: Option<Signature>,
        limit: usize,
    ) -> Result<Vec<TransactionRef>, ChainError> {
        let _ = (address, before, limit);
        Err(ChainError::Unsupported("transaction history"))
    }

    /// One confirmed transaction, `None` when the chain does not have it (it never landed, or
    /// the node no longer keeps it). The default: [`ChainError::Unsupported`].
    async fn transaction(&self, signature: &Signature) -> Result<Option<ConfirmedTransaction>, ChainError> {
        let _ = signature;
        Err(ChainError::Unsupported("transaction history"))
    }

    /// An account's lamports, 0 if it does not exist.
    async fn balance(&self, address: &Address) -> Result<u64, ChainError> {
        Ok(self.account(address).await?.map_or(0, |account| account.lamports))
    }
}

macro_rules! forward_chain {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl<T: Chain + ?Sized> Chain for $ty {
            async fn send(&self, instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<Sent, ChainError> {
                (**self).send(instructions, signers).await
            }
            async fn fee_for(&self, instructions: &[Instruction], payer: &Address) -> Result<u64, ChainError> {
                (**self).fee_for(instructions, payer).await
            }
            async fn account(&self, address: &Address) -> Result<Option<Account>, ChainError> {
                (**self).account(address).await
            }
            async fn accounts(&self, addresses: &[Address]) -> Result<Vec<Option<Account>>, ChainError> {
                (**self).accounts(addresses).await
            }
            async fn program_accounts(
                &self,
                program: &Address,
                filters: &[AccountFilter],
            ) -> Result<Vec<(Address, Account)>, ChainError> {
                (**self).program_accounts(program, filters).await
            }
            async fn subscribe(&self, address: &Address) -> Result<AccountUpdates, ChainError> {
                (**self).subscribe(address).await
            }
            async fn clock(&self) -> Result<ChainClock, ChainError> {
                (**self).clock().await
            }
            async fn rent_exempt_minimum(&self, data_len: usize) -> Result<u64, ChainError> {
                (**self).rent_exempt_minimum(data_len).await
            }
            async fn airdrop(&self, to: &Address, lamports: u64) -> Result<(), ChainError> {
                (**self).airdrop(to, lamports).await
            }
            async fn signatures_for(
                &self,
                address: &Address,
                before: Option<Signature>,
                limit: usize,
            ) -> Result<Vec<TransactionRef>, ChainError> {
                (**self).signatures_for(address, before, limit).await
            }
            async fn transaction(&self, signature: &Signature) -> Result<Option<ConfirmedTransaction>, ChainError> {
                (**self).transaction(signature).await
            }
            async fn balance(&self, address: &Address) -> Result<u64, ChainError> {
                (**self).balance(address).await
            }
        }
    };
}

forward_chain!(Arc<T>);
forward_chain!(Box<T>);

/// A compiled message's instructions with their accounts resolved (static keys; signer and
/// writable flags from the header), as they were built. An instruction naming an account from
/// an address lookup table is left out rather than misread.
#[cfg(any(feature = "embedded", feature = "rpc"))]
pub(crate) fn resolve_instructions(message: &solana_message::VersionedMessage) -> Vec<Instruction> {
    let keys = message.static_account_keys();
    message
        .instructions()
        .iter()
        .filter_map(|compiled| {
            let program_id = *keys.get(usize::from(compiled.program_id_index))?;
            let accounts = compiled
                .accounts
                .iter()
                .map(|index| {
                    let index = usize::from(*index);
                    Some(AccountMeta {
                        pubkey: *keys.get(index)?,
                        is_signer: message.is_signer(index),
                        is_writable: message.is_maybe_writable_with_reserved_addresses(
                            index,
                            None::<&std::collections::HashSet<Address>>,
                        ),
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Instruction { program_id, accounts, data: compiled.data.clone() })
        })
        .collect()
}

/// A core address as a Solana address.
pub fn address(bytes: &[u8; 32]) -> Address {
    Address::new_from_array(*bytes)
}

/// A core instruction (from `chainference_core::builders`) as a Solana instruction.
pub fn instruction(built: BuiltInstruction) -> Instruction {
    Instruction {
        program_id: address(&built.program_id),
        accounts: built
            .accounts
            .iter()
            .map(|meta| AccountMeta {
                pubkey: address(&meta.pubkey),
                is_signer: meta.is_signer,
                is_writable: meta.is_writable,
            })
            .collect(),
        data: built.data,
    }
}

/// The size in bytes of the signed transaction `instructions` make when `payer` pays: what
/// must stay within [`MAX_TRANSACTION_LEN`] (the same for every backend, so senders can fill a
/// transaction as far as it goes before sending it).
#[allow(clippy::arithmetic_side_effects)] // sizes of at most a few thousand bytes
pub fn transaction_len(instructions: &[Instruction], payer: &Address) -> usize {
    let message = solana_message::Message::new(instructions, Some(payer));
    let signatures = usize::from(message.header.num_required_signatures);
    let compiled: usize = message
        .instructions
        .iter()
        .map(|ix| {
            1 + short_vec_len(ix.accounts.len()) + ix.accounts.len() + short_vec_len(ix.data.len()) + ix.data.len()
        })
        .sum();
    short_vec_len(signatures)
        + 64 * signatures
        + 3
        + short_vec_len(message.account_keys.len())
        + 32 * message.account_keys.len()
        + 32
        + short_vec_len(message.instructions.len())
        + compiled
}

/// Largest Solana transaction, in bytes.
pub const MAX_TRANSACTION_LEN: usize = chainference_core::builders::MAX_TRANSACTION_LEN;

/// Bytes of Solana's compact length prefix for `len`.
const fn short_vec_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else if len < 0x4000 {
        2
    } else {
        3
    }
}

/// Core instructions as Solana instructions.
pub fn instructions(built: impl IntoIterator<Item = BuiltInstruction>) -> Vec<Instruction> {
    built.into_iter().map(instruction).collect()
}

/// Checks what every `send` needs before it touches the network: at least one signer, and every
/// signer an instruction asks for present.
#[cfg(any(feature = "embedded", feature = "rpc"))]
pub(crate) fn check_signers(instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<(), ChainError> {
    if signers.is_empty() {
        return Err(ChainError::Invalid("no signers: the first signer pays the fee".into()));
    }
    let present: Vec<Address> = signers.iter().map(|signer| signer.pubkey()).collect();
    for meta in instructions.iter().flat_map(|ix| ix.accounts.iter()) {
        if meta.is_signer && !present.contains(&meta.pubkey) {
            return Err(ChainError::Invalid(format!("instruction needs a signature from {} (not given)", meta.pubkey)));
        }
    }
    Ok(())
}

/// A `Stream` over a tokio unbounded receiver (what `tokio-stream` provides, in a few lines).
#[cfg(any(feature = "embedded", feature = "rpc"))]
pub(crate) struct ReceiverStream<T>(tokio::sync::mpsc::UnboundedReceiver<T>);

#[cfg(any(feature = "embedded", feature = "rpc"))]
impl<T> ReceiverStream<T> {
    pub(crate) fn new(receiver: tokio::sync::mpsc::UnboundedReceiver<T>) -> Self {
        ReceiverStream(receiver)
    }
}

#[cfg(any(feature = "embedded", feature = "rpc"))]
impl<T> Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Short form of an address for logs.
#[cfg(feature = "rpc")]
pub(crate) struct Short<'a>(pub &'a Address);

#[cfg(feature = "rpc")]
impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        f.write_str(text.get(..8).unwrap_or(&text))
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn transaction_len_matches_solanas_wire_format() {
        let payer = Address::new_unique();
        let to = Address::new_unique();
        // A one-signature SOL transfer is 215 bytes on the wire.
        let transfer = solana_system_interface::instruction::transfer(&payer, &to, 1);
        assert_eq!(transaction_len(std::slice::from_ref(&transfer), &payer), 215);
        // A second signer adds its key and its signature; a second instruction its encoding.
        let other = Address::new_unique();
        let two = [transfer.clone(), solana_system_interface::instruction::transfer(&other, &to, 1)];
        assert_eq!(transaction_len(&two, &payer), 215 + 32 + 64 + (1 + 1 + 2 + 1 + 12));
    }

    /// Core's one upload-sizing rule, as the client and the wasm bindings apply it: every
    /// transaction keeps the reserve free, enough for a compute-unit price instruction; with no
    /// reserve the chunks fill a transaction exactly.
    #[test]
    fn prompt_upload_transactions_keep_the_reserve_free() {
        use chainference_core::builders::{self, PromptUpload, TRANSACTION_RESERVE};
        use std::str::FromStr;
        let program = builders::Program::default();
        let client = [9u8; 32];
        let model = format!("org/{}", "m".repeat(chainference_core::model::MAX_MODEL_ID_LEN - 4));
        let allowed = [[7u8; 32]; chainference_core::state::MAX_ALLOWED_SERVERS];
        let envelope = vec![1u8; 10_000];
        let compute_price = Instruction {
            program_id: Address::from_str("ComputeBudget111111111111111111111111111111").unwrap_or_default(),
            accounts: Vec::new(),
            data: [3u8].into_iter().chain(1_000u64.to_le_bytes()).collect(),
        };
        let payer = address(&client);
        for reserve in [0, TRANSACTION_RESERVE] {
            let args = chainference_core::instruction::OpenRequestArgs {
                nonce: 1,
                bump: 255,
                stake: 1,
                max_price_per_mtok: 1,
                max_tokens: 1,
                timeout: 0,
                min_completed: 0,
                min_success_bps: 0,
                response_key: &[1; 32],
                commitment: &[2; 32],
                model: &model,
                allowed: &allowed,
                prompt_len: 0,
                prompt_chunk: &[],
            };
            let upload = PromptUpload::with_reserve(&envelope, model.len(), allowed.len(), reserve);
            let built = builders::open_request_upload(&program, &client, &args, &upload).unwrap_or_default();
            assert!(built.len() > 2, "the envelope needs several transactions");
            let count = built.len();
            for (i, ix) in instructions(built).into_iter().enumerate() {
                let len = transaction_len(std::slice::from_ref(&ix), &payer);
                assert!(len + reserve <= MAX_TRANSACTION_LEN, "transaction {i}: {len} bytes + {reserve} reserved");
                if reserve == 0 && i + 1 < count {
                    assert_eq!(len, MAX_TRANSACTION_LEN, "transaction {i} is full");
                }
                if reserve == TRANSACTION_RESERVE {
                    let with_price = transaction_len(&[compute_price.clone(), ix], &payer);
                    assert!(with_price <= MAX_TRANSACTION_LEN, "transaction {i} with a compute price: {with_price}");
                }
            }
        }
    }
}
