//! What to ask, of whom and on what terms; choosing the servers, sealing and uploading.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chainference_chain::{Address, Chain, Instruction, address, instruction};
use chainference_core::Error as CoreError;
use chainference_core::builders::{self, PromptUpload, RequestRefs};
use chainference_core::envelope;
use chainference_core::instruction::OpenRequestArgs;
use chainference_core::model::ModelId;
use chainference_core::pricing;
use chainference_core::prompt::{ChatMessage, PromptPayload};
use chainference_core::state::{MAX_ALLOWED_SERVERS, RequestHeader};
use zeroize::Zeroizing;

use super::pending::{Finished, PendingRequest, lock_queue, requeue};
use crate::discovery::{Exclusion, Filtered, Policy, ServerFilter, ServerInfo, ServerQuery};
use crate::{Client, ClientError};

/// Which servers may serve a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerChoice {
    /// These server authorities (1..=8), each checked against the request's filters.
    Explicit(Vec<Address>),
    /// The best `count` (1..=8) eligible servers by `policy`.
    Best {
        /// How many to allow.
        count: usize,
        /// How to rank them.
        policy: Policy,
    },
}

/// How much to escrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stake {
    /// Exactly this many lamports (the most the request can cost).
    Lamports(u64),
    /// Enough for `max_tokens` at the highest price among the allowed servers.
    Auto,
}

/// What to ask, of whom, and on what terms. Build with [`Ask::new`] and the setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The model (any spelling `ModelId::parse` accepts).
    pub model: String,
    /// The prompt: messages and sampling settings.
    pub payload: PromptPayload,
    /// Who may serve it.
    pub servers: ServerChoice,
    /// Most billable tokens (prompt + completion, by the model's tokenizer).
    pub max_tokens: u32,
    /// The escrow.
    pub stake: Stake,
    /// Seconds a server has from publication (0: the config's default).
    pub timeout_secs: u32,
    /// Price cap and reputation filters (the filters are enforced on-chain too); set them with
    /// the [`Filtered`] setters.
    pub filter: ServerFilter,
}

impl Ask {
    /// One user message to `model`, the best 3 servers by reliability, 512 billable tokens, an
    /// automatic stake and the default timeout.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self::with_payload(model, PromptPayload::user(prompt))
    }

    /// A whole conversation.
    pub fn chat(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self::with_payload(model, PromptPayload::chat(messages))
    }

    /// A prepared payload.
    pub fn with_payload(model: impl Into<String>, payload: PromptPayload) -> Self {
        Ask {
            model: model.into(),
            payload,
            servers: ServerChoice::Best { count: 3, policy: Policy::MostReliable },
            max_tokens: 512,
            stake: Stake::Auto,
            timeout_secs: 0,
            filter: ServerFilter::default(),
        }
    }

    /// Who may serve it.
    pub fn servers(mut self, servers: ServerChoice) -> Self {
        self.servers = servers;
        self
    }

    /// Allows exactly these server authorities.
    pub fn to_servers(self, servers: impl IntoIterator<Item = Address>) -> Self {
        self.servers(ServerChoice::Explicit(servers.into_iter().collect()))
    }

    /// Allows the best `count` eligible servers by `policy`.
    pub fn best(self, count: usize, policy: Policy) -> Self {
        self.servers(ServerChoice::Best { count, policy })
    }

    /// Most billable tokens.
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = tokens;
        self
    }

    /// Most completion tokens (the server stops there even if `max_tokens` allows more).
    pub fn max_completion_tokens(mut self, tokens: u32) -> Self {
        self.payload.max_completion_tokens = tokens;
        self
    }

    /// Escrows exactly `lamports`.
    pub fn stake(mut self, lamports: u64) -> Self {
        self.stake = Stake::Lamports(lamports);
        self
    }

    /// Seconds a server has.
    pub fn timeout_secs(mut self, seconds: u32) -> Self {
        self.timeout_secs = seconds;
        self
    }

    /// Sampling temperature (0 = greedy).
    pub fn temperature(mut self, temperature: f32) -> Self {
        let milli = (temperature.clamp(0.0, 65.0) * 1000.0).round();
        // In 0..=65,000 after the clamp.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let milli = milli as u16;
        self.payload.temperature_milli = milli;
        self
    }

    /// Texts that end the answer: it stops just before the first occurrence of any of them
    /// (which is not part of it), and only the tokens generated up to there are billed. At most
    /// [`chainference_core::prompt::MAX_STOP_SEQUENCES`], each 1 to
    /// [`chainference_core::prompt::MAX_STOP_LEN`] bytes; checked when the request is prepared.
    pub fn stop<S: Into<String>>(mut self, sequences: impl IntoIterator<Item = S>) -> Self {
        self.payload.stop = sequences.into_iter().map(Into::into).collect();
        self
    }

    /// Sampling seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.payload.seed = seed;
        self
    }

    fn query(&self) -> ServerQuery {
        ServerQuery {
            model: Some(self.model.clone()),
            filter: self.filter,
            include_inactive: false,
            weigh_comparisons: true,
        }
    }
}

