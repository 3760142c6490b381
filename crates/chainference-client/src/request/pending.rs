//! A sent request: its state, the streamed answer, waiting, cancel, reclaim and close.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chainference_chain::{Account, Address, Chain, ChainError, Instruction, address, instruction};
use chainference_core::builders::{self, RequestRefs};
use chainference_core::envelope::ResponseOpener;
use chainference_core::state::{
    DeclineReasons, FLAG_COMPARED, FLAG_FLAGGED, RequestAccount, RequestHeader, RequestStatus, ResponseAccount,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::{Client, ClientError};

/// How often a pending request checks its deadline while nothing else happens.
const DEADLINE_CHECK: Duration = Duration::from_millis(500);

/// A request's on-chain state, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestState {
    /// Lifecycle status.
    pub status: RequestStatus,
    /// The server that holds or served it.
    pub locked_by: Option<Address>,
    /// When it stops being lockable and becomes reclaimable (unix seconds; 0 while uploading).
    pub deadline: i64,
    /// The escrow.
    pub stake: u64,
    /// Billed tokens, once completed.
    pub tokens: u64,
    /// What the client paid, once completed.
    pub cost: u64,
    /// The protocol's share of the cost.
    pub fee: u64,
    /// The server's share still held in the request until the flag window closes.
    pub server_held: u64,
    /// The highest price per million tokens the request accepts.
    pub max_price_per_mtok: u64,
    /// The locking server's price snapshot.
    pub price_per_mtok: u64,
    /// How many times servers handed it back.
    pub release_count: u32,
    /// Whether the client flagged the answer.
    pub flagged: bool,
    /// Whether it was compared.
    pub compared: bool,
    /// When it became terminal (unix seconds; 0 before).
    pub settled_at: i64,
    /// How many servers the request allows.
    pub allowed_servers: u8,
    /// How many of them declined it on chain (all of them: nobody will answer).
    pub declined_by: u8,
    /// The union of the reasons the declining servers gave.
    pub decline_reasons: DeclineReasons,
    /// Whether every allowed server declined: nobody will answer before the deadline.
    pub declined_by_all: bool,
}

impl RequestState {
    pub(crate) fn from_header(header: &RequestHeader) -> Self {
        RequestState {
            status: header.status,
            locked_by: (header.locked_by != [0; 32]).then(|| address(&header.locked_by)),
            deadline: header.deadline,
            stake: header.stake,
            tokens: header.tokens,
            cost: header.cost,
            fee: header.fee,
            server_held: header.server_due,
            max_price_per_mtok: header.max_price_per_mtok,
            price_per_mtok: header.price_per_mtok,
            release_count: header.release_count,
            flagged: header.flags & FLAG_FLAGGED != 0,
            compared: header.flags & FLAG_COMPARED != 0,
            settled_at: header.settled_at,
            allowed_servers: header.allowed_count,
            #[allow(clippy::cast_possible_truncation)] // at most MAX_ALLOWED_SERVERS bits set
            declined_by: header.declined.count_ones() as u8,
            decline_reasons: header.decline_reasons(),
            declined_by_all: header.declined_by_all(),
        }
    }
}

/// What a completed request cost, from its on-chain settlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The request.
    pub request: Address,
    /// The server authority that answered.
    pub server: Address,
    /// Billed tokens (prompt + completion).
    pub tokens: u64,
    /// Its price, lamports per million tokens.
    pub price_per_mtok: u64,
    /// What the client paid: `min(ceil(tokens × price / 10⁶), stake)`.
    pub cost: u64,
    /// The protocol's share of the cost.
    pub fee: u64,
    /// The server's share: `cost - fee`.
    pub server_share: u64,
    /// The part of the server's share still held in the request: paid to the server when the
    /// flag window closes or the client closes the request; a flag returns part of it.
    pub server_held: u64,
    /// The stake.
    pub stake: u64,
    /// What came back: `stake - cost`.
    pub refund: u64,
    /// Rent locked in the request account until it is closed.
    pub rent_locked: u64,
    /// Transaction fees this client has paid for it so far.
    pub transaction_fees: u64,
}

/// A complete answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The decrypted text.
    pub text: String,
    /// The settlement.
    pub receipt: Receipt,
}

/// What a pending request reports while it is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerEvent {
    /// More decrypted text, in order.
    Text(String),
    /// The server that was answering released the request; what it wrote is void, and
    /// another server's answer (from its start) follows if one locks it.
    Restarted {
        /// The server that gave up.
        server: Address,
    },
    /// The answer is complete and settled.
    Completed(Receipt),
}

