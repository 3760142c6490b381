//! # chainference-client
//!
//! The async client SDK of Chainference: find servers for a model (and see why others were
//! excluded), estimate what a request costs, send an end-to-end encrypted prompt, stream the
//! answer as it is written on chain, then flag, compare, reclaim, close, and read your history
//! back from chain data alone. It runs over any [`Chain`]: [`EmbeddedChain`] in-process by
//! default, `RpcChain` (feature `rpc`) for real clusters.
//!
//! ```no_run
//! # async fn run() -> Result<(), chainference_client::ClientError> {
//! use chainference_client::{Ask, Chain, Client, EmbeddedChain, Keypair, Signer};
//! use futures::StreamExt;
//!
//! let chain = EmbeddedChain::start()?;
//! let wallet = Keypair::new();
//! chain.airdrop(&wallet.pubkey(), 1_000_000_000).await?;
//! let client = Client::new(chain, wallet);
//!
//! let ask = Ask::new("HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1", "What is the capital of France?")
//!     .max_tokens(256);
//! println!("at most {} lamports", client.estimate(&ask).await?.total_needed());
//! let request = client.ask(ask).await?;
//! let mut text = request.stream();
//! while let Some(piece) = text.next().await {
//!     print!("{}", piece?);
//! }
//! let answer = request.wait().await?;
//! println!("\n{} tokens, {} lamports", answer.receipt.tokens, answer.receipt.cost);
//! // Closed (rent back) inside the next request's transaction: one signature per request.
//! request.close_later().await?;
//! # Ok(()) }
//! ```
//!
//! Servers are played by `chainference-server`; every rule (layouts, lifecycle, pricing,
//! envelope) comes from `chainference-core`.

#![deny(unsafe_code)]

use std::sync::Arc;

pub mod discovery;
mod error;
mod history;
mod request;

#[cfg(feature = "embedded")]
pub use chainference_chain::EmbeddedChain;
pub use chainference_chain::{self as chain, Address, Chain, ChainError, Keypair, Signer};
#[cfg(feature = "rpc")]
pub use chainference_chain::{RpcChain, RpcConfig};
pub use chainference_core as core;
pub use chainference_core::prompt::{ChatMessage, PromptPayload, Role};
pub use chainference_core::state::DeclineReasons;
pub use discovery::{Discovery, Exclusion, Filtered, Policy, ServerFilter, ServerInfo, ServerQuery};
pub use error::ClientError;
pub use history::{HistoryEntry, HistoryQuery};
pub use request::{Answer, AnswerEvent, Ask, Estimate, PendingRequest, Receipt, RequestState, ServerChoice, Stake};

use chainference_chain::{AccountFilter, address, instruction};
use chainference_core::builders::{self, CompareSide, Program};
use chainference_core::envelope::{CLIENT_KEY_MESSAGE, ClientSecret};
use chainference_core::model::ModelId;
use chainference_core::pricing;
use chainference_core::state::{AccountKind, RequestAccount, RequestHeader, RequestStatus};

/// A wallet's view of the network: its keys, a chain, and the program's addresses.
///
/// Cheap to clone (everything is shared); requests it opens keep working after it is dropped.
pub struct Client<C: Chain + 'static> {
    pub(crate) inner: Arc<Inner<C>>,
}

impl<C: Chain + 'static> Clone for Client<C> {
    fn clone(&self) -> Self {
        Client { inner: Arc::clone(&self.inner) }
    }
}

pub(crate) struct Inner<C> {
    pub(crate) chain: C,
    pub(crate) wallet: Keypair,
    /// Derived from the wallet's signature of [`CLIENT_KEY_MESSAGE`]: what a browser wallet
    /// that cannot export its key derives too, so both read the same history.
    pub(crate) secret: ClientSecret,
    pub(crate) program: Program,
    /// Finished requests waiting to be closed inside this wallet's next open transaction
    /// ([`PendingRequest::close_later`]), oldest first.
    pub(crate) to_close: std::sync::Mutex<Vec<request::Finished>>,
}

