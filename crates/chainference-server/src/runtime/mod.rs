//! The server runtime: sells a backend's time on the chain.
//!
//! [`Server::builder`] takes a chain transport, the server's wallet and an
//! [`InferenceBackend`]; [`ServerBuilder::start`] registers (or updates) the server's on-chain
//! account and returns a [`ServerHandle`] while a task:
//!
//! - **watches** for open requests it may serve: on its allow-list, for the backend's model,
//!   passing the lock rules of core's state machine (run on a copy of the request, so the server
//!   never sends a lock the program would refuse), with time left and a stake that pays for a
//!   useful answer ([`AcceptPolicy`]);
//! - **locks** them, at most [`ServerBuilder::max_concurrent`] at a time (backpressure: what
//!   it cannot start now it leaves to other servers). Two servers racing for one request both
//!   behave: one lock lands, the other gets `WrongState` and moves on;
//! - **serves** each one ([`serve`](self) module): opens the prompt, generates within the
//!   budget the stake pays for, and streams sealed chunks, one flush per
//!   [`ServerBuilder::flush_interval`], each transaction filled as far as it fits. A short
//!   answer goes out as lock + append + complete in one transaction; a longer one as lock + first
//!   chunk, appends, and final chunk + complete. It completes with the billed token count
//!   (prompt + completion tokens by the model's tokenizer, docs/protocol.md);
//! - **releases** a request when the backend fails, rather than stranding the client, and
//!   finishes early (billing what it sent) rather than miss the deadline;
//! - on **restart**, resumes what it had locked and not started answering, and releases what it
//!   had half answered (a response stream cannot be continued by a new process);
//! - on [`ServerHandle::shutdown`], stops locking, lets in-flight answers finish within the grace
//!   period, releases the rest, and marks the server inactive.
//!
//! Each request runs in a `tracing` span `request{request=…}`; [`ServerHandle::events`] gives
//! the same story as [`ServerEvent`]s.

mod keys;
mod serve;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chainference_chain::{
    AccountFilter, Address, Chain, ChainError, Instruction, Keypair, Signer, address, instruction,
};
use chainference_core::builders::{self, Program, ServerProfile};
use chainference_core::lifecycle::{Event, ServerView};
use chainference_core::state::{
    AccountKind, MAX_PROMPT_LEN, RequestAccount, RequestHeader, RequestStatus, ServerAccount, ServerHeader,
};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

pub use keys::KeySource;

use crate::backend::{BackendError, InferenceBackend};

/// Why the runtime could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The chain refused or failed a transaction or a read.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// A rule of the protocol (an offer, an endpoint, a key).
    #[error("protocol: {0:?}")]
    Core(chainference_core::Error),
    /// The backend failed.
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    /// The wallet cannot pay for registering the server.
    #[error("the server wallet holds {available} lamports; registering needs about {needed} (fund {address})")]
    InsufficientFunds {
        /// About what registering costs (rent and fee).
        needed: u64,
        /// What the wallet holds.
        available: u64,
        /// The wallet.
        address: Address,
    },
    /// The account at the server's address is not a server account of this program.
    #[error("the account at {0} is not a Chainference server account")]
    NotAServer(Address),
    /// The runtime has stopped.
    #[error("the server has stopped")]
    Stopped,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl From<chainference_core::Error> for ServerError {
    fn from(err: chainference_core::Error) -> Self {
        ServerError::Core(err)
    }
}

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

/// Why the server passed on an open request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Not on the request's allow-list.
    NotAllowed,
    /// The request asks for a model this server does not run.
    OtherModel(String),
    /// The program would refuse the lock (inactive, filters, deadline).
    LockRefused(chainference_core::Error),
    /// Less than [`AcceptPolicy::min_time_left`] remains.
    TooLittleTime {
        /// Seconds left.
        seconds_left: i64,
    },
    /// The stake or `max_tokens` does not pay for [`AcceptPolicy::min_answer_tokens`].
    BudgetTooSmall {
        /// Tokens the request pays for at this server's price.
        affordable_tokens: u64,
    },
    /// The prompt is larger than [`AcceptPolicy::max_prompt_len`].
    PromptTooLarge,
    /// The client is excluded by the policy.
    ClientExcluded,
    /// The prompt does not open with this server's keys or does not decode.
    Unreadable(chainference_core::Error),
    /// The backend refused the job before anything was locked (for example, prompt too long).
    BackendRefused(String),
    /// The chain could not be reached to lock (nothing was locked).
    ChainUnavailable(String),
}