/// A stream of [`AnswerEvent`]s.
pub type AnswerEvents = Pin<Box<dyn Stream<Item = Result<AnswerEvent, ClientError>> + Send>>;

/// A finished request queued to be closed in the wallet's next open transaction
/// ([`PendingRequest::close_later`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Finished {
    pub(crate) request: [u8; 32],
    pub(crate) response: [u8; 32],
    /// Who receives the held share and the response's rent: the serving server's authority,
    /// or the client when no server ever held the request.
    pub(crate) served_by: [u8; 32],
}

impl Finished {
    /// The same request as its header reads now: paid to the server that holds it, or to the
    /// client when none did (after a rollback the server that finally served it may not be the
    /// one queued, and the program refuses a close naming another).
    pub(crate) fn as_on_chain(&self, header: &RequestHeader, wallet: [u8; 32]) -> Finished {
        let served_by = if header.locked_by == [0; 32] { wallet } else { header.locked_by };
        Finished { served_by, ..*self }
    }

    /// The CloseRequest the client `wallet` signs for it.
    pub(crate) fn close_instruction(&self, program: &builders::Program, wallet: &[u8; 32]) -> Instruction {
        let refs = RequestRefs { request: self.request, response: self.response, client: *wallet };
        instruction(builders::close_request(program, wallet, &refs, &self.served_by))
    }
}

/// The close queue, even if a thread panicked holding it (it is a plain list).
pub(crate) fn lock_queue(queue: &std::sync::Mutex<Vec<Finished>>) -> std::sync::MutexGuard<'_, Vec<Finished>> {
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Puts `items` back in the queue, each at most once.
pub(crate) fn requeue(queue: &std::sync::Mutex<Vec<Finished>>, items: impl IntoIterator<Item = Finished>) {
    let mut queue = lock_queue(queue);
    for item in items {
        if !queue.contains(&item) {
            queue.push(item);
        }
    }
}

/// A request this wallet sent, followed on chain.
pub struct PendingRequest<C: Chain + 'static> {
    pub(super) client: Client<C>,
    pub(super) address: Address,
    pub(super) response: Address,
    pub(super) model: String,
    pub(super) stake: u64,
    pub(super) rent_locked: u64,
    /// Fees paid so far (the upload's, then cancel or close).
    pub(super) fees: Arc<AtomicU64>,
}

impl<C: Chain + 'static> std::fmt::Debug for PendingRequest<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRequest")
            .field("address", &self.address)
            .field("model", &self.model)
            .field("stake", &self.stake)
            .finish_non_exhaustive()
    }
}

