//! One request, from lock to complete: generation runs in its own task while this one seals
//! what it produced at every flush and sends it, each transaction filled as far as it fits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chainference_chain::{
    Address, ChainError, Instruction, MAX_TRANSACTION_LEN, address, instruction, transaction_len,
};
use chainference_core::Error as CoreError;
use chainference_core::builders::{self, RequestRefs};
use chainference_core::envelope::ResponseSealer;
use chainference_core::prompt::StopMatcher;
use chainference_core::state::{RequestAccount, RequestStatus};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Job, ReleaseReason, ServerEvent, Shared, SkipReason};
use crate::backend::{Generation, GenerationEvent};

/// How a request ended for this server.
enum Outcome {
    Completed {
        tokens: u64,
        transactions: u32,
    },
    /// Nothing was locked: the server passed after all.
    Passed(SkipReason),
    LostRace,
    /// Locked, and must be handed back.
    Release(ReleaseReason),
    /// Shutdown before anything was locked.
    Abandoned,
    /// Neither finished nor released.
    Failed(String),
}

/// What the generation task reports.
enum Generated {
    Prompt(u32),
    Text(String, u32),
    Done(u32, u32),
    Failed(String),
}

/// Serves `job` and reports the outcome as events and counters.
pub(crate) async fn serve(shared: &Shared, job: Job) {
    let request = job.request;
    let outcome = run(shared, &job).await;
    match outcome {
        Outcome::Completed { tokens, transactions } => {
            let earned = match shared.chain.account(&request).await {
                Ok(Some(account)) => RequestAccount::decode(&account.data)
                    .map_or(0, |decoded| decoded.header.cost.saturating_sub(decoded.header.fee)),
                _ => 0,
            };
            shared.counters.completed.fetch_add(1, Ordering::Relaxed);
            shared.counters.earned.fetch_add(earned, Ordering::Relaxed);
            tracing::info!(tokens, earned, transactions, "request completed");
            shared.emit(ServerEvent::Completed { request, tokens, earned, transactions });
        }
        Outcome::Passed(reason) => {
            tracing::info!(?reason, "passed on the request");
            if !matches!(reason, SkipReason::ChainUnavailable(_)) {
                shared.give_up(request, job.deadline);
            }
            if !job.declined {
                shared.decline(request, &reason).await;
            }
            shared.emit(ServerEvent::Skipped { request, reason });
        }
        Outcome::LostRace => {
            shared.counters.lost_races.fetch_add(1, Ordering::Relaxed);
            tracing::info!("another server locked it first");
            shared.emit(ServerEvent::LostRace { request });
        }
        Outcome::Release(reason) => {
            if matches!(reason, ReleaseReason::BackendFailed(_) | ReleaseReason::ChainFailed(_)) {
                shared.give_up(request, job.deadline);
            }
            release(shared, &request, reason).await;
        }
        Outcome::Abandoned => tracing::info!("left unlocked at shutdown"),
        Outcome::Failed(error) => fail(shared, request, error),
    }
}

fn fail(shared: &Shared, request: Address, error: String) {
    shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%error, "request failed; the client can reclaim it after its deadline");
    shared.emit(ServerEvent::Failed { request, error });
}

/// How long a send whose outcome is unknown waits for the chain to say what happened.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(60);

/// How long a lock not seen on chain yet is looked for (it may still be on its way).
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(10);

/// Hands a locked request back to the open pool (its response account is discarded).
pub(crate) async fn release(shared: &Shared, request: &Address, reason: ReleaseReason) {
    let request_bytes = request.to_bytes();
    let response = shared.program.response(&request_bytes).0;
    let ix = builders::release_request(&shared.program, &shared.authority_bytes(), &request_bytes, &response);
    match shared.send(&[instruction(ix)]).await {
        Ok(_) => {
            shared.counters.released.fetch_add(1, Ordering::Relaxed);
            tracing::info!(?reason, "request released");
            shared.emit(ServerEvent::Released { request: *request, reason });
        }
        Err(err) => fail(shared, *request, format!("releasing after {reason:?} failed: {err}")),
    }
}