impl Filtered for Ask {
    fn filter_mut(&mut self) -> &mut ServerFilter {
        &mut self.filter
    }
}

/// What a request will lock and spend, before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The escrow: the most the answer can cost. What is not charged comes back at completion.
    pub stake: u64,
    /// Rent the request account locks; returned when it is closed.
    pub rent_locked: u64,
    /// Fees of the transactions that open and upload it.
    pub transaction_fees: u64,
    /// How many transactions that is (1 unless the prompt needs chunks).
    pub transactions: usize,
    /// Fee of a transaction that closes it alone ([`crate::PendingRequest::close`]); closed
    /// inside this wallet's next request instead ([`crate::PendingRequest::close_later`]), it
    /// costs no signature of its own.
    pub close_fee: u64,
    /// Earlier finished requests of this wallet closed inside this request's open transaction
    /// (their rent comes back with no signature of their own).
    pub closes_bundled: usize,
    /// Signatures the client pays for opening it: one per transaction.
    pub signatures: usize,
    /// The servers it will be sealed to.
    pub servers: Vec<ServerInfo>,
    /// Size of the sealed prompt.
    pub envelope_len: usize,
}

impl Estimate {
    /// What the wallet must hold to send it.
    pub fn total_needed(&self) -> u64 {
        self.stake.saturating_add(self.rent_locked).saturating_add(self.transaction_fees)
    }

    /// The most the whole life of the request can cost: the stake, every fee, nothing of the rent.
    pub fn max_spend(&self) -> u64 {
        self.stake.saturating_add(self.transaction_fees).saturating_add(self.close_fee)
    }
}

/// A request ready to send: servers chosen, prompt sealed, transactions built.
pub(crate) struct Prepared {
    pub(crate) estimate: Estimate,
    address: Address,
    response: Address,
    model: String,
    transactions: Vec<Instruction>,
    /// Queued closes that ride in the first transaction.
    closes: Vec<Finished>,
}

/// Most earlier requests one open transaction closes (each adds three account keys).
pub const MAX_BUNDLED_CLOSES: usize = 2;

impl Prepared {
    pub(crate) async fn new<C: Chain + 'static>(client: &Client<C>, ask: Ask) -> Result<Self, ClientError> {
        let model = ModelId::parse(&ask.model)?.canonical();
        if ask.max_tokens == 0 {
            return Err(ClientError::Invalid("max_tokens must be at least 1".into()));
        }
        check_stop_sequences(&ask.payload.stop)?;
        let servers = choose_servers(client, &ask, &model).await?;
        let payload = Zeroizing::new(ask.payload.encode()?);
        let stake = match ask.stake {
            Stake::Lamports(0) => return Err(ClientError::Invalid("the stake must be at least 1 lamport".into())),
            Stake::Lamports(lamports) => lamports,
            Stake::Auto => {
                let price = servers.iter().filter_map(|s| s.price).max().unwrap_or(0);
                pricing::stake_for(u64::from(ask.max_tokens), price)
                    .ok_or(chainference_core::Error::ArithmeticOverflow)?
                    .max(1)
            }
        };