impl<C: Chain + 'static> PendingRequest<C> {
    pub(crate) async fn load(client: &Client<C>, request: Address) -> Result<Self, ClientError> {
        let data = client.read_request(&request).await?;
        let decoded = RequestAccount::decode(&data)?;
        if decoded.header.client != client.address().to_bytes() {
            return Err(ClientError::Invalid(format!("request {request} belongs to another wallet")));
        }
        let response = address(&client.inner.program.response(&request.to_bytes()).0);
        let rent_locked = client.inner.chain.rent_exempt_minimum(data.len()).await?;
        Ok(PendingRequest {
            client: client.clone(),
            address: request,
            response,
            model: decoded.model.to_string(),
            stake: decoded.header.stake,
            rent_locked,
            fees: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The request account.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Its response account.
    pub fn response_address(&self) -> Address {
        self.response
    }

    /// The canonical model id.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The escrow.
    pub fn stake(&self) -> u64 {
        self.stake
    }

    /// Rent the request account locks until it is closed.
    pub fn rent_locked(&self) -> u64 {
        self.rent_locked
    }

    /// The client that sent it.
    pub fn client(&self) -> &Client<C> {
        &self.client
    }

    /// Transaction fees this handle has paid for the request so far.
    pub fn transaction_fees(&self) -> u64 {
        self.fees.load(Ordering::Relaxed)
    }

    /// The request's state now.
    pub async fn state(&self) -> Result<RequestState, ClientError> {
        let data = self.client.read_request(&self.address).await?;
        Ok(RequestState::from_header(&RequestHeader::decode(&data)?))
    }

    /// Events as the answer is written: text in order, restarts, completion. Ends after
    /// `Completed` or an error (deadline passed, request ended, tampered chunk). Needs a tokio
    /// runtime (it follows the chain from a task).
    pub fn events(&self) -> AnswerEvents {
        let (sender, receiver) = mpsc::unbounded_channel();
        let watcher = Watcher {
            chain: Arc::clone(&self.client.inner),
            request: self.address,
            response: self.response,
            rent_locked: self.rent_locked,
            fees: Arc::clone(&self.fees),
            sender,
        };
        tokio::spawn(watcher.run());
        Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        }))
    }

    /// The decrypted answer text as it is written. A restart (the server released the
    /// request) shows as `Err(ClientError::Restarted { .. })` and the text starts over.
    pub fn stream(&self) -> Pin<Box<dyn Stream<Item = Result<String, ClientError>> + Send>> {
        Box::pin(self.events().filter_map(|event| async move {
            match event {
                Ok(AnswerEvent::Text(text)) => Some(Ok(text)),
                Ok(AnswerEvent::Restarted { server }) => Some(Err(ClientError::Restarted { server })),
                Ok(AnswerEvent::Completed(_)) => None,
                Err(err) => Some(Err(err)),
            }
        }))
    }

    /// Waits for the whole answer and its receipt.
    pub async fn wait(&self) -> Result<Answer, ClientError> {
        let mut events = self.events();
        let mut text = String::new();
        while let Some(event) = events.next().await {
            match event? {
                AnswerEvent::Text(more) => text.push_str(&more),
                AnswerEvent::Restarted { .. } => text.clear(),
                AnswerEvent::Completed(receipt) => return Ok(Answer { text, receipt }),
            }
        }
        Err(ClientError::Invalid("the answer stream ended without completing".into()))
    }

    /// Withdraws a request no server has locked; the stake comes back now, the rent at
    /// [`PendingRequest::close`]. Returns the lamports refunded.
    pub async fn cancel(&self) -> Result<u64, ClientError> {
        let state = self
            .state_in(
                &[RequestStatus::Draft, RequestStatus::Open],
                "only a request no server holds can be cancelled (reclaim after the deadline)",
            )
            .await?;
        let inner = &self.client.inner;
        let ix = builders::cancel_request(&inner.program, &inner.wallet_address(), &self.address.to_bytes());
        self.send(instruction(ix)).await?;
        Ok(state.stake)
    }

    /// Takes the stake back after the deadline from a request nobody completed (anyone may
    /// send this; the stake always goes to the client). Returns the lamports refunded.
    pub async fn reclaim(&self) -> Result<u64, ClientError> {
        let state = self
            .state_in(&[RequestStatus::Open, RequestStatus::Locked], "only an open or locked request can be reclaimed")
            .await?;
        let now = self.client.inner.chain.clock().await?.unix_timestamp;
        if now < state.deadline {
            return Err(ClientError::WrongState {
                request: self.address,
                status: state.status,
                hint: "its deadline has not passed yet",
            });
        }
        let inner = &self.client.inner;
        let locked_by = match state.status {
            RequestStatus::Locked => state.locked_by.map(|a| a.to_bytes()),
            _ => None,
        };
        let ix = builders::reclaim_request(
            &inner.program,
            &self.address.to_bytes(),
            &inner.wallet_address(),
            locked_by.as_ref(),
        );
        self.send(instruction(ix)).await?;
        Ok(state.stake)
    }

    /// Closes the request and its response once it ended (completed, cancelled or reclaimed):
    /// the request's rent returns to the client; the server's held share and its response's
    /// rent go to the server (closing inside the flag window accepts the answer: no flag after).
    /// Returns the lamports that came back to this wallet, net of the closing fee.
    pub async fn close(&self) -> Result<u64, ClientError> {
        let inner = &self.client.inner;
        let finished = self.finished().await?;
        lock_queue(&inner.to_close).retain(|f| f.request != finished.request);
        let before = inner.chain.balance(&self.client.address()).await?;
        self.send(finished.close_instruction(&inner.program, &inner.wallet_address())).await?;
        let after = inner.chain.balance(&self.client.address()).await?;
        Ok(after.saturating_sub(before))
    }

    /// Queues the ended request to be closed inside this wallet's next open transaction, so a
    /// client that asks repeatedly signs once per request and still gets every rent back
    /// ([`Client::close_finished`] closes what is left). Like [`PendingRequest::close`], this
    /// accepts the answer: flag first if you mean to.
    pub async fn close_later(&self) -> Result<(), ClientError> {
        let finished = self.finished().await?;
        let mut queue = lock_queue(&self.client.inner.to_close);
        if !queue.iter().any(|f| f.request == finished.request) {
            queue.push(finished);
        }
        Ok(())
    }

    /// Gives up on a request every allowed server declined (cancel and close in one
    /// transaction, stake and rent back) and returns the [`ClientError::Refused`] that says
    /// why; `None` while some allowed server has not declined, or once a server locked it.
    /// [`PendingRequest::events`] does this by itself; call it for a request nobody follows.
    pub async fn give_up_if_refused(&self) -> Result<Option<ClientError>, ClientError> {
        let Some(account) = self.client.inner.chain.account(&self.address).await? else {
            return Err(ClientError::RequestNotFound(self.address));
        };
        let header = RequestHeader::decode(&account.data)?;
        if header.status != RequestStatus::Open || !header.declined_by_all() {
            return Ok(None);
        }
        give_up_refused(&self.client.inner, (self.address, self.response), &self.fees, &account).await
    }

    /// What closing needs, once the request has ended.
    async fn finished(&self) -> Result<Finished, ClientError> {
        let state = self
            .state_in(
                &[RequestStatus::Completed, RequestStatus::Cancelled, RequestStatus::Expired],
                "only an ended request can be closed (cancel or reclaim it first)",
            )
            .await?;
        let wallet = self.client.inner.wallet_address();
        Ok(Finished {
            request: self.address.to_bytes(),
            response: self.response.to_bytes(),
            served_by: state.locked_by.map_or(wallet, |server| server.to_bytes()),
        })
    }

    /// The state, if its status is one of `allowed`; otherwise `WrongState` with `hint`.
    async fn state_in(&self, allowed: &[RequestStatus], hint: &'static str) -> Result<RequestState, ClientError> {
        let state = self.state().await?;
        if allowed.contains(&state.status) {
            Ok(state)
        } else {
            Err(ClientError::WrongState { request: self.address, status: state.status, hint })
        }
    }

    async fn send(&self, ix: Instruction) -> Result<(), ClientError> {
        let inner = &self.client.inner;
        match inner.chain.send(&[ix], &[&inner.wallet]).await {
            Ok(sent) => {
                self.fees.fetch_add(sent.fee, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                if let chainference_chain::ChainError::Transaction { charged, .. } = &err {
                    self.fees.fetch_add(*charged, Ordering::Relaxed);
                }
                Err(err.into())
            }
        }
    }
}

