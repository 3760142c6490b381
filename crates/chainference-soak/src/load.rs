//! The clients: tasks that each own a wallet and send requests from a shared list (mixed
//! prompt sizes, explicit and automatic server choice, pairs that get compared, answers that
//! get flagged), follow every answer through whatever breaks, and settle every request
//! (completed, or reclaimed at its deadline) and close it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainference_chain::{Address, Chain, RpcChain};
use chainference_client::core::state::RequestStatus;
use chainference_client::{AnswerEvent, Ask, Client, ClientError, PendingRequest, Policy, Receipt};
use futures::StreamExt;

/// The model every server runs.
pub const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";

const SHORT: &str = "What is the capital of France?";
const MEDIUM: &str = "In two short sentences, explain to a child why the sky looks blue during the day and \
                      why it turns red and orange at sunset.";
const LONG: &str = "Read this note and answer in one sentence: what does the team need to do before Friday? \
    Note: The quarterly review moved from Thursday to Friday morning because the projector in the large \
    meeting room is being repaired. Everyone presenting should send their slides to Maria by Wednesday \
    evening so she can merge them into one deck. The finance numbers are not final yet; Tom will share \
    the updated spreadsheet on Wednesday at noon, and presenters should copy the figures from that version \
    only. Remember that the review starts at nine sharp, coffee will be served from half past eight, and \
    the remote participants will join through the usual video link. If you cannot attend, record a short \
    video of your section and upload it to the shared folder before Thursday night.";

/// The prompts, by size.
pub const PROMPTS: [&str; 3] = [SHORT, MEDIUM, LONG];

/// Who a job asks.
#[derive(Clone, Debug)]
pub enum Choice {
    /// One named server.
    Explicit(Address),
    /// The best `n` by the SDK's default ranking.
    Best(usize),
    /// Two named servers, the same prompt to each, then compared.
    Pair(Address, Address),
}

/// One thing a client does.
#[derive(Clone, Debug)]
pub struct Job {
    /// Index into [`PROMPTS`].
    pub prompt: usize,
    /// Of whom.
    pub choice: Choice,
    /// Flag the answer afterwards.
    pub flag: bool,
}

impl Job {
    /// How many requests it opens.
    pub fn requests(&self) -> usize {
        if matches!(self.choice, Choice::Pair(..)) { 2 } else { 1 }
    }
}

/// The job list for `requests` requests over `servers`: a deterministic mix.
pub fn plan(requests: usize, servers: &[Address]) -> VecDeque<Job> {
    let mut jobs = VecDeque::new();
    let (mut opened, mut i) = (0usize, 0usize);
    let count = servers.len().max(1);
    while opened < requests {
        let server = |k: usize| servers.get(k % count).copied().unwrap_or_default();
        let choice = if i % 10 == 4 && requests - opened >= 2 && servers.len() >= 2 {
            Choice::Pair(server(i), server(i + 1))
        } else if i % 3 == 0 {
            Choice::Explicit(server(i))
        } else {
            Choice::Best(1 + i % 2)
        };
        let job = Job { prompt: i % PROMPTS.len(), choice, flag: i % 12 == 7 };
        opened += job.requests();
        jobs.push_back(job);
        i += 1;
    }
    jobs
}

/// How a request ended for its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered and settled (after `restarts` releases).
    Completed,
    /// Past its deadline unanswered: reclaimed and closed.
    Reclaimed,
    /// Every allowed server declined it: cancelled and closed.
    Refused,
    /// The open itself failed: nothing (or an orphan the sweep finds) is on chain.
    OpenFailed(String),
    /// The request is no longer on chain although its client never closed it: the validator
    /// restart rolled its open back.
    Vanished,
    /// The soak lost track of it (an error it could not settle): the audit decides.
    Lost(String),
}

/// What one request did, measured by its client.
#[derive(Clone, Debug)]
pub struct Record {
    /// Which client (or "fault" for the fault script's probes).
    pub who: String,
    /// The request, once opened.
    pub request: Option<Address>,
    /// How it ended.
    pub outcome: Outcome,
    /// The settlement, when completed.
    pub receipt: Option<Receipt>,
    /// From send to the first piece of text.
    pub first_chunk: Option<Duration>,
    /// From send to the settled answer.
    pub complete: Option<Duration>,
    /// Releases it saw (another server started over).
    pub restarts: u32,
    /// Whether the client flagged it.
    pub flagged: bool,
    /// Whether it was compared with its pair.
    pub compared: bool,
}

