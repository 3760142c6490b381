//! A wallet's past requests, decrypted from chain data with nothing but the wallet: those still
//! on chain from their accounts, closed ones from transaction history (the instructions that
//! opened, wrote, answered and settled them).

use std::collections::{BTreeMap, HashMap, HashSet};

use chainference_chain::{AccountFilter, Address, Chain, ConfirmedTransaction, address};
use chainference_core::envelope::RequestKeys;
use chainference_core::instruction::Instruction as ProgramInstruction;
use chainference_core::prompt::PromptPayload;
use chainference_core::state::{
    AccountKind, DeclineReasons, RequestAccount, RequestHeader, RequestStatus, ResponseAccount,
};
use futures::StreamExt;

use crate::request::RequestState;
use crate::{Client, ClientError};

/// One past request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The request account.
    pub address: Address,
    /// The canonical model id.
    pub model: String,
    /// When it was created (unix seconds).
    pub created_at: i64,
    /// Its state.
    pub state: RequestState,
    /// The decrypted prompt (`None` while the upload is incomplete, or if it does not open).
    pub prompt: Option<PromptPayload>,
    /// The decrypted answer so far (`None` before a server wrote anything).
    pub answer: Option<String>,
    /// Whether the answer holds its final chunk.
    pub answer_complete: bool,
    /// What could not be read, if anything.
    pub problem: Option<String>,
    /// Whether the request was closed: recovered from transaction history, its account gone.
    /// Its `state` is then rebuilt from its transactions: status, stake, price cap, the serving
    /// server and billed tokens as the instructions say; cost from the wallet's balance change
    /// at completion (the stake when the program held a refund back from an emptied wallet, and
    /// without a dispute's refund); what no instruction carries (fee, price snapshot, deadline,
    /// held share, flags) reads 0.
    pub closed: bool,
    /// When it was closed (unix seconds), once the close is in the node's confirmed history
    /// (a slot or two after it landed).
    pub closed_at: Option<i64>,
}

/// What [`crate::Client::history_with`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only requests created at or after this unix time (seconds).
    pub since: Option<i64>,
    /// Recover closed requests from the wallet's transaction history.
    pub include_closed: bool,
    /// The most wallet transactions to read back for closed requests (each is one read).
    pub max_transactions: usize,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery { since: None, include_closed: true, max_transactions: 500 }
    }
}