/// Decrypts one server's response stream in order, holding back a UTF-8 sequence split
/// between chunks.
struct ChunkReader {
    server: [u8; 32],
    opener: ResponseOpener,
    next_index: u32,
    wrote_text: bool,
    pending_utf8: Vec<u8>,
}

impl ChunkReader {
    fn text(&mut self, bytes: &[u8]) -> String {
        self.pending_utf8.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending_utf8) {
            Ok(_) => self.pending_utf8.len(),
            // An incomplete sequence at the end waits for the next chunk; anything else is
            // replaced, as a server sending invalid UTF-8 deserves.
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => self.pending_utf8.len(),
        };
        let rest = self.pending_utf8.split_off(valid);
        let text = String::from_utf8_lossy(&self.pending_utf8).into_owned();
        self.pending_utf8 = rest;
        if !text.is_empty() {
            self.wrote_text = true;
        }
        text
    }

    fn flush(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending_utf8);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// How long following an answer rides through the chain failing (subscribing, or every
/// deadline check) before it reports the failure: a node gone for good must not hang `wait`
/// forever, and one restarting must not end it.
const CHAIN_PATIENCE: Duration = Duration::from_secs(120);

/// How long the request's subscription may stay silent before the follower reads the account
/// itself (a quiet request costs one read per this interval).
const STALL_POLL: Duration = Duration::from_secs(5);

/// How long following an answer keeps trying to subscribe while the chain's RPC fails.
const SUBSCRIBE_PATIENCE: Duration = CHAIN_PATIENCE;

/// Subscribes to `address`, trying again through a transport failure of up to
/// [`SUBSCRIBE_PATIENCE`] (a node restarting, a dropped connection); other errors at once.
async fn subscribe_through_outages<C: Chain>(
    chain: &C,
    address: &Address,
) -> Result<chainference_chain::AccountUpdates, ClientError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        match chain.subscribe(address).await {
            Err(ChainError::Rpc(reason)) if started.elapsed() < SUBSCRIBE_PATIENCE => {
                tracing::debug!(%address, %reason, "subscribing failed; trying again");
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(Duration::from_secs(2));
            }
            other => return Ok(other?),
        }
    }
}