/// The request's sending side: the sealer, what is buffered, whether the lock landed.
struct Stream<'a> {
    shared: &'a Shared,
    refs: RequestRefs,
    authority: [u8; 32],
    sealer: ResponseSealer,
    locked: bool,
    buffer: String,
    transactions: u32,
    /// Bytes of the response account's chunk data written so far (length prefixes included).
    response_bytes: u64,
    /// Bytes of the sealed prompt.
    prompt_len: u32,
    /// The request allows only this server (no race to lock it early).
    sole_server: bool,
    budget: u32,
    /// When to stop generating and complete with what was sent.
    finish_by: Instant,
}

async fn run(shared: &Shared, job: &Job) -> Outcome {
    let request_bytes = job.request.to_bytes();
    let authority = shared.authority_bytes();
    let sealer = match ResponseSealer::new(&job.response_key, &request_bytes, &authority) {
        Ok(sealer) => sealer,
        Err(err) => return Outcome::Passed(SkipReason::Unreadable(err)),
    };
    let refs =
        RequestRefs { request: request_bytes, response: shared.program.response(&request_bytes).0, client: job.client };
    let mut stream = Stream {
        shared,
        refs,
        authority,
        sealer,
        locked: job.already_locked,
        buffer: String::new(),
        transactions: 0,
        response_bytes: 0,
        prompt_len: job.prompt_len,
        sole_server: job.sole_server,
        budget: job.budget,
        finish_by: Instant::now(),
    };

    // Subscribed before any await, so a shutdown that runs out of grace meanwhile is seen.
    let mut release_now = shared.release_now.subscribe();
    if *release_now.borrow_and_update() {
        return if stream.locked { Outcome::Release(ReleaseReason::Shutdown) } else { Outcome::Abandoned };
    }

    // Finish early, billing what was sent, rather than let the deadline pass: leave time for the
    // last transactions to land.
    let margin = shared.flush_interval.saturating_mul(3).max(Duration::from_secs(2));
    let finish_by = match shared.chain.clock().await {
        Ok(clock) => {
            let left = u64::try_from(job.deadline.saturating_sub(clock.unix_timestamp)).unwrap_or(0);
            after(Duration::from_secs(left).saturating_sub(margin))
        }
        Err(err) => return stream.failure(format!("reading the clock: {err}")),
    };
    stream.finish_by = finish_by;

    let started = tokio::select! {
        started = tokio::time::timeout_at(finish_by, start_generation(shared, job)) => {
            started.unwrap_or_else(|_| Err(SkipReason::BackendRefused("the backend did not start before the deadline".into())))
        }
        _ = release_now.wait_for(|release| *release) => Err(SkipReason::BackendRefused("shut down".into())),
    };
    let mut generated = match started {
        Ok(receiver) => receiver,
        Err(reason) if stream.locked => return Outcome::Release(ReleaseReason::BackendFailed(reason.message())),
        Err(reason) => return Outcome::Passed(reason),
    };

    let (mut prompt_tokens, mut completion_tokens) = (0u32, 0u32);
    // The client's stop sequences, applied here for every backend: text that might begin one is
    // held back from the flushes, and generation ends at the first (billed up to there).
    let mut stops = StopMatcher::new(&job.payload.stop);
    let mut next_flush = after(shared.flush_interval);
    loop {
        let mut finished = false;
        // Gather until the flush is due, the answer is done, or time is up.
        loop {
            tokio::select! {
                biased;
                changed = release_now.changed() => {
                    if changed.is_ok() && *release_now.borrow() {
                        return if stream.locked { Outcome::Release(ReleaseReason::Shutdown) } else { Outcome::Abandoned };
                    }
                }
                event = generated.recv() => match event {
                    Some(Generated::Prompt(tokens)) => prompt_tokens = tokens,
                    Some(Generated::Text(text, tokens)) => {
                        stream.buffer.push_str(&stops.push(&text));
                        completion_tokens = completion_tokens.saturating_add(tokens);
                        if stops.is_stopped() {
                            finished = true;
                            break;
                        }
                    }
                    Some(Generated::Done(prompt, completion)) => {
                        (prompt_tokens, completion_tokens) = (prompt, completion);
                        stream.buffer.push_str(&stops.finish());
                        finished = true;
                        break;
                    }
                    Some(Generated::Failed(error)) => {
                        return if stream.locked {
                            Outcome::Release(ReleaseReason::BackendFailed(error))
                        } else {
                            Outcome::Passed(SkipReason::BackendRefused(error))
                        };
                    }
                    None => {
                        let error = "the backend's stream ended without Done".to_string();
                        return if stream.locked { Outcome::Release(ReleaseReason::BackendFailed(error)) } else { Outcome::Passed(SkipReason::BackendRefused(error)) };
                    }
                },
                () = tokio::time::sleep_until(next_flush) => break,
                () = tokio::time::sleep_until(finish_by) => {
                    tracing::warn!("deadline near: finishing with what was generated");
                    stream.buffer.push_str(&stops.finish());
                    finished = true;
                    break;
                }
            }
        }
        if finished {
            drop(generated);
            let billed = u64::from(prompt_tokens).saturating_add(u64::from(completion_tokens));
            let tokens = billed.min(u64::from(job.budget));
            if tokens < billed {
                tracing::warn!(billed, budget = job.budget, "the backend went over its budget; billing the budget");
            }
            return match stream.finish(tokens).await {
                Ok(()) => Outcome::Completed { tokens, transactions: stream.transactions },
                Err(outcome) => outcome,
            };
        }
        if let Err(outcome) = stream.flush().await {
            return outcome;
        }
        next_flush = after(shared.flush_interval);
    }
}