pub(crate) async fn load<C: Chain + 'static>(
    client: &Client<C>,
    query: HistoryQuery,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let inner = &client.inner;
    let wallet = client.address();
    let filters = [
        AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Request as u8] },
        AccountFilter::Memcmp { offset: RequestHeader::CLIENT_OFFSET, bytes: wallet.to_bytes().to_vec() },
    ];
    let requests = inner.chain.program_accounts(&address(&inner.program.id), &filters).await?;
    let responses: Vec<Address> =
        requests.iter().map(|(request, _)| address(&inner.program.response(&request.to_bytes()).0)).collect();
    let response_accounts = inner.chain.accounts(&responses).await?;
    let mut entries = Vec::with_capacity(requests.len());
    for ((request, account), response) in requests.iter().zip(response_accounts) {
        let decoded = match RequestAccount::decode(&account.data) {
            Ok(decoded) => decoded,
            Err(err) => {
                tracing::warn!(%request, %err, "skipping an undecodable request account");
                continue;
            }
        };
        let header = decoded.header;
        if query.since.is_some_and(|since| header.created_at < since) {
            continue;
        }
        let keys = inner.secret.request_keys(&request.to_bytes());
        let mut problems = Vec::new();
        let prompt = if header.prompt_written == header.prompt_len {
            match keys.open_own_prompt(decoded.prompt, &request.to_bytes()) {
                Ok(bytes) => match PromptPayload::decode(&bytes) {
                    Ok(payload) => Some(payload),
                    Err(err) => {
                        problems.push(format!("prompt: {err}"));
                        None
                    }
                },
                Err(err) => {
                    problems.push(format!("prompt: {err}"));
                    None
                }
            }
        } else {
            None
        };
        let mut answer = None;
        let mut answer_complete = false;
        if let Some(response) = response {
            match ResponseAccount::decode(&response.data) {
                Ok(stream) => {
                    let mut opener = keys.response_opener(&request.to_bytes(), &stream.header.server);
                    let mut bytes = Vec::new();
                    for (index, chunk) in stream.chunks().enumerate() {
                        match opener.open_chunk(chunk) {
                            Ok((text, _)) => bytes.extend_from_slice(&text),
                            Err(err) => {
                                problems.push(format!("answer chunk {index}: {err}"));
                                break;
                            }
                        }
                    }
                    answer_complete = opener.is_finished();
                    answer = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                Err(err) => problems.push(format!("response: {err}")),
            }
        }
        entries.push(HistoryEntry {
            address: *request,
            model: decoded.model.to_string(),
            created_at: header.created_at,
            state: RequestState::from_header(&header),
            prompt,
            answer,
            answer_complete,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            closed: false,
            closed_at: None,
        });
    }
    if query.include_closed {
        // Every request account of the wallet, whatever the filters above kept.
        let live: HashSet<Address> = requests.iter().map(|(request, _)| *request).collect();
        match closed(client, &live, query).await {
            Ok(recovered) => entries.extend(recovered),
            // A node without transaction history (or failing midway) still shows what is on chain.
            Err(err) => tracing::warn!(error = %err, "closed requests could not be read from transaction history"),
        }
    }
    entries.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.address.cmp(&b.address)));
    Ok(entries)
}

/// Transaction reads a history scan keeps in flight.
const HISTORY_READS_IN_FLIGHT: usize = 8;

/// A closed request as its transactions tell it.
#[derive(Default)]
struct Recovered {
    created_at: Option<i64>,
    closed_at: Option<i64>,
    model: String,
    stake: u64,
    max_price_per_mtok: u64,
    allowed_servers: u8,
    prompt_len: u32,
    /// Prompt chunks by offset.
    prompt: BTreeMap<u32, Vec<u8>>,
    status: Option<RequestStatus>,
    served_by: Option<Address>,
    tokens: u64,
    /// What completion gave back to the wallet (`stake - cost`).
    refund: Option<u64>,
}

/// Closed requests of this wallet, from its transaction history (newest first, at most
/// `query.max_transactions` read), with prompts and answers decrypted.
async fn closed<C: Chain + 'static>(
    client: &Client<C>,
    live: &HashSet<Address>,
    query: HistoryQuery,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let inner = &client.inner;
    let wallet = client.address();
    let program = address(&inner.program.id);
    let mut found: HashMap<Address, Recovered> = HashMap::new();
    let mut before = None;
    let mut read = 0usize;
    'pages: while read < query.max_transactions {
        let asked = query.max_transactions.saturating_sub(read).min(1_000);
        let page = inner.chain.signatures_for(&wallet, before, asked).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.signature);
        read = read.saturating_add(page.len());
        // Newest first: everything from the first one older than `since` on is older too.
        let in_window: Vec<_> = page
            .iter()
            .take_while(|r| query.since.zip(r.block_time).is_none_or(|(since, time)| time >= since))
            .filter(|r| !r.failed)
            .collect();
        let window_ended = in_window.len() < page.iter().filter(|r| !r.failed).count();
        // Several reads in flight: most of a wallet's transactions are not this program's.
        let transactions: Vec<_> = futures::stream::iter(in_window)
            .map(|r| inner.chain.transaction(&r.signature))
            .buffered(HISTORY_READS_IN_FLIGHT)
            .collect()
            .await;
        for transaction in transactions {
            if let Some(transaction) = transaction? {
                note_transaction(&mut found, &transaction, &program, &wallet, live);
            }
        }
        if window_ended {
            break 'pages;
        }
    }

    let mut entries = Vec::new();
    for (request, recovered) in found {
        // Only what was opened within the window read; not on chain any more, so it was closed
        // (its close may not be in the confirmed history yet).
        let Some(created_at) = recovered.created_at else { continue };
        if query.since.is_some_and(|since| created_at < since) {
            continue;
        }
        // Opened after the account scan above (another process of this wallet): not closed.
        if recovered.status.is_none() && inner.chain.account(&request).await?.is_some() {
            continue;
        }
        entries.push(recovered_entry(client, request, recovered, created_at).await?);
    }
    Ok(entries)
}