impl<C: Chain + 'static> Client<C> {
    /// A client for `wallet` on `chain`, at core's program id.
    pub fn new(chain: C, wallet: Keypair) -> Self {
        Self::with_program(chain, wallet, Program::default())
    }

    /// A client for a deployment at another program id.
    pub fn with_program(chain: C, wallet: Keypair, program: Program) -> Self {
        let signature = wallet.sign_message(CLIENT_KEY_MESSAGE);
        let secret = ClientSecret::from_wallet_signature(signature.as_array());
        Client { inner: Arc::new(Inner { chain, wallet, secret, program, to_close: Default::default() }) }
    }

    /// The wallet's address.
    pub fn address(&self) -> Address {
        self.inner.wallet.pubkey()
    }

    /// The chain this client talks to.
    pub fn chain(&self) -> &C {
        &self.inner.chain
    }

    /// The deployment's addresses.
    pub fn program(&self) -> &Program {
        &self.inner.program
    }

    /// The wallet's balance in lamports.
    pub async fn balance(&self) -> Result<u64, ClientError> {
        Ok(self.inner.chain.balance(&self.address()).await?)
    }

    /// Every server offering `query.model` (every server, for [`ServerQuery::any_model`]), split into eligible (best first) and excluded (with
    /// every reason). Errors only if the chain cannot be read or the model id is invalid.
    pub async fn servers(&self, query: &ServerQuery) -> Result<Discovery, ClientError> {
        let model = query.model.as_deref().map(ModelId::parse).transpose()?.map(|model| model.canonical());
        let filters = [AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Server as u8] }];
        let accounts = self.inner.chain.program_accounts(&address(&self.inner.program.id), &filters).await?;
        let mut discovery =
            Discovery { model: model.clone(), eligible: Vec::new(), excluded: Vec::new(), unreadable: Vec::new() };
        for (account, data) in accounts {
            match ServerInfo::decode(account, &data.data, model.as_deref()) {
                Ok(server) => {
                    let reasons = server.exclusions(query, &self.address());
                    if reasons.is_empty() {
                        discovery.eligible.push(server);
                    } else if server.price.is_some() || reasons.iter().any(|r| !matches!(r, Exclusion::ModelNotOffered))
                    {
                        discovery.excluded.push((server, reasons));
                    }
                }
                Err(err) => discovery.unreadable.push((account, err)),
            }
        }
        if query.weigh_comparisons && !discovery.eligible.is_empty() {
            // Best effort: a cluster whose RPC refuses the scan still gets a ranking (raw shares).
            match self.preferences_by_client().await {
                Ok(by_server) => {
                    for server in &mut discovery.eligible {
                        server.preference_by_client_bps = by_server.get(&server.authority.to_bytes()).copied();
                    }
                }
                Err(err) => tracing::debug!(%err, "comparisons not weighed per client"),
            }
        }
        Policy::MostReliable.rank(&mut discovery.eligible);
        Ok(discovery)
    }

    /// Every server's preference share with each comparing client as one voice (see
    /// [`ServerInfo::preference_by_client_bps`]), from one scan of the completed requests still
    /// on chain: the mean over comparing clients of each client's wins / comparisons.
    pub async fn preferences_by_client(&self) -> Result<std::collections::HashMap<[u8; 32], u16>, ClientError> {
        use std::collections::HashMap;
        let filters = [
            AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Request as u8] },
            AccountFilter::Memcmp { offset: RequestHeader::STATUS_OFFSET, bytes: vec![RequestStatus::Completed as u8] },
        ];
        let completed = self.inner.chain.program_accounts(&address(&self.inner.program.id), &filters).await?;
        // Per (server, comparing client): (comparisons, wins).
        let mut votes: HashMap<([u8; 32], [u8; 32]), (u64, u64)> = HashMap::new();
        for (_, account) in completed {
            let Ok(header) = RequestHeader::decode(&account.data) else { continue };
            if header.compared() {
                let entry = votes.entry((header.locked_by, header.client)).or_default();
                entry.0 = entry.0.saturating_add(1);
                entry.1 = entry.1.saturating_add(u64::from(header.preferred()));
            }
        }
        // Per server: (sum of the clients' shares in bps, clients).
        let mut shares: HashMap<[u8; 32], (u64, u64)> = HashMap::new();
        for ((server, _), (comparisons, wins)) in votes {
            let share = u64::from(pricing::ratio_bps(wins, comparisons).unwrap_or(0));
            let entry = shares.entry(server).or_default();
            entry.0 = entry.0.saturating_add(share);
            entry.1 = entry.1.saturating_add(1);
        }
        Ok(shares
            .into_iter()
            .map(|(server, (sum, clients))| {
                (server, u16::try_from(sum.checked_div(clients).unwrap_or(0)).unwrap_or(10_000))
            })
            .collect())
    }

    /// One server by its authority, `None` if it is not registered.
    pub async fn server(&self, authority: &Address, model: &str) -> Result<Option<ServerInfo>, ClientError> {
        let model = ModelId::parse(model)?.canonical();
        let account = address(&self.inner.program.server(&authority.to_bytes()));
        match self.inner.chain.account(&account).await? {
            Some(data) => Ok(Some(ServerInfo::decode(account, &data.data, Some(&model))?)),
            None => Ok(None),
        }
    }

    /// What `ask` would lock and spend, without sending anything.
    pub async fn estimate(&self, ask: &Ask) -> Result<Estimate, ClientError> {
        Ok(request::Prepared::new(self, ask.clone()).await?.estimate)
    }

    /// Sends a request: picks or checks the servers, seals the prompt to them and to this
    /// wallet, uploads it (in several transactions when it does not fit one), and returns the
    /// pending request to stream or wait on.
    pub async fn ask(&self, ask: Ask) -> Result<PendingRequest<C>, ClientError> {
        request::Prepared::new(self, ask).await?.send(self).await
    }

    /// Sends the same prompt to two different servers as two unlinkable requests (fresh salts
    /// and envelopes; each server sees only its own), ready for [`Client::compare`].
    pub async fn ask_pair(
        &self,
        ask: Ask,
        first: Address,
        second: Address,
    ) -> Result<(PendingRequest<C>, PendingRequest<C>), ClientError> {
        if first == second {
            return Err(ClientError::Invalid("a comparison needs two different servers".into()));
        }
        let a = self.ask(ask.clone().servers(ServerChoice::Explicit(vec![first]))).await?;
        let b = self.ask(ask.servers(ServerChoice::Explicit(vec![second]))).await?;
        Ok((a, b))
    }

    /// A request this wallet opened earlier, by address.
    pub async fn request(&self, request: &Address) -> Result<PendingRequest<C>, ClientError> {
        PendingRequest::load(self, *request).await
    }

    /// Flags a completed answer as bad (within the config's flag window): the server's
    /// `flagged` count grows when the completion counted. No lamport comes back: see
    /// [`Client::dispute`] for that (a request is flagged or disputed, once).
    pub async fn flag(&self, request: &Address) -> Result<(), ClientError> {
        self.flag_or_dispute(request, false).await.map(|_| ())
    }

    /// Disputes a completed answer's bill (within the flag window): the config's share of the
    /// server's held payment comes back to this wallet, and the server's reputation is left
    /// alone. Returns the lamports that came back, net of the transaction fee.
    pub async fn dispute(&self, request: &Address) -> Result<u64, ClientError> {
        self.flag_or_dispute(request, true).await
    }

    async fn flag_or_dispute(&self, request: &Address, refund: bool) -> Result<u64, ClientError> {
        let account = self.read_request(request).await?;
        let header = RequestAccount::decode(&account)?.header;
        if header.status != RequestStatus::Completed {
            return Err(ClientError::WrongState {
                request: *request,
                status: header.status,
                hint: "only a completed answer can be flagged or disputed",
            });
        }
        let client = self.address().to_bytes();
        let build = if refund { builders::dispute_response } else { builders::flag_response };
        let ix = build(&self.inner.program, &client, &request.to_bytes(), &header.locked_by);
        let before = self.inner.chain.balance(&self.address()).await?;
        self.inner.chain.send(&[instruction(ix)], &[&self.inner.wallet]).await?;
        Ok(self.inner.chain.balance(&self.address()).await?.saturating_sub(before))
    }

    /// Compares two completed answers to the same prompt from two servers; `preferred` is the
    /// better one. Reveals the two salts and the prompt digest so the program can check both
    /// commitments; the prompt itself stays sealed.
    pub async fn compare(&self, a: &Address, b: &Address, preferred: &Address) -> Result<(), ClientError> {
        if preferred != a && preferred != b {
            return Err(ClientError::Invalid("the preferred request must be one of the two compared".into()));
        }
        let data_a = self.read_request(a).await?;
        let data_b = self.read_request(b).await?;
        let request_a = RequestAccount::decode(&data_a)?;
        let request_b = RequestAccount::decode(&data_b)?;
        for (address, request) in [(a, &request_a), (b, &request_b)] {
            if request.header.status != RequestStatus::Completed {
                return Err(ClientError::WrongState {
                    request: *address,
                    status: request.header.status,
                    hint: "only completed answers can be compared",
                });
            }
        }
        let keys = self.inner.secret.request_keys(&a.to_bytes());
        let prompt = keys.open_own_prompt(request_a.prompt, &a.to_bytes())?;
        let digest = self.inner.secret.prompt_digest(request_a.model, &prompt);
        let salt_a = self.inner.secret.commitment_salt(&a.to_bytes());
        let salt_b = self.inner.secret.commitment_salt(&b.to_bytes());
        let (a_bytes, b_bytes) = (a.to_bytes(), b.to_bytes());
        let ix = builders::compare_responses(
            &self.inner.program,
            &self.address().to_bytes(),
            [
                CompareSide { request: &a_bytes, served_by: &request_a.header.locked_by, salt: &salt_a },
                CompareSide { request: &b_bytes, served_by: &request_b.header.locked_by, salt: &salt_b },
            ],
            &digest,
            u8::from(preferred == b),
        );
        self.inner.chain.send(&[instruction(ix)], &[&self.inner.wallet]).await?;
        Ok(())
    }

    /// Closes every request queued with [`PendingRequest::close_later`] that no open
    /// transaction has closed yet, up to four per transaction (one signature each). Call it
    /// before a client that asked goes away: the queue lives in memory only. Returns how many
    /// were closed; a batch that fails stays queued (the first error is returned after the rest
    /// were tried).
    pub async fn close_finished(&self) -> Result<usize, ClientError> {
        let queued = std::mem::take(&mut *request::lock_queue(&self.inner.to_close));
        let (mut closed, mut failure) = (0usize, None);
        for batch in queued.chunks(4) {
            let mut ixs = Vec::with_capacity(batch.len());
            for finished in batch {
                // Closed meanwhile (by hand, or by anyone after the retention): nothing to do.
                // Unreadable now: it stays queued.
                match self.inner.chain.account(&address(&finished.request)).await {
                    // Ended: closable. Not ended (the chain rolled back past its end, after a
                    // node restart): it stays queued for a later call rather than fail the batch.
                    Ok(Some(account)) => match RequestHeader::decode(&account.data) {
                        Ok(header) if header.status.is_terminal() => {
                            let wallet = self.address().to_bytes();
                            let closable = finished.as_on_chain(&header, wallet);
                            ixs.push(closable.close_instruction(&self.inner.program, &wallet))
                        }
                        _ => request::requeue(&self.inner.to_close, [*finished]),
                    },
                    Ok(None) => {}
                    Err(err) => {
                        request::requeue(&self.inner.to_close, [*finished]);
                        failure.get_or_insert(err);
                    }
                }
            }
            if ixs.is_empty() {
                continue;
            }
            if let Err(err) = self.inner.chain.send(&ixs, &[&self.inner.wallet]).await {
                // Keep this batch for a later try and go on with the next one.
                tracing::warn!(%err, "closing finished requests failed; they stay queued");
                request::requeue(&self.inner.to_close, batch.iter().copied());
                failure.get_or_insert(err);
                continue;
            }
            closed = closed.saturating_add(ixs.len());
        }
        match failure {
            Some(err) => Err(err.into()),
            None => Ok(closed),
        }
    }

    /// This wallet's requests, oldest first, with prompts and answers decrypted from chain data
    /// with nothing but the wallet: those still on chain, and closed ones recovered from the
    /// last 500 transactions of the wallet ([`HistoryQuery::default`]).
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, ClientError> {
        history::load(self, HistoryQuery::default()).await
    }

    /// [`Client::history`] with a time window and how far back to read closed requests.
    pub async fn history_with(&self, query: HistoryQuery) -> Result<Vec<HistoryEntry>, ClientError> {
        history::load(self, query).await
    }

    pub(crate) async fn read_request(&self, request: &Address) -> Result<Vec<u8>, ClientError> {
        self.inner
            .chain
            .account(request)
            .await?
            .map(|account| account.data)
            .ok_or(ClientError::RequestNotFound(*request))
    }
}