/// Why the server released a request it had locked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseReason {
    /// The backend failed mid-answer.
    BackendFailed(String),
    /// The server restarted with the answer half sent.
    Restarted,
    /// Shutdown's grace period ran out.
    Shutdown,
    /// The chain refused an append (the answer cannot go on).
    ChainFailed(String),
}

/// What the runtime did, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The server account is registered or up to date.
    Registered {
        /// The server PDA.
        server: Address,
        /// Whether an account was created (else updated or already current).
        created: bool,
    },
    /// The server passed on a request (reported once per request and reason).
    Skipped {
        /// The request.
        request: Address,
        /// Why.
        reason: SkipReason,
    },
    /// Another server locked the request first.
    LostRace {
        /// The request.
        request: Address,
    },
    /// The server locked a request and is answering it.
    Locked {
        /// The request.
        request: Address,
        /// The token budget the stake pays for.
        budget: u32,
    },
    /// A request is completed and paid.
    Completed {
        /// The request.
        request: Address,
        /// Tokens billed.
        tokens: u64,
        /// What the server received (cost less the protocol fee).
        earned: u64,
        /// Transactions the answer took (lock to complete).
        transactions: u32,
    },
    /// A locked request went back to the open pool.
    Released {
        /// The request.
        request: Address,
        /// Why.
        reason: ReleaseReason,
    },
    /// A request could not be finished nor released (for example the deadline passed): the
    /// client reclaims it.
    Failed {
        /// The request.
        request: Address,
        /// What went wrong.
        error: String,
    },
    /// The HPKE key was rotated.
    KeyRotated {
        /// The new public key.
        public_key: [u8; 32],
    },
    /// The runtime stopped.
    Stopped,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Requests completed.
    pub completed: u64,
    /// Requests released.
    pub released: u64,
    /// Locks lost to other servers.
    pub lost_races: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Lamports earned (server shares of completed requests).
    pub earned: u64,
    /// Lamports paid in transaction fees.
    pub fees_paid: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    completed: AtomicU64,
    released: AtomicU64,
    lost_races: AtomicU64,
    failed: AtomicU64,
    earned: AtomicU64,
    fees_paid: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ServerCounters {
        ServerCounters {
            completed: self.completed.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            lost_races: self.lost_races.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            earned: self.earned.load(Ordering::Relaxed),
            fees_paid: self.fees_paid.load(Ordering::Relaxed),
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
        let (events, _) = broadcast::channel(1024);
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
            stop_locking,
            release_now,
        });
        shared.register().await?;
        shared.recover().await?;
        let main = tokio::spawn(Arc::clone(&shared).watch());
        Ok(ServerHandle { shared, main: Some(main), max_concurrent: self.max_concurrent, grace: self.shutdown_grace })
    }

    /// [`ServerBuilder::start`], then serves until `shutdown` resolves, then shuts down
    /// gracefully.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<ServerCounters, ServerError> {
        let handle = self.start().await?;
        shutdown.await;
        handle.shutdown().await
    }
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] stops it abruptly (like
/// a crash: what it had locked is recovered by the next start).
pub struct ServerHandle {
    shared: Arc<Shared>,
    main: Option<JoinHandle<()>>,
    max_concurrent: usize,
    grace: Duration,
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

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        self.shared.events.subscribe()
    }

    /// Counters since start.
    pub fn counters(&self) -> ServerCounters {
        self.shared.counters.snapshot()
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

/// What the watcher and the request tasks share.
pub(crate) struct Shared {
    pub(crate) chain: Box<dyn Chain>,
    pub(crate) wallet: Keypair,
    pub(crate) backend: Box<dyn InferenceBackend>,
    pub(crate) program: Program,
    pub(crate) model: String,
    pub(crate) price_per_mtok: u64,
    endpoint: String,
    pub(crate) flush_interval: Duration,
    poll_interval: Duration,
    accept: AcceptPolicy,
    pub(crate) keys: tokio::sync::RwLock<keys::KeyRing>,
    events: broadcast::Sender<ServerEvent>,
    pub(crate) counters: Counters,
    permits: Arc<Semaphore>,
    in_flight: Mutex<HashMap<Address, JoinHandle<()>>>,
    /// Requests this server released or passed on after trying (a failing backend, a refused
    /// chunk), with their deadlines: not locked again, or a failure would repeat every poll.
    given_up: Mutex<HashMap<Address, i64>>,
    pub(crate) stop_locking: watch::Sender<bool>,
    pub(crate) release_now: watch::Sender<bool>,
}

/// An open request this server will serve, with its prompt opened.
pub(crate) struct Job {
    pub(crate) request: Address,
    pub(crate) client: [u8; 32],
    pub(crate) deadline: i64,
    pub(crate) response_key: [u8; 32],
    pub(crate) payload: chainference_core::prompt::PromptPayload,
    /// Tokens the request pays for at this server's price (and `max_tokens` allows).
    pub(crate) budget: u32,
    /// A previous run locked it (recovery): no lock to send.
    pub(crate) already_locked: bool,
}

impl Shared {
    pub(crate) fn emit(&self, event: ServerEvent) {
        // No subscriber is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    /// Marks `request` as not to be tried again before its deadline.
    pub(crate) fn give_up(&self, request: Address, deadline: i64) {
        if let Ok(mut given_up) = self.given_up.lock() {
            given_up.insert(request, deadline);
        }
    }

    pub(crate) fn authority_bytes(&self) -> [u8; 32] {
        self.wallet.pubkey().to_bytes()
    }

    fn server_address(&self) -> Address {
        address(&self.program.server(&self.authority_bytes()))
    }

    /// Sends with the server's wallet, counting the fee (also what a failed transaction cost).
    pub(crate) async fn send(&self, instructions: &[Instruction]) -> Result<chainference_chain::Sent, ChainError> {
        let result = self.chain.send(instructions, &[&self.wallet]).await;
        let fee = match &result {
            Ok(sent) => sent.fee,
            Err(ChainError::Transaction { charged, .. }) => *charged,
            Err(_) => 0,
        };
        self.counters.fees_paid.fetch_add(fee, Ordering::Relaxed);
        result
    }

    fn profile_offers(&self) -> [(&str, u64); 1] {
        [(self.model.as_str(), self.price_per_mtok)]
    }

    /// Creates the server account, or brings it up to date (offers, endpoint, key, active).
    async fn register(&self) -> Result<(), ServerError> {
        let authority = self.authority_bytes();
        let server = self.server_address();
        let key = self.keys.read().await.current.public_key();
        let offers = self.profile_offers();
        let profile = ServerProfile { hpke_key: &key, endpoint: &self.endpoint, offers: &offers };
        match self.chain.account(&server).await? {
            None => {
                let register = instruction(builders::register_server(&self.program, &authority, &profile)?);
                let offer_bytes = chainference_core::instruction::encode_offers(&offers)?;
                let size = ServerAccount::size(self.endpoint.len(), offer_bytes.len());
                let rent = self.chain.rent_exempt_minimum(size).await?;
                let fee = self.chain.fee_for(std::slice::from_ref(&register), &self.wallet.pubkey()).await?;
                let available = self.chain.balance(&self.wallet.pubkey()).await?;
                let needed = rent.saturating_add(fee);
                if available < needed {
                    return Err(ServerError::InsufficientFunds { needed, available, address: self.wallet.pubkey() });
                }
                self.send(&[register]).await?;
                tracing::info!(%server, model = %self.model, price = self.price_per_mtok, "server registered");
                self.emit(ServerEvent::Registered { server, created: true });
            }
            Some(account) => {
                let current = ServerAccount::decode(&account.data).map_err(|_| ServerError::NotAServer(server))?;
                let same_offers = current.offers.iter().map(|o| (o.model, o.price_per_mtok)).eq(offers.iter().copied());
                let mut ixs = Vec::new();
                if !same_offers || current.endpoint != self.endpoint || current.header.hpke_key != key {
                    ixs.push(instruction(builders::update_server(&self.program, &authority, &profile)?));
                }
                if !current.header.active {
                    ixs.push(instruction(builders::set_server_active(&self.program, &authority, true)));
                }
                if !ixs.is_empty() {
                    self.send(&ixs).await?;
                }
                tracing::info!(%server, model = %self.model, price = self.price_per_mtok, updated = !ixs.is_empty(), "server account current");
                self.emit(ServerEvent::Registered { server, created: false });
            }
        }
        Ok(())
    }

    /// Publishes `key` with the current offers and endpoint.
    async fn update_profile(&self, key: &[u8; 32]) -> Result<(), ServerError> {
        let offers = self.profile_offers();
        let profile = ServerProfile { hpke_key: key, endpoint: &self.endpoint, offers: &offers };
        let ix = instruction(builders::update_server(&self.program, &self.authority_bytes(), &profile)?);
        self.send(&[ix]).await?;
        Ok(())
    }

    fn request_filters(status: RequestStatus) -> Vec<AccountFilter> {
        vec![
            AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Request as u8] },
            AccountFilter::Memcmp { offset: RequestHeader::STATUS_OFFSET, bytes: vec![status as u8] },
        ]
    }

    /// What a previous run left locked: resumed when nothing was sent yet, released otherwise.
    async fn recover(self: &Arc<Self>) -> Result<(), ServerError> {
        let mut filters = Self::request_filters(RequestStatus::Locked);
        filters.push(AccountFilter::Memcmp {
            offset: RequestHeader::LOCKED_BY_OFFSET,
            bytes: self.authority_bytes().to_vec(),
        });
        let locked = self.chain.program_accounts(&address(&self.program.id), &filters).await?;
        let now = self.chain.clock().await?.unix_timestamp;
        for (request, account) in locked {
            let Ok(decoded) = RequestAccount::decode(&account.data) else { continue };
            if decoded.header.deadline <= now {
                // Too late to answer or release; the client reclaims it.
                continue;
            }
            let resumable = !decoded.header.has_response();
            let job = if resumable { self.prepare(&request, &decoded, true).await.ok() } else { None };
            match job {
                Some(job) => {
                    tracing::info!(%request, "resuming a request locked before the restart");
                    let shared = Arc::clone(self);
                    let permits = Arc::clone(&self.permits);
                    self.spawn(request, async move {
                        let Ok(_permit) = permits.acquire_owned().await else { return };
                        serve::serve(&shared, job).await;
                    });
                }
                None => {
                    tracing::info!(%request, "releasing a request half answered before the restart");
                    serve::release(self, &request, ReleaseReason::Restarted).await;
                }
            }
        }
        Ok(())
    }

    /// Polls for open requests until told to stop locking.
    async fn watch(self: Arc<Self>) {
        let mut stop = self.stop_locking.subscribe();
        let mut reported = HashMap::new();
        loop {
            if *stop.borrow() {
                break;
            }
            if self.permits.available_permits() > 0
                && let Err(err) = self.poll_once(&mut reported).await
            {
                tracing::warn!(error = %err, "looking for open requests failed; retrying");
            }
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    async fn poll_once(self: &Arc<Self>, reported: &mut HashMap<Address, SkipReason>) -> Result<(), ServerError> {
        let mut open = self
            .chain
            .program_accounts(&address(&self.program.id), &Self::request_filters(RequestStatus::Open))
            .await?;
        reported.retain(|request, _| open.iter().any(|(a, _)| a == request));
        if open.is_empty() {
            return Ok(());
        }
        let server = self.server_address();
        let own = self.chain.account(&server).await?.ok_or(ServerError::NotAServer(server))?;
        let own = ServerHeader::decode(&own.data).map_err(|_| ServerError::NotAServer(server))?;
        let now = self.chain.clock().await?.unix_timestamp;
        if let Ok(mut given_up) = self.given_up.lock() {
            given_up.retain(|_, deadline| *deadline > now);
        }
        // Oldest first: the client who waited longest.
        open.sort_by_key(|(_, account)| RequestHeader::decode(&account.data).map_or(i64::MAX, |h| h.created_at));
        for (request, account) in open {
            if *self.stop_locking.borrow() {
                break;
            }
            if self.in_flight.lock().is_ok_and(|f| f.contains_key(&request))
                || self.given_up.lock().is_ok_and(|g| g.contains_key(&request))
            {
                continue;
            }
            let Ok(decoded) = RequestAccount::decode(&account.data) else { continue };
            let checked = match self.lock_check(&decoded, &own, now) {
                Ok(()) => self.prepare(&request, &decoded, false).await,
                Err(reason) => Err(reason),
            };
            match checked {
                Ok(job) => {
                    let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else { break };
                    reported.remove(&request);
                    let shared = Arc::clone(self);
                    self.spawn(request, async move {
                        let _permit = permit;
                        serve::serve(&shared, job).await;
                    });
                }
                Err(reason) => {
                    if reported.get(&request) != Some(&reason) {
                        tracing::debug!(%request, ?reason, "passing on a request");
                        reported.insert(request, reason.clone());
                        self.emit(ServerEvent::Skipped { request, reason });
                    }
                }
            }
        }
        Ok(())
    }

    /// The program's lock rules (core's state machine on a copy) and the policy's own.
    fn lock_check(&self, decoded: &RequestAccount<'_>, own: &ServerHeader, now: i64) -> Result<(), SkipReason> {
        let authority = self.authority_bytes();
        if !decoded.allowed.contains(&authority) {
            return Err(SkipReason::NotAllowed);
        }
        if decoded.model != self.model {
            return Err(SkipReason::OtherModel(decoded.model.to_string()));
        }
        let client = address(&decoded.header.client);
        if self.accept.deny_clients.contains(&client)
            || (!self.accept.only_clients.is_empty() && !self.accept.only_clients.contains(&client))
        {
            return Err(SkipReason::ClientExcluded);
        }
        if decoded.prompt.len() > self.accept.max_prompt_len {
            return Err(SkipReason::PromptTooLarge);
        }
        let view = ServerView {
            authority: &authority,
            active: own.active,
            stats: own.stats,
            price_for_model: Some(self.price_per_mtok),
        };
        let mut header = decoded.header;
        header.apply(Event::Lock { server: view, allowed: decoded.allowed }, now).map_err(SkipReason::LockRefused)?;
        let seconds_left = decoded.header.deadline.saturating_sub(now);
        if u64::try_from(seconds_left).unwrap_or(0) < self.accept.min_time_left.as_secs() {
            return Err(SkipReason::TooLittleTime { seconds_left });
        }
        Ok(())
    }

    /// Opens the prompt and sizes the budget; refuses what does not pay for a useful answer.
    async fn prepare(
        &self,
        request: &Address,
        decoded: &RequestAccount<'_>,
        already_locked: bool,
    ) -> Result<Job, SkipReason> {
        let authority = self.authority_bytes();
        let slot = decoded.allowed.iter().position(|a| *a == authority).ok_or(SkipReason::NotAllowed)?;
        let slot = u8::try_from(slot).map_err(|_| SkipReason::NotAllowed)?;
        let request_bytes = request.to_bytes();
        let plain = self
            .keys
            .read()
            .await
            .open_prompt(decoded.prompt_written(), &request_bytes, slot)
            .map_err(SkipReason::Unreadable)?;
        let payload = chainference_core::prompt::PromptPayload::decode(&plain).map_err(SkipReason::Unreadable)?;
        let affordable = chainference_core::pricing::affordable_tokens(decoded.header.stake, self.price_per_mtok)
            .min(u64::from(decoded.header.max_tokens));
        let prompt_tokens = self
            .backend
            .prompt_tokens(&payload.messages)
            .await
            .map_err(|err| SkipReason::BackendRefused(err.to_string()))?;
        if affordable < u64::from(prompt_tokens).saturating_add(u64::from(self.accept.min_answer_tokens)) {
            return Err(SkipReason::BudgetTooSmall { affordable_tokens: affordable });
        }
        Ok(Job {
            request: *request,
            client: decoded.header.client,
            deadline: decoded.header.deadline,
            response_key: *decoded.response_key,
            payload,
            budget: u32::try_from(affordable).unwrap_or(u32::MAX),
            already_locked,
        })
    }

    /// Runs a request task, tracked so a drop can abort it.
    fn spawn(self: &Arc<Self>, request: Address, work: impl std::future::Future<Output = ()> + Send + 'static) {
        use tracing::Instrument;
        let shared = Arc::clone(self);
        let span = tracing::info_span!("request", %request);
        let Ok(mut in_flight) = self.in_flight.lock() else { return };
        let task = tokio::spawn(
            async move {
                work.await;
                if let Ok(mut in_flight) = shared.in_flight.lock() {
                    in_flight.remove(&request);
                }
            }
            .instrument(span),
        );
        in_flight.insert(request, task);
    }

    /// Aborts every request task; returns them to be awaited.
    fn abort_all(&self) -> Vec<JoinHandle<()>> {
        let Ok(mut in_flight) = self.in_flight.lock() else { return Vec::new() };
        in_flight
            .drain()
            .map(|(_, task)| {
                task.abort();
                task
            })
            .collect()
    }
}