/// Records what one wallet transaction did to the wallet's closed requests.
fn note_transaction(
    found: &mut HashMap<Address, Recovered>,
    transaction: &ConfirmedTransaction,
    program: &Address,
    wallet: &Address,
    live: &HashSet<Address>,
) {
    let time = transaction.reference.block_time;
    let key = |ix: &chainference_chain::Instruction, index: usize| ix.accounts.get(index).map(|meta| meta.pubkey);
    for ix in transaction.instructions.iter().filter(|ix| ix.program_id == *program) {
        let Ok(decoded) = ProgramInstruction::decode(&ix.data) else { continue };
        let request = match decoded {
            ProgramInstruction::OpenRequest(_) | ProgramInstruction::WritePrompt { .. } => key(ix, 1),
            ProgramInstruction::CancelRequest | ProgramInstruction::CloseRequest => key(ix, 1),
            ProgramInstruction::CompleteRequest { .. } => key(ix, 2),
            ProgramInstruction::ReclaimRequest => key(ix, 0),
            _ => None,
        };
        let Some(request) = request.filter(|r| !live.contains(r)) else { continue };
        let entry = found.entry(request).or_default();
        match decoded {
            ProgramInstruction::OpenRequest(args) if key(ix, 0) == Some(*wallet) => {
                entry.created_at = time;
                entry.model = args.model.to_string();
                entry.stake = args.stake;
                entry.max_price_per_mtok = args.max_price_per_mtok;
                entry.allowed_servers = u8::try_from(args.allowed.len()).unwrap_or(u8::MAX);
                entry.prompt_len = args.prompt_len;
                entry.prompt.insert(0, args.prompt_chunk.to_vec());
            }
            ProgramInstruction::WritePrompt { offset, chunk } => {
                entry.prompt.insert(offset, chunk.to_vec());
            }
            ProgramInstruction::CompleteRequest { tokens } => {
                entry.status = Some(RequestStatus::Completed);
                entry.served_by = key(ix, 0);
                entry.tokens = tokens;
                // The wallet is not the fee payer here: its change is exactly the refund.
                entry.refund = transaction
                    .balances
                    .iter()
                    .find(|b| b.address == *wallet)
                    .map(|b| b.after.saturating_sub(b.before));
            }
            ProgramInstruction::CancelRequest => entry.status = Some(RequestStatus::Cancelled),
            ProgramInstruction::ReclaimRequest => {
                // A reclaim after a completion cannot happen; keep the first terminal status.
                entry.status.get_or_insert(RequestStatus::Expired);
            }
            ProgramInstruction::CloseRequest => entry.closed_at = time,
            _ => {}
        }
    }
}