        let inner = &client.inner;
        let wallet = inner.wallet_address();
        // v2: request and response PDAs both canonical at bump 255 (about one nonce in four).
        let nonce = inner.program.usable_nonce(&wallet, random_nonce()?);
        let (request, bump) = inner.program.request(&wallet, nonce);
        let (response, _) = inner.program.response(&request);
        // The price cap is the dearest price quoted by the chosen servers: a server that raises
        // its price after the open cannot lock at the new one.
        let max_price_per_mtok = servers.iter().filter_map(|s| s.price).max().unwrap_or(0);
        let keys = inner.secret.request_keys(&request);
        let server_keys: Vec<[u8; 32]> = servers.iter().map(|s| s.hpke_key).collect();
        let sealed = envelope::seal_prompt(&request, &server_keys, &keys.prompt_public_key(), &payload)?;
        let commitment = inner.secret.commitment(&request, &model, &payload);
        let allowed: Vec<[u8; 32]> = servers.iter().map(|s| s.authority.to_bytes()).collect();
        let args = OpenRequestArgs {
            nonce,
            bump,
            stake,
            max_price_per_mtok,
            max_tokens: ask.max_tokens,
            timeout: ask.timeout_secs,
            min_completed: ask.filter.min_completed,
            min_success_bps: ask.filter.min_success_bps,
            response_key: &keys.response_public_key(),
            commitment: &commitment,
            model: &model,
            allowed: &allowed,
            prompt_len: 0,
            prompt_chunk: &[],
        };
        let upload = PromptUpload::with_reserve(&sealed, model.len(), allowed.len(), builders::TRANSACTION_RESERVE);
        let transactions: Vec<Instruction> = builders::open_request_upload(&inner.program, &wallet, &args, &upload)?
            .into_iter()
            .map(instruction)
            .collect();