/// `now + by`, saturating far in the future.
fn after(by: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(by).or_else(|| now.checked_add(Duration::from_secs(86_400 * 365))).unwrap_or(now)
}

/// Starts the backend in its own task, so generation runs on while chunks are being sent.
async fn start_generation(shared: &Shared, job: &Job) -> Result<mpsc::UnboundedReceiver<Generated>, SkipReason> {
    let generation = Generation::from_payload(&job.payload, job.budget);
    let mut events = shared.backend.generate(generation).await.map_err(|err| SkipReason::from_backend(&err))?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            // A closed receiver means the request is over: dropping `events` cancels generation,
            // even while the backend is still evaluating the prompt.
            let event = tokio::select! {
                () = sender.closed() => return,
                event = events.next() => event,
            };
            let Some(event) = event else { return };
            let message = match event {
                Ok(GenerationEvent::Prompt { tokens }) => Generated::Prompt(tokens),
                Ok(GenerationEvent::Text { text, tokens }) => Generated::Text(text, tokens),
                Ok(GenerationEvent::Done(usage)) => Generated::Done(usage.prompt_tokens, usage.completion_tokens),
                Err(err) => Generated::Failed(err.to_string()),
            };
            let last = matches!(message, Generated::Done(..) | Generated::Failed(_));
            if sender.send(message).is_err() || last {
                return;
            }
        }
    });
    Ok(receiver)
}