/// The history entry of a closed request: its prompt from the open and write instructions, its
/// answer from the serving server's appends to its response account.
async fn recovered_entry<C: Chain + 'static>(
    client: &Client<C>,
    request: Address,
    recovered: Recovered,
    created_at: i64,
) -> Result<HistoryEntry, ClientError> {
    let inner = &client.inner;
    let keys = inner.secret.request_keys(&request.to_bytes());
    let mut problems = Vec::new();

    let mut envelope = Vec::new();
    for (offset, chunk) in &recovered.prompt {
        if usize::try_from(*offset).ok() != Some(envelope.len()) {
            break;
        }
        envelope.extend_from_slice(chunk);
    }
    let prompt = if usize::try_from(recovered.prompt_len).ok() == Some(envelope.len()) {
        match keys.open_own_prompt(&envelope, &request.to_bytes()).map(|bytes| PromptPayload::decode(&bytes)) {
            Ok(Ok(payload)) => Some(payload),
            Ok(Err(err)) | Err(err) => {
                problems.push(format!("prompt: {err}"));
                None
            }
        }
    } else {
        problems.push("prompt: not all of it is in the transactions read".into());
        None
    };

    let (mut answer, mut answer_complete) = (None, false);
    if let Some(server) = recovered.served_by {
        match read_answer(client, &keys, &request, &server).await {
            Ok((text, complete)) => (answer, answer_complete) = (Some(text), complete),
            Err(problem) => problems.push(problem),
        }
    }

    let status = recovered.status.unwrap_or_else(|| {
        problems.push("status: how it ended is not in the transactions read".into());
        RequestStatus::Cancelled
    });
    let cost = recovered.refund.map_or(0, |refund| recovered.stake.saturating_sub(refund));
    let state = RequestState {
        status,
        locked_by: recovered.served_by,
        deadline: 0,
        stake: recovered.stake,
        tokens: recovered.tokens,
        cost,
        fee: 0,
        server_held: 0,
        max_price_per_mtok: recovered.max_price_per_mtok,
        price_per_mtok: 0,
        release_count: 0,
        flagged: false,
        compared: false,
        settled_at: 0,
        allowed_servers: recovered.allowed_servers,
        declined_by: 0,
        decline_reasons: DeclineReasons::empty(),
        declined_by_all: false,
    };
    Ok(HistoryEntry {
        address: request,
        model: recovered.model,
        created_at,
        state,
        prompt,
        answer,
        answer_complete,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        closed: true,
        closed_at: recovered.closed_at,
    })
}

/// The answer `server` wrote for `request`, opened from its `AppendResponse` instructions in
/// order. A restart (the server released and answered again) begins a fresh stream: the text
/// starts over from there.
async fn read_answer<C: Chain + 'static>(
    client: &Client<C>,
    keys: &RequestKeys,
    request: &Address,
    server: &Address,
) -> Result<(String, bool), String> {
    let inner = &client.inner;
    let program = address(&inner.program.id);
    let response = address(&inner.program.response(&request.to_bytes()).0);
    let mut references =
        inner.chain.signatures_for(&response, None, 1_000).await.map_err(|err| format!("answer: {err}"))?;
    references.reverse();
    let mut chunks = Vec::new();
    for reference in references.iter().filter(|r| !r.failed) {
        let Some(transaction) =
            inner.chain.transaction(&reference.signature).await.map_err(|err| format!("answer: {err}"))?
        else {
            continue;
        };
        for ix in transaction.instructions.iter().filter(|ix| ix.program_id == program) {
            let writer = ix.accounts.first().map(|meta| meta.pubkey);
            let target = ix.accounts.get(2).map(|meta| meta.pubkey);
            if let Ok(ProgramInstruction::AppendResponse { chunk, .. }) = ProgramInstruction::decode(&ix.data)
                && writer == Some(*server)
                && target == Some(response)
            {
                chunks.push(chunk.to_vec());
            }
        }
    }
    let fresh = || keys.response_opener(&request.to_bytes(), &server.to_bytes());
    if chunks.is_empty() {
        return Err("answer: no AppendResponse of the serving server in the response's history".into());
    }
    let mut opener = fresh();
    let mut bytes = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let opened = opener.open_chunk(chunk).or_else(|_| {
            // The first chunk of a new stream: what came before was released and is void.
            opener = fresh();
            bytes.clear();
            opener.open_chunk(chunk)
        });
        match opened {
            Ok((text, _)) => bytes.extend_from_slice(&text),
            Err(err) => return Err(format!("answer chunk {index}: {err}")),
        }
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), opener.is_finished()))
}