        let payer = address(&wallet);
        let closes = bundled_closes(client, &transactions, &payer).await?;
        let mut transaction_fees = 0u64;
        for (index, ix) in transactions.iter().enumerate() {
            let mut ixs = vec![ix.clone()];
            if index == 0 {
                ixs.extend(closes.iter().map(|f| f.close_instruction(&inner.program, &wallet)));
            }
            let fee = inner.chain.fee_for(&ixs, &payer).await?;
            transaction_fees = transaction_fees.saturating_add(fee);
        }
        let size = RequestHeader::account_size(model.len(), sealed.len());
        let rent_locked = inner.chain.rent_exempt_minimum(size).await?;
        let refs = RequestRefs { request, response, client: wallet };
        let close = instruction(builders::close_request(&inner.program, &wallet, &refs, &wallet));
        let close_fee = inner.chain.fee_for(&[close], &payer).await?;
        Ok(Prepared {
            estimate: Estimate {
                stake,
                rent_locked,
                transaction_fees,
                transactions: transactions.len(),
                close_fee,
                closes_bundled: closes.len(),
                signatures: transactions.len(),
                servers,
                envelope_len: sealed.len(),
            },
            address: address(&request),
            response: address(&response),
            model,
            transactions,
            closes,
        })
    }

    pub(crate) async fn send<C: Chain + 'static>(self, client: &Client<C>) -> Result<PendingRequest<C>, ClientError> {
        let inner = &client.inner;
        let available = inner.chain.balance(&client.address()).await?;
        let mut needed = self.estimate.total_needed();
        if let Some(left) = available.checked_sub(needed).filter(|left| *left > 0) {
            // A wallet left with less than the rent-exempt minimum (but not empty) is refused.
            let reserve = inner.chain.rent_exempt_minimum(0).await?;
            if left < reserve {
                needed = needed.saturating_add(reserve);
            }
        }
        if let Some(missing) = needed.checked_sub(available).filter(|missing| *missing > 0) {
            return Err(ClientError::InsufficientFunds { needed, available, missing });
        }
        let fees = Arc::new(AtomicU64::new(0));
        let pending = PendingRequest {
            client: client.clone(),
            address: self.address,
            response: self.response,
            model: self.model.clone(),
            stake: self.estimate.stake,
            rent_locked: self.estimate.rent_locked,
            fees: Arc::clone(&fees),
        };
        let wallet = inner.wallet_address();
        // The queued closes ride in the first transaction. If one of them fails (closed
        // meanwhile, say), the open goes again alone and the others stay queued; if the open
        // itself fails, so does the ask; if the outcome is unknown, the chain says which.
        let bundled: Vec<Finished> = {
            let mut queue = lock_queue(&inner.to_close);
            // By request: the close may pay whom the chain says now rather than whom was queued.
            let bundled: Vec<Finished> =
                self.closes.iter().filter(|f| queue.iter().any(|q| q.request == f.request)).copied().collect();
            queue.retain(|q| !bundled.iter().any(|b| b.request == q.request));
            bundled
        };
        if let Some(first) = self.transactions.first()
            && !bundled.is_empty()
        {
            let mut ixs = vec![first.clone()];
            ixs.extend(bundled.iter().map(|f| f.close_instruction(&inner.program, &wallet)));
            match inner.chain.send(&ixs, &[&inner.wallet]).await {
                Ok(sent) => {
                    fees.fetch_add(sent.fee, Ordering::Relaxed);
                    return self.upload_rest(client, pending, 1).await;
                }
                Err(chainference_chain::ChainError::Transaction {
                    error: chainference_chain::TransactionError::InstructionError(index, ..),
                    charged,
                    ..
                }) if index >= 1 => {
                    fees.fetch_add(charged, Ordering::Relaxed);
                    let failed = usize::from(index).saturating_sub(1);
                    tracing::debug!(failed, "a bundled close failed; sending the open alone");
                    let keep = bundled.iter().enumerate().filter(|(i, _)| *i != failed).map(|(_, f)| *f);
                    requeue(&inner.to_close, keep);
                }
                Err(err) => {
                    if let chainference_chain::ChainError::Transaction { charged, .. } = &err {
                        fees.fetch_add(*charged, Ordering::Relaxed);
                    } else if landed(&inner.chain, &self.address, &err).await {
                        // Reported lost, but it landed (closes included: one transaction).
                        return self.upload_rest(client, pending, 1).await;
                    }
                    requeue(&inner.to_close, bundled);
                    return Err(err.into());
                }
            }
        }
        self.upload_rest(client, pending, 0).await
    }

    /// Sends the upload's transactions from `start` on; a failure after the first cancels and
    /// closes the half-uploaded request.
    async fn upload_rest<C: Chain + 'static>(
        self,
        client: &Client<C>,
        pending: PendingRequest<C>,
        start: usize,
    ) -> Result<PendingRequest<C>, ClientError> {
        let inner = &client.inner;
        let fees = Arc::clone(&pending.fees);
        for (index, ix) in self.transactions.iter().enumerate().skip(start) {
            match inner.chain.send(std::slice::from_ref(ix), &[&inner.wallet]).await {
                Ok(sent) => {
                    fees.fetch_add(sent.fee, Ordering::Relaxed);
                }
                Err(err) => {
                    if let chainference_chain::ChainError::Transaction { charged, .. } = &err {
                        fees.fetch_add(*charged, Ordering::Relaxed);
                    } else if index == 0 && landed(&inner.chain, &pending.address, &err).await {
                        // Reported lost (a transport failure), but the open is on chain: go on
                        // rather than leave a request nobody follows.
                        continue;
                    }
                    if index > 0 {
                        // Half uploaded: take the stake and rent back rather than strand them
                        // (only this wallet can cancel a Draft: through a passing outage too).
                        if let Err(cancel) = cancel_through_outage(&pending).await {
                            tracing::warn!(request = %pending.address, %cancel, "could not cancel a half-uploaded request");
                        } else if let Err(close) = pending.close().await {
                            tracing::warn!(request = %pending.address, %close, "could not close a cancelled request");
                        }
                    }
                    return Err(err.into());
                }
            }
        }
        tracing::debug!(request = %pending.address, transactions = self.transactions.len(), "request published");
        Ok(pending)
    }
}