impl Stream<'_> {
    fn lock_ix(&self) -> Instruction {
        instruction(builders::lock_request(&self.shared.program, &self.authority, &self.refs.request))
    }

    fn append_ix(&self, is_final: bool, sealed: &[u8]) -> Result<Instruction, CoreError> {
        builders::append_response(&self.shared.program, &self.authority, &self.refs, is_final, sealed).map(instruction)
    }

    fn complete_ix(&self, tokens: u64) -> Instruction {
        instruction(builders::complete_request(&self.shared.program, &self.authority, &self.refs, tokens))
    }

    /// The most bytes of the buffer (cut at a character boundary) whose sealed chunk fits one
    /// transaction between `before` and `after`.
    fn fitting_prefix(
        &self,
        before: &[Instruction],
        after: &[Instruction],
        is_final: bool,
    ) -> Result<usize, CoreError> {
        let payer = address(&self.authority);
        let index = self.sealer.chunks_sealed();
        // The wire size of the transaction carrying `text_len` bytes of text.
        let wire_len = |text_len: usize| -> Result<usize, CoreError> {
            let placeholder = vec![0u8; ResponseSealer::sealed_len(index, text_len)];
            let mut ixs = before.to_vec();
            ixs.push(self.append_ix(is_final, &placeholder)?);
            ixs.extend_from_slice(after);
            Ok(transaction_len(&ixs, &payer))
        };
        let empty = wire_len(0)?;
        if empty > MAX_TRANSACTION_LEN {
            return Err(CoreError::LengthOutOfRange);
        }
        // The size grows by one byte per text byte (plus one when a length prefix widens), so
        // start from the room left and step down to a fit on a character boundary.
        let room = MAX_TRANSACTION_LEN.saturating_sub(empty);
        let mut len = self.buffer.len().min(room);
        while len > 0 && (!self.buffer.is_char_boundary(len) || wire_len(len)? > MAX_TRANSACTION_LEN) {
            len = len.saturating_sub(1);
        }
        Ok(len)
    }

    /// Sends everything buffered as non-final chunks (the first transaction also locks).
    async fn flush(&mut self) -> Result<(), Outcome> {
        if self.buffer.is_empty() && !self.locked {
            if self.sole_server {
                // Nobody else may lock it: the lock waits for the first text (or the answer).
                return Ok(());
            }
            // Nothing to show yet, but a flush interval has passed: claim the request before
            // another allowed server does.
            return self.send_step(&[self.lock_ix()], &[], None).await;
        }
        while !self.buffer.is_empty() {
            let before = if self.locked { Vec::new() } else { vec![self.lock_ix()] };
            let len = self.fitting_prefix(&before, &[], false).map_err(|e| self.failure(format!("{e:?}")))?;
            if len == 0 {
                return Err(self.failure("a response chunk does not fit a transaction".into()));
            }
            self.send_step(&before, &[], Some((len, false))).await?;
            if Instant::now() >= self.finish_by {
                // Leave the rest to `finish`, which the caller reaches at once.
                break;
            }
        }
        Ok(())
    }

    /// Sends the rest and the final chunk, and completes with `tokens` in the last transaction
    /// (a short answer: lock, final chunk and complete all in one).
    async fn finish(&mut self, tokens: u64) -> Result<(), Outcome> {
        loop {
            let before = if self.locked { Vec::new() } else { vec![self.lock_ix()] };
            // The program bounds the bill by the bytes of prompt and answer (every token is at
            // least a byte); a backend whose count is higher bills the bound.
            let final_chunk = ResponseSealer::sealed_len(self.sealer.chunks_sealed(), self.buffer.len());
            let bound = u64::from(self.prompt_len)
                .saturating_add(self.response_bytes)
                .saturating_add(4)
                .saturating_add(final_chunk as u64);
            if tokens > bound {
                tracing::warn!(tokens, bound, "more tokens than bytes of prompt and answer; billing the bound");
            }
            let complete = [self.complete_ix(tokens.min(bound))];
            let with_complete =
                self.fitting_prefix(&before, &complete, true).map_err(|e| self.failure(format!("{e:?}")))?;
            if with_complete == self.buffer.len() {
                return self.send_step(&before, &complete, Some((with_complete, true))).await;
            }
            let len = self.fitting_prefix(&before, &[], false).map_err(|e| self.failure(format!("{e:?}")))?;
            if len == 0 {
                return Err(self.failure("a response chunk does not fit a transaction".into()));
            }
            self.send_step(&before, &[], Some((len, false))).await?;
        }
    }

    /// One transaction: `before`, then (if asked) the next `len` buffered bytes sealed as a
    /// chunk, then `after`. Classifies failures by what was at stake.
    async fn send_step(
        &mut self,
        before: &[Instruction],
        after: &[Instruction],
        chunk: Option<(usize, bool)>,
    ) -> Result<(), Outcome> {
        let mut ixs = before.to_vec();
        let mut appended = 0u64;
        if let Some((len, is_final)) = chunk {
            let piece = self.buffer.get(..len).unwrap_or_default();
            let sealed = self
                .sealer
                .seal_chunk(piece.as_bytes(), is_final)
                .map_err(|e| self.failure(format!("sealing: {e:?}")))?;
            ixs.push(self.append_ix(is_final, &sealed).map_err(|e| self.failure(format!("{e:?}")))?);
            appended = (sealed.len() as u64).saturating_add(4);
        }
        ixs.extend_from_slice(after);
        let locking = !self.locked;
        if locking && *self.shared.stop_locking.borrow() {
            // Shutting down: claim nothing new.
            return Err(Outcome::Abandoned);
        }
        match self.shared.send(&ixs).await {
            Ok(_) => {
                self.transactions = self.transactions.saturating_add(1);
                self.response_bytes = self.response_bytes.saturating_add(appended);
                if locking {
                    self.locked = true;
                    self.shared.emit(ServerEvent::Locked { request: address(&self.refs.request), budget: self.budget });
                    tracing::info!("locked");
                }
                if let Some((len, _)) = chunk {
                    self.buffer.drain(..len);
                }
                Ok(())
            }
            Err(err) if err.program_error().is_none() => Err(self.unconfirmed(locking, &err).await),
            Err(err) => Err(self.classify(locking, &err)),
        }
    }

    /// What a local failure means: release what is locked, else just fail.
    fn failure(&self, error: String) -> Outcome {
        if self.locked { Outcome::Release(ReleaseReason::ChainFailed(error)) } else { Outcome::Failed(error) }
    }

    /// A send whose outcome is unknown (no program error: the network, a timeout): the chain
    /// says what happened.
    async fn unconfirmed(&self, locking: bool, err: &ChainError) -> Outcome {
        let request = address(&self.refs.request);
        // The failure that hid the outcome may last a while (a node restarting, a dropped
        // connection): ask until the chain answers, or the outcome is told wrong (a completion
        // that landed counted as a failure, a release sent after it).
        // A lock or an append/complete still on its way (the transport resends it) reads as the
        // state before it for a while: look again for IN_FLIGHT_PATIENCE before deciding it did
        // not land, or a lock that lands later would hold the request with nobody serving it, and
        // a completion that lands after a release was sent would be counted as a failure.
        let started = tokio::time::Instant::now();
        let mut first_answer: Option<tokio::time::Instant> = None;
        let header = loop {
            match self.shared.chain.account(&request).await {
                Ok(account) => {
                    let header =
                        account.and_then(|account| RequestAccount::decode(&account.data).ok().map(|d| d.header));
                    // A lock or a completion still on its way reads as the state before it.
                    let before_it = header.is_some_and(|h| {
                        if locking {
                            h.status == RequestStatus::Open
                        } else {
                            h.status == RequestStatus::Locked && h.locked_by == self.authority
                        }
                    });
                    let since = *first_answer.get_or_insert_with(tokio::time::Instant::now);
                    if !before_it || since.elapsed() >= IN_FLIGHT_PATIENCE {
                        break header;
                    }
                }
                Err(_) if started.elapsed() < OUTCOME_PATIENCE => {}
                Err(_) => break None,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let Some(header) = header else { return self.failure(format!("sending: {err}")) };
        let ours = header.locked_by == self.authority;
        match header.status {
            // Ours but unanswered or half answered: hand it back so another server can serve it.
            RequestStatus::Locked if ours => Outcome::Release(ReleaseReason::ChainFailed(err.to_string())),
            RequestStatus::Completed if ours => {
                Outcome::Completed { tokens: header.tokens, transactions: self.transactions.saturating_add(1) }
            }
            RequestStatus::Open if locking => Outcome::Passed(SkipReason::ChainUnavailable(err.to_string())),
            RequestStatus::Locked | RequestStatus::Completed if locking => Outcome::LostRace,
            _ => Outcome::Failed(format!("sending: {err}")),
        }
    }

    fn classify(&self, locking: bool, err: &ChainError) -> Outcome {
        let code = err.program_error().and_then(|(index, code)| (index == 0).then_some(code));
        let refused = code.and_then(CoreError::from_code);
        if locking {
            return match refused {
                Some(CoreError::WrongState) => Outcome::LostRace,
                Some(error) => Outcome::Passed(SkipReason::LockRefused(error)),
                None => Outcome::Failed(format!("locking: {err}")),
            };
        }
        match err.program_error().and_then(|(_, code)| CoreError::from_code(code)) {
            // Too late for anything, release included: the client reclaims.
            Some(CoreError::DeadlinePassed) => Outcome::Failed("the deadline passed mid-answer".into()),
            _ => Outcome::Release(ReleaseReason::ChainFailed(err.to_string())),
        }
    }
}
