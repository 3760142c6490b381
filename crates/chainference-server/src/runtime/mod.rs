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

mod builder;
mod events;
mod handle;
mod keys;
mod serve;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chainference_chain::{
    AccountFilter, Address, Chain, ChainError, Instruction, Keypair, Signer, address, instruction,
};
use chainference_core::builders::{self, Program, ServerProfile};
use chainference_core::lifecycle::{Event, ServerView};
use chainference_core::state::{
    AccountKind, RequestAccount, RequestHeader, RequestStatus, ServerAccount, ServerHeader,
};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;

pub use builder::{AcceptPolicy, Server, ServerBuilder};
pub use events::{ReleaseReason, ServerCounters, ServerError, ServerEvent, SkipReason};
pub use handle::ServerHandle;
pub use keys::KeySource;

pub(crate) use events::Counters;

use crate::backend::InferenceBackend;

/// How often the runtime claims held payments whose flag window has closed.
const CLAIM_INTERVAL: Duration = Duration::from_secs(300);

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
    /// Whether to decline on chain what the server passes on (see [`ServerEvent::Declined`]).
    declines: bool,
    /// Requests a decline was sent for (each once; forgotten when the request leaves Open).
    declining: Mutex<std::collections::HashSet<Address>>,
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
    /// Bytes of the sealed prompt: with the answer's, the most tokens the program lets it bill.
    pub(crate) prompt_len: u32,
    /// Whether this server is the only one the request allows: no other can lock it, so there
    /// is no race to claim it early (a short answer then costs one transaction).
    pub(crate) sole_server: bool,
    /// Whether this server already declined it on chain (a previous run passed on it).
    pub(crate) declined: bool,
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

    /// Tells the client on chain why this server passes on `request`, once per request, when
    /// the reason is one a decline can carry: so a client whose every allowed server passed
    /// learns it within a poll instead of at the deadline. Costs one transaction fee.
    pub(crate) async fn decline(&self, request: Address, reason: &SkipReason) {
        let Some(reasons) = reason.decline_reasons() else { return };
        if !self.declines || !self.declining.lock().is_ok_and(|mut sent| sent.insert(request)) {
            return;
        }
        let ix = builders::decline_request(&self.program, &self.authority_bytes(), &request.to_bytes(), reasons);
        match self.send(&[instruction(ix)]).await {
            Ok(_) => {
                self.counters.declined.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%request, %reasons, "declined the request on chain");
                self.emit(ServerEvent::Declined { request, reasons });
            }
            Err(err) => {
                let refused = err.program_error().and_then(|(_, code)| chainference_core::Error::from_code(code));
                // Locked elsewhere, cancelled or past its deadline meanwhile: nothing to tell.
                // Anything else (the chain unreachable) is tried again on the next poll.
                if refused.is_none()
                    && let Ok(mut sent) = self.declining.lock()
                {
                    sent.remove(&request);
                }
                tracing::debug!(%request, error = %err, "declining failed");
            }
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
                if !current.header.active() {
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

    /// Claims held shares whose flag window has closed: one ClaimPayment per request, four to
    /// a transaction. Returns the lamports that came back.
    pub(crate) async fn claim_payments(&self) -> Result<u64, ServerError> {
        let mut filters = Self::request_filters(RequestStatus::Completed);
        filters.push(AccountFilter::Memcmp {
            offset: RequestHeader::LOCKED_BY_OFFSET,
            bytes: self.authority_bytes().to_vec(),
        });
        let completed = self.chain.program_accounts(&address(&self.program.id), &filters).await?;
        if completed.is_empty() {
            return Ok(0);
        }
        let config = self.chain.account(&address(&self.program.config)).await?;
        let Some(params) = config.and_then(|c| chainference_core::state::Config::params_of(&c.data).ok()) else {
            return Ok(0);
        };
        let now = self.chain.clock().await?.unix_timestamp;
        let authority = self.authority_bytes();
        let due: Vec<Instruction> = completed
            .iter()
            .filter_map(|(request, account)| {
                let h = RequestHeader::decode(&account.data).ok()?;
                let window_closed = now >= h.settled_at.saturating_add(i64::from(params.flag_window));
                (window_closed && (h.server_due > 0 || h.has_response())).then(|| {
                    let request = request.to_bytes();
                    let response = self.program.response(&request).0;
                    instruction(builders::claim_payment(&self.program, &authority, &request, &response))
                })
            })
            .collect();
        let before = self.chain.balance(&self.wallet.pubkey()).await?;
        for batch in due.chunks(4) {
            // One bad batch (a request closed meanwhile) must not hold up the others.
            if let Err(err) = self.send(batch).await {
                tracing::warn!(error = %err, "a claim batch failed; the rest go on");
            }
        }
        let after = self.chain.balance(&self.wallet.pubkey()).await?;
        let claimed = after.saturating_sub(before);
        if !due.is_empty() {
            tracing::info!(requests = due.len(), claimed, "claimed held payments");
            self.counters.claimed.fetch_add(claimed, Ordering::Relaxed);
        }
        Ok(claimed)
    }

    /// Polls for open requests until told to stop locking; claims held payments now and then.
    async fn watch(self: Arc<Self>) {
        let mut stop = self.stop_locking.subscribe();
        let mut reported = HashMap::new();
        let mut next_claim = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            if tokio::time::Instant::now() >= next_claim {
                next_claim = tokio::time::Instant::now().checked_add(CLAIM_INTERVAL).unwrap_or(next_claim);
                if let Err(err) = self.claim_payments().await {
                    tracing::warn!(error = %err, "claiming held payments failed; retrying later");
                }
            }
            // Scanned even when every permit is taken: a busy server still declines at once
            // what it would never take.
            if let Err(err) = self.poll_once(&mut reported).await {
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
        if let Ok(mut declining) = self.declining.lock() {
            declining.retain(|request| open.iter().any(|(a, _)| a == request));
        }
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
            let checked = match self.lock_check(&request, &decoded, &own, now) {
                Ok(()) => self.prepare(&request, &decoded, false).await,
                Err(reason) => Err(reason),
            };
            match checked {
                Ok(job) => {
                    // Busy: taken on a later poll; the rest of the list is still checked.
                    let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else { continue };
                    reported.remove(&request);
                    let shared = Arc::clone(self);
                    self.spawn(request, async move {
                        let _permit = permit;
                        serve::serve(&shared, job).await;
                    });
                }
                Err(reason) => {
                    // Not yet declined, here or on chain (a failed send is tried again).
                    let to_decline = reason.decline_reasons().is_some()
                        && !self.declined_on_chain(&decoded)
                        && !self.declining.lock().is_ok_and(|sent| sent.contains(&request));
                    if to_decline {
                        let shared = Arc::clone(self);
                        let reason = reason.clone();
                        tokio::spawn(async move { shared.decline(request, &reason).await });
                    }
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

    /// Whether this server's allow-list slot of `decoded` is marked declined.
    fn declined_on_chain(&self, decoded: &RequestAccount<'_>) -> bool {
        let authority = self.authority_bytes();
        decoded.allowed.iter().position(|a| *a == authority).is_some_and(|slot| decoded.header.declined_by(slot))
    }

    /// The program's lock rules (core's state machine on a copy) and the policy's own.
    fn lock_check(
        &self,
        request: &Address,
        decoded: &RequestAccount<'_>,
        own: &ServerHeader,
        now: i64,
    ) -> Result<(), SkipReason> {
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
            active: own.active(),
            stats: own.stats,
            price_for_model: Some(self.price_per_mtok),
        };
        let mut header = decoded.header;
        // The fee snapshot does not change whether the lock succeeds.
        header
            .apply(Event::Lock { server: view, allowed: decoded.allowed, fee_bps: 0 }, now)
            .map_err(SkipReason::LockRefused)?;
        // The response must live at bump 255 (the SDKs only open such requests); a request
        // crafted otherwise could never be answered, so it is not worth a lock and a release.
        if self.program.response(&request.to_bytes()).1 != chainference_core::state::REQUEST_BUMP {
            return Err(SkipReason::LockRefused(chainference_core::Error::NonCanonicalBump));
        }
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
        let prompt_tokens =
            self.backend.prompt_tokens(&payload.messages).await.map_err(|err| SkipReason::from_backend(&err))?;
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
            prompt_len: decoded.header.prompt_len,
            sole_server: decoded.allowed.len() == 1,
            declined: decoded.header.declined_by(usize::from(slot)),
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