/// The shared work list and results.
#[derive(Default)]
pub struct Board {
    /// Jobs not taken yet.
    pub jobs: Mutex<VecDeque<Job>>,
    /// Every request's record.
    pub records: Mutex<Vec<Record>>,
}

impl Board {
    fn take(&self) -> Option<Job> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front()
    }

    /// Adds a record.
    pub fn record(&self, record: Record) {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(record);
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// One client: takes jobs until none are left, then closes what it queued.
pub async fn client_task(name: String, client: Client<Arc<RpcChain>>, board: Arc<Board>, timeout_secs: u32) {
    while let Some(job) = board.take() {
        run_job(&name, &client, &job, &board, timeout_secs).await;
    }
    close_queued(&client).await;
}

/// Closes what `close_later` queued, retrying through faults.
pub async fn close_queued(client: &Client<Arc<RpcChain>>) {
    for attempt in 0..20u32 {
        match client.close_finished().await {
            Ok(_) => return,
            Err(err) => {
                eprintln!("soak: {} closing finished requests (try {attempt}): {err}", client.address());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

fn ask_for(job: &Job, timeout_secs: u32) -> Ask {
    let prompt = PROMPTS.get(job.prompt).copied().unwrap_or(SHORT);
    let ask = Ask::new(MODEL, prompt).max_tokens(640).max_completion_tokens(40).timeout_secs(timeout_secs);
    match &job.choice {
        Choice::Explicit(server) => ask.to_servers([*server]),
        Choice::Best(n) => ask.best(*n, Policy::MostReliable),
        Choice::Pair(..) => ask,
    }
}

/// Sends one job's request(s), follows and settles them, and records what happened.
pub async fn run_job(name: &str, client: &Client<Arc<RpcChain>>, job: &Job, board: &Board, timeout_secs: u32) {
    let ask = ask_for(job, timeout_secs);
    let sent = Instant::now();
    if let Choice::Pair(a, b) = job.choice {
        let opened = with_retries(|| client.ask_pair(ask.clone(), a, b)).await;
        let (first, second) = match opened {
            Ok(pair) => pair,
            Err(err) => {
                for _ in 0..2 {
                    board.record(failed_open(name, &err));
                }
                return;
            }
        };
        let (mut one, mut two) =
            tokio::join!(follow_and_settle(name, &first, sent), follow_and_settle(name, &second, sent));
        if one.outcome == Outcome::Completed && two.outcome == Outcome::Completed {
            let (a, b) = (first.address(), second.address());
            let compared = with_retries(|| client.compare(&a, &b, &a)).await;
            // A retry after a send whose outcome was unknown finds it done: the chain says.
            let landed = first.state().await.is_ok_and(|state| state.compared);
            if let (Err(err), false) = (&compared, landed) {
                eprintln!("soak: {name} compare {a} {b}: {err}");
            }
            one.compared = landed;
            two.compared = one.compared;
        }
        for (pending, record) in [(&first, one), (&second, two)] {
            finish(name, pending, &record).await;
            board.record(record);
        }
        return;
    }
    let pending = match with_retries(|| client.ask(ask.clone())).await {
        Ok(pending) => pending,
        Err(err) => return board.record(failed_open(name, &err)),
    };
    let mut record = follow_and_settle(name, &pending, sent).await;
    if job.flag && record.outcome == Outcome::Completed {
        let address = pending.address();
        match with_retries(|| client.flag(&address)).await {
            Ok(()) => record.flagged = true,
            Err(err) => eprintln!("soak: {name} flag {}: {err}", pending.address()),
        }
    }
    finish(name, &pending, &record).await;
    board.record(record);
}

impl Record {
    /// A record of `who`'s `request` (none when the open failed), nothing settled yet.
    fn new(who: &str, request: Option<Address>, outcome: Outcome) -> Self {
        Record {
            who: who.to_string(),
            request,
            outcome,
            receipt: None,
            first_chunk: None,
            complete: None,
            restarts: 0,
            flagged: false,
            compared: false,
        }
    }
}

fn failed_open(name: &str, err: &ClientError) -> Record {
    Record::new(name, None, Outcome::OpenFailed(err.to_string()))
}

/// Queues a settled request to be closed in the wallet's next open (one signature per request).
async fn finish(name: &str, pending: &PendingRequest<Arc<RpcChain>>, record: &Record) {
    if matches!(record.outcome, Outcome::Completed | Outcome::Reclaimed | Outcome::Refused)
        && let Err(err) = with_retries(|| pending.close_later()).await
    {
        eprintln!("soak: {name} queueing {} to close: {err}", pending.address());
    }
}

/// Whether an error is the transport's (worth a retry) rather than the program's or a rule's.
fn transient(err: &ClientError) -> bool {
    matches!(err, ClientError::Chain(_)) && err.program_error().is_none()
}

/// Retries an action (an open, a close, a read) through transport failures: any outage the
/// fault script makes, the longest a validator restart and replay.
pub async fn with_retries<T, F, Fut>(mut action: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    loop {
        match action().await {
            Err(err) if transient(&err) && started.elapsed() < Duration::from_secs(180) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Follows the answer; on any interruption reads the request's state and goes on: follows
/// again, reclaims after the deadline, or closes what ended.
pub async fn follow_and_settle(name: &str, pending: &PendingRequest<Arc<RpcChain>>, sent: Instant) -> Record {
    let mut record = Record::new(name, Some(pending.address()), Outcome::Lost("not settled".into()));
    for _attempt in 0..60u32 {
        let mut events = pending.events();
        let mut last_error = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(AnswerEvent::Text(_)) => {
                    record.first_chunk.get_or_insert_with(|| sent.elapsed());
                }
                Ok(AnswerEvent::Restarted { .. }) => record.restarts += 1,
                Ok(AnswerEvent::Completed(receipt)) => {
                    record.complete = Some(sent.elapsed());
                    record.receipt = Some(receipt);
                    record.outcome = Outcome::Completed;
                    return record;
                }
                Ok(_) => {}
                Err(err) => {
                    last_error = Some(err);
                    break;
                }
            }
        }
        // Interrupted: what does the chain say?
        let state = match with_retries(|| pending.state()).await {
            Ok(state) => state,
            Err(ClientError::RequestNotFound(_)) => {
                record.outcome = Outcome::Vanished;
                return record;
            }
            Err(err) => {
                record.outcome = Outcome::Lost(format!("state unreadable: {err}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match state.status {
            RequestStatus::Completed => continue, // the next follow reports it at once
            RequestStatus::Cancelled => {
                record.outcome = Outcome::Refused;
                return record;
            }
            RequestStatus::Expired => {
                record.outcome = Outcome::Reclaimed;
                return record;
            }
            RequestStatus::Open if state.declined_by_all => match pending.give_up_if_refused().await {
                Ok(Some(_)) => {
                    record.outcome = Outcome::Refused;
                    return record;
                }
                _ => continue,
            },
            RequestStatus::Open | RequestStatus::Locked => {
                let now = match pending.client().chain().clock().await {
                    Ok(clock) => clock.unix_timestamp,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if now >= state.deadline {
                    match with_retries(|| pending.reclaim()).await {
                        Ok(_) => {
                            record.outcome = Outcome::Reclaimed;
                            return record;
                        }
                        Err(err) => {
                            record.outcome = Outcome::Lost(format!("reclaim: {err}"));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                } else if let Some(err) = last_error {
                    // Follow again after a pause (the watcher said why it stopped).
                    if !transient(&err) && !matches!(err, ClientError::DeadlinePassed { .. }) {
                        eprintln!("soak: {name} following {}: {err}", pending.address());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            other => {
                record.outcome = Outcome::Lost(format!("status {other:?}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    record
}

/// Settles every request of `client`'s wallet still on chain (orphans of failed opens, a killed
/// process's request): closes the ended, reclaims past the deadline. Returns (closed, reclaimed).
pub async fn sweep(client: &Client<Arc<RpcChain>>, give_up_after: Duration) -> (usize, usize) {
    let (mut closed, mut reclaimed) = (0usize, 0usize);
    let start = Instant::now();
    while start.elapsed() < give_up_after {
        let query = chainference_client::HistoryQuery { since: None, include_closed: false, max_transactions: 0 };
        let Ok(entries) = client.history_with(query).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let open: Vec<_> = entries.into_iter().filter(|e| !e.closed).collect();
        if open.is_empty() {
            break;
        }
        for entry in open {
            let Ok(pending) = client.request(&entry.address).await else { continue };
            match entry.state.status {
                RequestStatus::Completed | RequestStatus::Cancelled | RequestStatus::Expired => {
                    if pending.close().await.is_ok() {
                        closed += 1;
                    }
                }
                RequestStatus::Open | RequestStatus::Locked | RequestStatus::Draft => {
                    let now = client.chain().clock().await.map(|c| c.unix_timestamp).unwrap_or(0);
                    if entry.state.deadline > 0 && now >= entry.state.deadline && pending.reclaim().await.is_ok() {
                        reclaimed += 1;
                    } else if entry.state.status == RequestStatus::Draft || entry.state.declined_by_all {
                        let _ = pending.cancel().await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (closed, reclaimed)
}
