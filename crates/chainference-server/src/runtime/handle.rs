//! A running server: [`ServerHandle`] (events, counters, key rotation, shutdown).

use std::sync::Arc;
use std::time::Duration;

use chainference_chain::{Address, Signer, address, instruction};
use chainference_core::builders;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::*;

/// A running server. Dropping it without [`ServerHandle::shutdown`] stops it abruptly (like
/// a crash: what it had locked is recovered by the next start).
pub struct ServerHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) main: Option<JoinHandle<()>>,
    pub(super) max_concurrent: usize,
    pub(super) grace: Duration,
    /// Subscribed before registration, so the first [`ServerHandle::events`] caller also sees
    /// what `start` itself did (registering, releasing what a crashed run left half answered).
    pub(super) startup_events: std::sync::Mutex<Option<broadcast::Receiver<ServerEvent>>>,
}

impl ServerHandle {
    /// The server's wallet.
    pub fn authority(&self) -> Address {
        self.shared.wallet.pubkey()
    }

    /// The server's on-chain account.
    pub fn server_address(&self) -> Address {
        address(&self.shared.program.server(&self.authority().to_bytes()))
    }

    /// The HPKE public key published now.
    pub async fn public_key(&self) -> [u8; 32] {
        self.shared.keys.read().await.current.public_key()
    }

    /// The runtime's events: for the first caller, every event since the runtime started
    /// (its registration, and what it resumed or released from a previous run that crashed);
    /// for later callers, events from now on.
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        let startup = self.startup_events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        startup.unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// Counters since start.
    pub fn counters(&self) -> ServerCounters {
        self.shared.counters.snapshot()
    }

    /// Claims every held share (and response rent) of this server's completed requests whose
    /// flag window has closed; the runtime also does it on its own every few minutes. Returns
    /// the lamports claimed.
    pub async fn claim_payments(&self) -> Result<u64, ServerError> {
        self.shared.claim_payments().await
    }

    /// Publishes a new HPKE key (the next wallet generation, or a fresh random key for a fixed
    /// source) and returns it; prompts sealed to the previous key still open.
    pub async fn rotate_key(&self) -> Result<[u8; 32], ServerError> {
        let mut ring = self.shared.keys.write().await;
        let (next, generation) = ring.next(&self.shared.wallet)?;
        let public_key = next.public_key();
        self.shared.update_profile(&public_key).await?;
        let previous = std::mem::replace(&mut ring.current, next);
        ring.previous = Some(previous);
        ring.generation = generation;
        drop(ring);
        self.shared.emit(ServerEvent::KeyRotated { public_key });
        Ok(public_key)
    }

    /// Stops locking, waits up to the grace period for in-flight answers, releases what is
    /// left, marks the server inactive, and returns the counters.
    pub async fn shutdown(mut self) -> Result<ServerCounters, ServerError> {
        let shared = Arc::clone(&self.shared);
        shared.stop_locking.send_replace(true);
        if let Some(main) = self.main.take() {
            // The watcher only stops; it holds nothing a request needs.
            let _ = main.await;
        }
        let all = u32::try_from(self.max_concurrent).unwrap_or(u32::MAX);
        let permits = Arc::clone(&shared.permits);
        // Holding every permit means no request task is left; recovered ones wait for a permit,
        // so they are counted too.
        let drained = tokio::time::timeout(self.grace, Arc::clone(&permits).acquire_many_owned(all)).await;
        let _all = match drained {
            Ok(all_permits) => all_permits.ok(),
            Err(_) => {
                shared.release_now.send_replace(true);
                // Releasing takes a transaction each; past that, stop what is left.
                match tokio::time::timeout(self.grace, Arc::clone(&permits).acquire_many_owned(all)).await {
                    Ok(all_permits) => all_permits.ok(),
                    Err(_) => {
                        for task in shared.abort_all() {
                            let _ = task.await;
                        }
                        None
                    }
                }
            }
        };
        let deactivate = instruction(builders::set_server_active(&shared.program, &self.authority().to_bytes(), false));
        shared.send(&[deactivate]).await?;
        shared.emit(ServerEvent::Stopped);
        Ok(shared.counters.snapshot())
    }
}

impl ServerHandle {
    /// Stops at once without releasing anything, as a crash would (the next start recovers
    /// what was locked), and returns the counters once every task has stopped.
    pub async fn abort(mut self) -> ServerCounters {
        if let Some(main) = self.main.take() {
            main.abort();
            let _ = main.await;
        }
        self.shared.stop_locking.send_replace(true);
        for task in self.shared.abort_all() {
            let _ = task.await;
        }
        self.shared.counters.snapshot()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(main) = self.main.take() {
            main.abort();
        }
        // Stops in-flight answers without releasing them (a crash, as far as the chain sees).
        self.shared.stop_locking.send_replace(true);
        drop(self.shared.abort_all());
    }
}