/// The task behind [`PendingRequest::events`].
struct Watcher<C> {
    chain: Arc<crate::Inner<C>>,
    request: Address,
    response: Address,
    rent_locked: u64,
    fees: Arc<AtomicU64>,
    sender: mpsc::UnboundedSender<Result<AnswerEvent, ClientError>>,
}

enum Step {
    Continue,
    Done,
}

impl<C: Chain + 'static> Watcher<C> {
    async fn run(self) {
        if let Err(err) = self.follow().await {
            let _ = self.sender.send(Err(err));
        }
    }

    fn emit(&self, event: AnswerEvent) -> Result<(), ClientError> {
        // Nobody listening is not an error; the next step notices the closed channel.
        let _ = self.sender.send(Ok(event));
        Ok(())
    }

    async fn follow(&self) -> Result<(), ClientError> {
        let chain = &self.chain.chain;
        let mut requests = subscribe_through_outages(chain, &self.request).await?;
        let mut responses = subscribe_through_outages(chain, &self.response).await?;
        let mut reader: Option<ChunkReader> = None;
        let mut header: Option<RequestHeader> = None;
        let mut tick = tokio::time::interval(DEADLINE_CHECK);
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut last_news = tokio::time::Instant::now();
        loop {
            tokio::select! {
                state = responses.next() => {
                    let Some(state) = state else { return Err(ClientError::Invalid("chain closed".into())) };
                    self.on_response(state, &mut reader)?;
                }
                state = requests.next() => {
                    let Some(state) = state else { return Err(ClientError::Invalid("chain closed".into())) };
                    last_news = tokio::time::Instant::now();
                    if let Step::Done = self.on_request_state(state, &mut header, &mut reader).await? {
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    // A subscription that stalls (a websocket half open after a node restart)
                    // must not stall the answer: read the request over HTTP now and then.
                    if last_news.elapsed() >= STALL_POLL {
                        last_news = tokio::time::Instant::now();
                        if let Ok(state) = chain.account(&self.request).await
                            && let Step::Done = self.on_request_state(state, &mut header, &mut reader).await?
                        {
                            return Ok(());
                        }
                    }
                    if let Some(header) = &header
                        && matches!(header.status, RequestStatus::Open | RequestStatus::Locked) && header.deadline > 0 {
                            // A clock the chain cannot give now (a passing RPC failure) is
                            // asked again at the next tick; it is no reason to stop following,
                            // until the chain has failed for CHAIN_PATIENCE.
                            let now = match chain.clock().await {
                                Ok(clock) => {
                                    failing_since = None;
                                    clock.unix_timestamp
                                }
                                Err(err) => {
                                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                                    if since.elapsed() >= CHAIN_PATIENCE {
                                        return Err(err.into());
                                    }
                                    continue;
                                }
                            };
                            if now >= header.deadline {
                                return Err(ClientError::DeadlinePassed { deadline: header.deadline, now });
                            }
                        }
                }
                () = self.sender.closed() => return Ok(()),
            }
        }
    }

    fn on_response(&self, state: Option<Account>, reader: &mut Option<ChunkReader>) -> Result<(), ClientError> {
        let Some(account) = state else {
            // Discarded (a release): whatever was shown is void.
            if let Some(old) = reader.take()
                && old.wrote_text
            {
                self.emit(AnswerEvent::Restarted { server: address(&old.server) })?;
            }
            return Ok(());
        };
        let response = ResponseAccount::decode(&account.data)?;
        let server = response.header.server;
        let restarted =
            reader.as_ref().is_some_and(|r| r.server != server || response.header.chunk_count < r.next_index);
        if restarted
            && let Some(old) = reader.take()
            && old.wrote_text
        {
            self.emit(AnswerEvent::Restarted { server: address(&old.server) })?;
        }
        let reader = reader.get_or_insert_with(|| ChunkReader {
            server,
            opener: self
                .chain
                .secret
                .request_keys(&self.request.to_bytes())
                .response_opener(&self.request.to_bytes(), &server),
            next_index: 0,
            wrote_text: false,
            pending_utf8: Vec::new(),
        });
        for chunk in response.chunks().skip(reader.next_index as usize) {
            let (text, is_final) = reader
                .opener
                .open_chunk(chunk)
                .map_err(|_| ClientError::TamperedChunk { index: reader.next_index, server: address(&server) })?;
            reader.next_index = reader.next_index.saturating_add(1);
            let mut piece = reader.text(&text);
            if is_final {
                piece.push_str(&reader.flush());
            }
            if !piece.is_empty() {
                self.emit(AnswerEvent::Text(piece))?;
            }
        }
        Ok(())
    }

    /// A state of the request account, from its subscription or a direct read.
    async fn on_request_state(
        &self,
        state: Option<Account>,
        header: &mut Option<RequestHeader>,
        reader: &mut Option<ChunkReader>,
    ) -> Result<Step, ClientError> {
        let Some(account) = state else { return Err(ClientError::RequestNotFound(self.request)) };
        let decoded = RequestHeader::decode(&account.data)?;
        *header = Some(decoded);
        if decoded.status == RequestStatus::Open && decoded.declined_by_all() {
            let refs = (self.request, self.response);
            if let Some(refused) = give_up_refused(&self.chain, refs, &self.fees, &account).await? {
                return Err(refused);
            }
            return Ok(Step::Continue);
        }
        self.on_request(&decoded, reader).await
    }

    async fn on_request(&self, header: &RequestHeader, reader: &mut Option<ChunkReader>) -> Result<Step, ClientError> {
        match header.status {
            RequestStatus::Completed => {
                // The final chunk is in before completion; read it if no notification has yet.
                let finished = reader.as_ref().is_some_and(|r| r.opener.is_finished());
                if !finished {
                    let state = self.chain.chain.account(&self.response).await?;
                    self.on_response(state, reader)?;
                }
                match reader {
                    Some(r) if r.opener.is_finished() => {}
                    _ => return Err(chainference_core::Error::StreamTruncated.into()),
                }
                let receipt = Receipt {
                    request: self.request,
                    server: address(&header.locked_by),
                    tokens: header.tokens,
                    price_per_mtok: header.price_per_mtok,
                    cost: header.cost,
                    fee: header.fee,
                    server_share: header.cost.saturating_sub(header.fee),
                    server_held: header.server_due,
                    stake: header.stake,
                    refund: header.stake.saturating_sub(header.cost),
                    rent_locked: self.rent_locked,
                    transaction_fees: self.fees.load(Ordering::Relaxed),
                };
                self.emit(AnswerEvent::Completed(receipt))?;
                Ok(Step::Done)
            }
            RequestStatus::Cancelled | RequestStatus::Expired => {
                Err(ClientError::Ended { request: self.request, status: header.status })
            }
            RequestStatus::Draft | RequestStatus::Open | RequestStatus::Locked => Ok(Step::Continue),
        }
    }
}

