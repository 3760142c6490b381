//! Configuring and starting a server: [`Server::builder`], [`ServerBuilder`] and the [`AcceptPolicy`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chainference_chain::{Address, Chain, Keypair, Signer, address};
use chainference_core::builders::Program;
use chainference_core::state::{MAX_PROMPT_LEN, ServerHeader};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::backend::InferenceBackend;

use super::*;

/// Which requests the server takes on, beyond the program's own rules.
#[derive(Clone, Debug, PartialEq)]
pub struct AcceptPolicy {
    /// Least time before the deadline to lock (an answer needs time to stream).
    pub min_time_left: Duration,
    /// Least tokens the stake (at this server's price) and `max_tokens` must pay for beyond what
    /// the prompt will take (estimated from its sealed size).
    pub min_answer_tokens: u32,
    /// Largest prompt envelope to accept, in bytes.
    pub max_prompt_len: usize,
    /// Only these clients (empty: anyone).
    pub only_clients: Vec<Address>,
    /// Never these clients.
    pub deny_clients: Vec<Address>,
}

impl Default for AcceptPolicy {
    fn default() -> Self {
        AcceptPolicy {
            min_time_left: Duration::from_secs(5),
            min_answer_tokens: 16,
            max_prompt_len: MAX_PROMPT_LEN,
            only_clients: Vec::new(),
            deny_clients: Vec::new(),
        }
    }
}

/// The entry point: `Server::builder(chain, wallet, backend)`.
pub struct Server;

impl Server {
    /// A builder for a server selling `backend`'s time from `wallet` over `chain`.
    pub fn builder<C, B>(chain: C, wallet: Keypair, backend: B) -> ServerBuilder<C, B>
    where
        C: Chain + 'static,
        B: InferenceBackend + 'static,
    {
        ServerBuilder {
            chain,
            wallet,
            backend,
            program: Program::default(),
            price_per_mtok: 1_000_000,
            endpoint: String::new(),
            flush_interval: Duration::from_millis(400),
            poll_interval: Duration::from_millis(400),
            max_concurrent: 1,
            accept: AcceptPolicy::default(),
            keys: KeySource::Wallet,
            shutdown_grace: Duration::from_secs(10),
            declines: true,
        }
    }
}

/// Settings of a server; see [`Server::builder`].
pub struct ServerBuilder<C, B> {
    chain: C,
    wallet: Keypair,
    backend: B,
    program: Program,
    price_per_mtok: u64,
    endpoint: String,
    flush_interval: Duration,
    poll_interval: Duration,
    max_concurrent: usize,
    accept: AcceptPolicy,
    keys: KeySource,
    shutdown_grace: Duration,
    declines: bool,
}

impl<C, B> ServerBuilder<C, B>
where
    C: Chain + 'static,
    B: InferenceBackend + 'static,
{
    /// The deployment (default: the canonical program id).
    pub fn program(mut self, program: Program) -> Self {
        self.program = program;
        self
    }

    /// The price of the backend's model, lamports per million tokens (default 1,000,000).
    pub fn price(mut self, lamports_per_mtok: u64) -> Self {
        self.price_per_mtok = lamports_per_mtok;
        self
    }

    /// An off-chain endpoint URL to publish (default none).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into();
        self
    }

    /// How often buffered text is sealed and sent (default 400 ms, one slot).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// How often the chain is read for open requests (default 400 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Most requests served at once (default 1); the server locks no more than this.
    pub fn max_concurrent(mut self, requests: usize) -> Self {
        self.max_concurrent = requests;
        self
    }

    /// Which requests to take on (default [`AcceptPolicy::default`]).
    pub fn accept(mut self, policy: AcceptPolicy) -> Self {
        self.accept = policy;
        self
    }

    /// Where the HPKE key comes from (default [`KeySource::Wallet`]).
    pub fn keys(mut self, source: KeySource) -> Self {
        self.keys = source;
        self
    }

    /// How long shutdown waits for in-flight answers before releasing them (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Whether to decline on chain the requests that name this server and that it passes on
    /// (default true): the client learns within a poll why, instead of waiting for its deadline,
    /// at one transaction fee per declined request.
    pub fn declines(mut self, enabled: bool) -> Self {
        self.declines = enabled;
        self
    }

    /// Registers or updates the server's account, resumes or releases what a previous run left
    /// locked, and starts serving.
    pub async fn start(self) -> Result<ServerHandle, ServerError> {
        if self.max_concurrent == 0 {
            return Err(ServerError::Invalid("max_concurrent must be at least 1".into()));
        }
        if self.flush_interval.is_zero() || self.poll_interval.is_zero() {
            return Err(ServerError::Invalid("flush and poll intervals must be above zero".into()));
        }
        let model = self.backend.model_id().to_string();
        chainference_core::model::check_canonical_model(&model)?;
        let authority = self.wallet.pubkey();
        let server_address = address(&self.program.server(&authority.to_bytes()));
        let published = match self.chain.account(&server_address).await? {
            Some(account) => {
                Some(ServerHeader::decode(&account.data).map_err(|_| ServerError::NotAServer(server_address))?.hpke_key)
            }
            None => None,
        };
        let ring = keys::KeyRing::resolve(self.keys, &self.wallet, published);
        let (events, startup_events) = broadcast::channel(1024);
        let (stop_locking, _) = watch::channel(false);
        let (release_now, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            chain: Box::new(self.chain),
            wallet: self.wallet,
            backend: Box::new(self.backend),
            program: self.program,
            model,
            price_per_mtok: self.price_per_mtok,
            endpoint: self.endpoint,
            flush_interval: self.flush_interval,
            poll_interval: self.poll_interval,
            accept: self.accept,
            keys: tokio::sync::RwLock::new(ring),
            events,
            counters: Counters::default(),
            permits: Arc::new(Semaphore::new(self.max_concurrent)),
            in_flight: Mutex::new(HashMap::new()),
            given_up: Mutex::new(HashMap::new()),
            declines: self.declines,
            declining: Mutex::new(std::collections::HashSet::new()),
            stop_locking,
            release_now,
        });
        shared.register().await?;
        shared.recover().await?;
        let main = tokio::spawn(Arc::clone(&shared).watch());
        Ok(ServerHandle {
            shared,
            main: Some(main),
            max_concurrent: self.max_concurrent,
            grace: self.shutdown_grace,
            startup_events: std::sync::Mutex::new(Some(startup_events)),
        })
    }

    /// [`ServerBuilder::start`], then serves until `shutdown` resolves, then shuts down
    /// gracefully.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<ServerCounters, ServerError> {
        let handle = self.start().await?;
        shutdown.await;
        handle.shutdown().await
    }
}