/// Cancels a half-uploaded request, trying again for [`LANDED_PATIENCE`] while the chain fails
/// the way a lost connection does.
async fn cancel_through_outage<C: Chain + 'static>(pending: &PendingRequest<C>) -> Result<u64, ClientError> {
    let started = tokio::time::Instant::now();
    loop {
        match pending.cancel().await {
            Err(ClientError::Chain(err)) if err.program_error().is_none() && started.elapsed() < LANDED_PATIENCE => {
                tracing::debug!(%err, "cancelling a half-uploaded request failed; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// How long an open whose outcome is unknown is looked for on chain while the chain fails.
const LANDED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a request not found yet is looked for after a transport failure: a transaction
/// sent before it may still be on its way.
const IN_FLIGHT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The same after the transport gave up confirming: the transaction it sent last may land
/// until its blockhash expires (about 150 slots, a minute or more).
const UNCONFIRMED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(90);

/// Whether the request account exists, for a send whose outcome is unknown (the transport
/// failed after or while sending). Asks until the chain answers (up to [`LANDED_PATIENCE`]), and
/// keeps looking for [`IN_FLIGHT_PATIENCE`] while it is absent: a single read would say "no" for
/// an open still in flight, and the caller would lose track of a request that then lands.
async fn landed<C: Chain>(chain: &C, request: &Address, err: &chainference_chain::ChainError) -> bool {
    let in_flight = match err {
        chainference_chain::ChainError::Unconfirmed { .. } => UNCONFIRMED_PATIENCE,
        chainference_chain::ChainError::Rpc(_) => IN_FLIGHT_PATIENCE,
        // Rejected before it was sent or processed, or never sent: nothing can land.
        _ => return false,
    };
    let started = tokio::time::Instant::now();
    let mut first_answer: Option<tokio::time::Instant> = None;
    loop {
        match chain.account(request).await {
            Ok(Some(_)) => return true,
            Ok(None) => {
                let since = *first_answer.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= in_flight {
                    return false;
                }
            }
            Err(err) if started.elapsed() < LANDED_PATIENCE => {
                tracing::debug!(%request, %err, "checking whether the open landed; asking again");
            }
            Err(_) => return false,
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

impl<C> crate::Inner<C> {
    pub(crate) fn wallet_address(&self) -> [u8; 32] {
        chainference_chain::Signer::pubkey(&self.wallet).to_bytes()
    }
}

/// Which queued closes (oldest first, at most [`MAX_BUNDLED_CLOSES`]) can ride in the open
/// transaction: only when the upload is that one transaction, only requests still on chain, and
/// only as many as keep [`builders::TRANSACTION_RESERVE`] free.
async fn bundled_closes<C: Chain + 'static>(
    client: &Client<C>,
    transactions: &[Instruction],
    payer: &Address,
) -> Result<Vec<Finished>, ClientError> {
    let inner = &client.inner;
    let [open] = transactions else { return Ok(Vec::new()) };
    let queued: Vec<Finished> = lock_queue(&inner.to_close).clone();
    let mut closes = Vec::new();
    for finished in queued {
        if closes.len() == MAX_BUNDLED_CLOSES {
            break;
        }
        let Some(account) = inner.chain.account(&address(&finished.request)).await? else {
            lock_queue(&inner.to_close).retain(|f| *f != finished); // closed meanwhile
            continue;
        };
        // Not ended (the chain rolled back past its end): closing it would fail the open.
        let Ok(header) = RequestHeader::decode(&account.data) else { continue };
        if !header.status.is_terminal() {
            continue;
        }
        let finished = finished.as_on_chain(&header, payer.to_bytes());
        let mut ixs = vec![open.clone()];
        ixs.extend(
            closes.iter().chain([&finished]).map(|f: &Finished| f.close_instruction(&inner.program, &payer.to_bytes())),
        );
        if chainference_chain::transaction_len(&ixs, payer).saturating_add(builders::TRANSACTION_RESERVE)
            <= builders::MAX_TRANSACTION_LEN
        {
            closes.push(finished);
        } else {
            break;
        }
    }
    Ok(closes)
}

/// The stop sequences' bounds (core's rule), with a message that names them.
fn check_stop_sequences(stop: &[String]) -> Result<(), ClientError> {
    use chainference_core::prompt::{MAX_STOP_LEN, MAX_STOP_SEQUENCES};
    chainference_core::prompt::check_stop_sequences(stop).map_err(|_| {
        ClientError::Invalid(format!(
            "stop: at most {MAX_STOP_SEQUENCES} sequences of 1 to {MAX_STOP_LEN} bytes each (got {} of {:?} bytes)",
            stop.len(),
            stop.iter().map(String::len).collect::<Vec<_>>()
        ))
    })
}

fn random_nonce() -> Result<u64, ClientError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|_| chainference_core::Error::RandomnessUnavailable)?;
    Ok(u64::from_le_bytes(bytes))
}

async fn choose_servers<C: Chain + 'static>(
    client: &Client<C>,
    ask: &Ask,
    model: &str,
) -> Result<Vec<ServerInfo>, ClientError> {
    let query = ask.query();
    match &ask.servers {
        ServerChoice::Explicit(authorities) => {
            // The program's own allow-list rule (1 to 8 servers, none twice), before any lookup,
            // with the count or the server it tripped on.
            let allow_list: Vec<[u8; 32]> = authorities.iter().map(Address::to_bytes).collect();
            if let Err(err) = chainference_core::lifecycle::check_allow_list(&allow_list) {
                let detail = match err {
                    CoreError::DuplicateAllowedServer => authorities
                        .iter()
                        .enumerate()
                        .find(|(i, a)| authorities.iter().take(*i).any(|b| b == *a))
                        .map(|(_, server)| format!("server {server} named twice")),
                    CoreError::InvalidAllowList if (1..=MAX_ALLOWED_SERVERS).contains(&authorities.len()) => {
                        Some(format!("{} is not a server", Address::default()))
                    }
                    CoreError::InvalidAllowList => Some(format!("{} servers named", authorities.len())),
                    _ => None,
                };
                return Err(ClientError::Invalid(match detail {
                    Some(detail) => format!("{err}: {detail}"),
                    None => err.to_string(),
                }));
            }
            let mut chosen = Vec::with_capacity(authorities.len());
            for authority in authorities {
                let server = client
                    .server(authority, model)
                    .await?
                    .ok_or_else(|| ClientError::Invalid(format!("server {authority} is not registered")))?;
                let reasons = server.exclusions(&query, &client.address());
                if !reasons.is_empty() {
                    return Err(ClientError::ServerExcluded { server: *authority, reasons });
                }
                chosen.push(server);
            }
            Ok(chosen)
        }
        ServerChoice::Best { count, policy } => {
            if *count == 0 || *count > chainference_core::state::MAX_ALLOWED_SERVERS {
                return Err(ClientError::Invalid(format!(
                    "best {count}: a request allows 1 to {} servers",
                    chainference_core::state::MAX_ALLOWED_SERVERS
                )));
            }
            let discovery = client.servers(&query).await?;
            if discovery.eligible.is_empty() {
                // Servers that do not offer the model at all are not "excluded" to a user.
                let offering = discovery.excluded.iter().filter(|(_, why)| !why.contains(&Exclusion::ModelNotOffered));
                if offering.count() == 0 {
                    return Err(ClientError::NoServerOffersModel { model: model.to_string() });
                }
                return Err(ClientError::AllServersExcluded {
                    model: model.to_string(),
                    excluded: discovery.excluded.into_iter().map(|(s, why)| (s.authority, why)).collect(),
                });
            }
            let mut eligible = discovery.eligible;
            policy.rank(&mut eligible);
            eligible.truncate(*count);
            Ok(eligible)
        }
    }
}