/// Every allowed server declined the open request `account`: cancels and closes it in one
/// transaction (stake and rent back) and returns [`ClientError::Refused`] naming the servers and
/// reasons. `None` when a server locked it meanwhile (a decliner may still): then the answer is
/// followed as usual.
async fn give_up_refused<C: Chain + 'static>(
    inner: &crate::Inner<C>,
    (request, response): (Address, Address),
    fees: &AtomicU64,
    account: &Account,
) -> Result<Option<ClientError>, ClientError> {
    let decoded = RequestAccount::decode(&account.data)?;
    let servers: Vec<Address> = decoded.allowed.iter().map(address).collect();
    let reasons = decoded.header.decline_reasons();
    let refused = |refunded| ClientError::Refused { request, servers, reasons, refunded };
    let wallet = inner.wallet_address();
    let refs = RequestRefs { request: request.to_bytes(), response: response.to_bytes(), client: wallet };
    let transaction = [
        instruction(builders::cancel_request(&inner.program, &wallet, &refs.request)),
        // Never locked now (a release discards the response), so nothing is held for a server.
        instruction(builders::close_request(&inner.program, &wallet, &refs, &wallet)),
    ];
    match inner.chain.send(&transaction, &[&inner.wallet]).await {
        Ok(sent) => {
            fees.fetch_add(sent.fee, Ordering::Relaxed);
            tracing::info!(%request, %reasons, "every allowed server declined; cancelled and closed");
            // The stake and the rent: every lamport the request held.
            Ok(Some(refused(account.lamports.saturating_sub(sent.fee))))
        }
        Err(err) => {
            if let chainference_chain::ChainError::Transaction { charged, .. } = &err {
                fees.fetch_add(*charged, Ordering::Relaxed);
            }
            // Another handle of this request may have closed it first, or a server locked it:
            // look before failing.
            match inner.chain.account(&request).await? {
                None => Ok(Some(refused(0))),
                Some(now) if RequestHeader::decode(&now.data)?.status != RequestStatus::Open => Ok(None),
                Some(_) => Err(err.into()),
            }
        }
    }
}
