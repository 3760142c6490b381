//! [`Outage`]: any [`Chain`] behind a switch that makes it fail as a lost connection does, for
//! testing that code rides through a node that refuses for a while or a reply that never comes.
//!
//! While it is down, every call fails with [`ChainError::Rpc`] without reaching the chain;
//! subscriptions opened before keep their updates (a websocket that survives while HTTP
//! refuses). [`Outage::lose_next_reply`] lets the next send land and reports it failed, the
//! case where only the chain knows the outcome.
//!
//! ```no_run
//! # async fn run() {
//! use std::time::Duration;
//! use chainference_chain::{Chain, EmbeddedChain, outage::Outage};
//! let chain = Outage::new(EmbeddedChain::start().unwrap());
//! chain.set_down(true);
//! assert!(chain.clock().await.is_err());
//! chain.set_down(false);
//! chain.lose_next_reply(Duration::from_secs(1)); // the next send lands, reports an error, and
//! # }                                            // the chain then refuses for a second
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{
    Account, AccountFilter, AccountUpdates, Address, Chain, ChainClock, ChainError, ConfirmedTransaction, Instruction,
    Sent, Signature, SignerRef, TransactionRef,
};

/// A chain that fails on cue; see the module docs.
pub struct Outage<C> {
    chain: C,
    down: AtomicBool,
    down_until: Mutex<Option<Instant>>,
    lose_reply: Mutex<Option<Duration>>,
}

impl<C> Outage<C> {
    /// `chain`, up.
    pub fn new(chain: C) -> Self {
        Outage { chain, down: AtomicBool::new(false), down_until: Mutex::new(None), lose_reply: Mutex::new(None) }
    }

    /// The chain behind the switch.
    pub fn inner(&self) -> &C {
        &self.chain
    }

    /// Down (every call fails) or up, until changed.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if !down {
            *lock(&self.down_until) = None;
        }
    }

    /// Down for `duration` from now, then up by itself.
    pub fn down_for(&self, duration: Duration) {
        *lock(&self.down_until) = Instant::now().checked_add(duration);
    }

    /// The next send reaches the chain (and lands, or fails there), but its caller gets
    /// [`ChainError::Rpc`] as if the connection dropped before the reply; the chain is then down
    /// for `then_down`.
    pub fn lose_next_reply(&self, then_down: Duration) {
        *lock(&self.lose_reply) = Some(then_down);
    }

    fn check(&self) -> Result<(), ChainError> {
        let timed = lock(&self.down_until).is_some_and(|until| Instant::now() < until);
        if self.down.load(Ordering::SeqCst) || timed {
            return Err(ChainError::Rpc("connection refused (outage)".into()));
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl<C: Chain> Chain for Outage<C> {
    async fn send(&self, instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<Sent, ChainError> {
        self.check()?;
        let lost = lock(&self.lose_reply).take();
        let sent = self.chain.send(instructions, signers).await;
        match lost {
            Some(then_down) => {
                self.down_for(then_down);
                Err(ChainError::Rpc(format!(
                    "connection reset before the reply (the send {})",
                    match sent {
                        Ok(_) => "landed",
                        Err(_) => "failed",
                    }
                )))
            }
            None => sent,
        }
    }
    async fn fee_for(&self, instructions: &[Instruction], payer: &Address) -> Result<u64, ChainError> {
        self.check()?;
        self.chain.fee_for(instructions, payer).await
    }
    async fn account(&self, address: &Address) -> Result<Option<Account>, ChainError> {
        self.check()?;
        self.chain.account(address).await
    }
    async fn accounts(&self, addresses: &[Address]) -> Result<Vec<Option<Account>>, ChainError> {
        self.check()?;
        self.chain.accounts(addresses).await
    }
    async fn program_accounts(
        &self,
        program: &Address,
        filters: &[AccountFilter],
    ) -> Result<Vec<(Address, Account)>, ChainError> {
        self.check()?;
        self.chain.program_accounts(program, filters).await
    }
    async fn subscribe(&self, address: &Address) -> Result<AccountUpdates, ChainError> {
        self.check()?;
        self.chain.subscribe(address).await
    }
    async fn clock(&self) -> Result<ChainClock, ChainError> {
        self.check()?;
        self.chain.clock().await
    }
    async fn rent_exempt_minimum(&self, data_len: usize) -> Result<u64, ChainError> {
        self.check()?;
        self.chain.rent_exempt_minimum(data_len).await
    }
    async fn airdrop(&self, to: &Address, lamports: u64) -> Result<(), ChainError> {
        self.check()?;
        self.chain.airdrop(to, lamports).await
    }
    async fn signatures_for(
        &self,
        address: &Address,
        before: Option<Signature>,
        limit: usize,
    ) -> Result<Vec<TransactionRef>, ChainError> {
        self.check()?;
        self.chain.signatures_for(address, before, limit).await
    }
    async fn transaction(&self, signature: &Signature) -> Result<Option<ConfirmedTransaction>, ChainError> {
        self.check()?;
        self.chain.transaction(signature).await
    }
}
