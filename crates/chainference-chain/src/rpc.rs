//! [`RpcChain`]: any cluster over JSON-RPC and websocket pubsub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use solana_account_decoder_client_types::{UiAccount, UiAccountEncoding};
use solana_commitment_config::CommitmentConfig;
use solana_message::Message;
use solana_pubsub_client::nonblocking::pubsub_client::PubsubClient;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_api::config::{RpcAccountInfoConfig, RpcProgramAccountsConfig, RpcSendTransactionConfig};
use solana_rpc_client_api::filter::{Memcmp, RpcFilterType};
use solana_rpc_client_api::request::{RpcError, RpcRequest, RpcResponseErrorData};
use solana_transaction::Transaction;
use solana_transaction_status_client_types::EncodedConfirmedTransactionWithStatusMeta;
use tokio::sync::mpsc;

use crate::{
    Account, AccountFilter, AccountUpdates, Address, BalanceChange, Chain, ChainClock, ChainError,
    ConfirmedTransaction, Instruction, ReceiverStream, Sent, Short, Signature, SignerRef, TransactionRef,
    check_signers,
};

/// The Clock sysvar's address (`SysvarC1ock11111111111111111111111111111111`).
const CLOCK_SYSVAR: Address = Address::from_str_const("SysvarC1ock11111111111111111111111111111111");

/// How to reach a cluster.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// JSON-RPC URL, e.g. `http://127.0.0.1:8899`.
    pub url: String,
    /// Websocket URL; `None` derives it from `url` (scheme `ws`/`wss`, port + 1 when given).
    pub ws_url: Option<String>,
    /// Commitment for sends and reads (default `confirmed`: subscriptions at `finalized` wait
    /// ~13 s per notification).
    pub commitment: CommitmentConfig,
    /// Longest wait for a send to confirm, across blockhash refreshes.
    pub confirm_timeout: Duration,
    /// How often an unconfirmed transaction is sent again.
    pub resend_every: Duration,
    /// How often signature statuses are polled while confirming.
    pub status_poll: Duration,
    /// How often a subscription polls while its websocket is down.
    pub poll_interval: Duration,
}

impl RpcConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RpcConfig {
            url: url.into(),
            ws_url: None,
            commitment: CommitmentConfig::confirmed(),
            confirm_timeout: Duration::from_secs(60),
            resend_every: Duration::from_secs(2),
            status_poll: Duration::from_millis(250),
            poll_interval: Duration::from_millis(400),
        }
    }

    /// The websocket URL: explicit, or derived from the RPC URL as the Solana CLI does.
    pub fn websocket_url(&self) -> String {
        if let Some(ws) = &self.ws_url {
            return ws.clone();
        }
        let (scheme, rest) = match self.url.split_once("://") {
            Some(("https", rest)) => ("wss", rest),
            Some((_, rest)) => ("ws", rest),
            None => ("ws", self.url.as_str()),
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let authority = match authority.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) => format!("{host}:{}", port.saturating_add(1)),
                Err(_) => authority.to_string(),
            },
            None => authority.to_string(),
        };
        if path.is_empty() { format!("{scheme}://{authority}") } else { format!("{scheme}://{authority}/{path}") }
    }
}

/// A real cluster (localnet, devnet, mainnet) through its JSON-RPC and websocket endpoints.
///
/// Sends are preflighted, then resent every [`RpcConfig::resend_every`] until confirmed; if the
/// blockhash expires first, the transaction is signed again over a fresh one (after checking the
/// old signature did not land). Subscriptions fall back to polling while the websocket is down
/// and resubscribe when it comes back.
pub struct RpcChain {
    client: Arc<RpcClient>,
    config: RpcConfig,
}

impl RpcChain {
    /// A chain at `url` with the default [`RpcConfig`].
    pub fn connect(url: impl Into<String>) -> Self {
        Self::with_config(RpcConfig::new(url))
    }

    /// A chain as `config` says.
    pub fn with_config(config: RpcConfig) -> Self {
        let client = Arc::new(RpcClient::new_with_commitment(config.url.clone(), config.commitment));
        RpcChain { client, config }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// The underlying nonblocking RPC client, for calls this trait does not cover.
    pub fn rpc_client(&self) -> &RpcClient {
        &self.client
    }

    /// History needs at least `confirmed` (nodes refuse `processed` there).
    fn history_commitment(&self) -> CommitmentConfig {
        if self.config.commitment == CommitmentConfig::processed() {
            CommitmentConfig::confirmed()
        } else {
            self.config.commitment
        }
    }

    async fn confirm(&self, signature: &Signature) -> Result<Option<ConfirmedStatus>, ChainError> {
        let statuses = self.client.get_signature_statuses(&[*signature]).await.map_err(rpc_error)?;
        let Some(Some(status)) = statuses.value.into_iter().next() else {
            return Ok(None);
        };
        if let Some(error) = status.err.clone() {
            return Ok(Some(ConfirmedStatus::Failed(error)));
        }
        if status.satisfies_commitment(self.config.commitment) {
            return Ok(Some(ConfirmedStatus::Landed(status.slot)));
        }
        Ok(Some(ConfirmedStatus::Pending))
    }
}

enum ConfirmedStatus {
    Landed(u64),
    Failed(crate::TransactionError),
    Pending,
}

fn rpc_error(err: ClientError) -> ChainError {
    ChainError::Rpc(err.to_string())
}

/// A send error: a preflight failure is the program's error (nothing charged); the rest are
/// transport errors.
fn send_error(err: ClientError) -> ChainError {
    if let ErrorKind::RpcError(RpcError::RpcResponseError {
        data: RpcResponseErrorData::SendTransactionPreflightFailure(simulation),
        message,
        ..
    }) = err.kind()
    {
        return match &simulation.err {
            Some(error) => ChainError::Transaction {
                error: error.clone().into(),
                logs: simulation.logs.clone().unwrap_or_default(),
                charged: 0,
            },
            None => ChainError::Rejected(message.clone()),
        };
    }
    if let Some(error) = err.get_transaction_error() {
        return ChainError::Rejected(error.to_string());
    }
    rpc_error(err)
}

fn is_blockhash_not_found(err: &ChainError) -> bool {
    match err {
        ChainError::Rejected(text) | ChainError::Rpc(text) => text.contains("Blockhash not found"),
        ChainError::Transaction { error: crate::TransactionError::BlockhashNotFound, .. } => true,
        _ => false,
    }
}

fn account_config(commitment: CommitmentConfig) -> RpcAccountInfoConfig {
    RpcAccountInfoConfig {
        encoding: Some(UiAccountEncoding::Base64),
        data_slice: None,
        commitment: Some(commitment),
        min_context_slot: None,
    }
}

/// A decoded account, `None` for one that is gone (a closed account reads as 0 lamports).
fn live(account: Option<Account>) -> Option<Account> {
    account.filter(|account| account.lamports > 0)
}

fn decode(ui: &UiAccount) -> Result<Account, ChainError> {
    ui.to_account().ok_or_else(|| ChainError::Rpc("account data not in a binary encoding".into()))
}

#[async_trait::async_trait]
impl Chain for RpcChain {
    async fn send(&self, instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<Sent, ChainError> {
        check_signers(instructions, signers)?;
        let payer = signers.first().map(|signer| signer.pubkey());
        let started = Instant::now();
        let deadline = started.checked_add(self.config.confirm_timeout).unwrap_or(started);
        let mut last_signature = Signature::default();
        // Each pass signs over a fresh blockhash; a pass ends when its blockhash expires.
        while Instant::now() < deadline {
            let (blockhash, last_valid_height) =
                self.client.get_latest_blockhash_with_commitment(self.config.commitment).await.map_err(rpc_error)?;
            let message = Message::new_with_blockhash(instructions, payer.as_ref(), &blockhash);
            let fee = self.client.get_fee_for_message(&message).await.map_err(rpc_error)?;
            let mut transaction = Transaction::new_unsigned(message);
            transaction.try_sign(signers, blockhash).map_err(|err| ChainError::Invalid(format!("signing: {err}")))?;
            let signature = transaction.signatures.first().copied().unwrap_or_default();
            last_signature = signature;
            let preflight = RpcSendTransactionConfig {
                skip_preflight: false,
                preflight_commitment: Some(self.config.commitment.commitment),
                max_retries: Some(0),
                ..RpcSendTransactionConfig::default()
            };
            match self.client.send_transaction_with_config(&transaction, preflight).await.map_err(send_error) {
                Ok(_) => {}
                Err(err) if is_blockhash_not_found(&err) => continue,
                Err(err) => return Err(err),
            }
            let resend = RpcSendTransactionConfig { skip_preflight: true, max_retries: Some(0), ..preflight };
            let mut last_sent = Instant::now();
            loop {
                tokio::time::sleep(self.config.status_poll).await;
                match self.confirm(&signature).await? {
                    Some(ConfirmedStatus::Landed(slot)) => return Ok(Sent { signature, fee, slot }),
                    Some(ConfirmedStatus::Failed(error)) => {
                        return Err(ChainError::Transaction { error, logs: Vec::new(), charged: fee });
                    }
                    Some(ConfirmedStatus::Pending) => continue,
                    None => {}
                }
                if Instant::now() >= deadline {
                    break;
                }
                let height =
                    self.client.get_block_height_with_commitment(self.config.commitment).await.map_err(rpc_error)?;
                if height > last_valid_height {
                    // Expired unseen: it can no longer land, so signing again cannot double-spend.
                    tracing::debug!(%signature, "blockhash expired before confirmation; re-signing");
                    break;
                }
                if last_sent.elapsed() >= self.config.resend_every {
                    // A resend that errors is not fatal: the first copy may still land.
                    let _ = self.client.send_transaction_with_config(&transaction, resend).await;
                    last_sent = Instant::now();
                }
            }
        }
        Err(ChainError::Unconfirmed { signature: last_signature, seconds: started.elapsed().as_secs() })
    }

    async fn fee_for(&self, instructions: &[Instruction], payer: &Address) -> Result<u64, ChainError> {
        let blockhash = self.client.get_latest_blockhash().await.map_err(rpc_error)?;
        let message = Message::new_with_blockhash(instructions, Some(payer), &blockhash);
        self.client.get_fee_for_message(&message).await.map_err(rpc_error)
    }

    async fn account(&self, address: &Address) -> Result<Option<Account>, ChainError> {
        let response =
            self.client.get_account_with_commitment(address, self.config.commitment).await.map_err(rpc_error)?;
        Ok(live(response.value))
    }

    async fn accounts(&self, addresses: &[Address]) -> Result<Vec<Option<Account>>, ChainError> {
        // getMultipleAccounts takes at most 100 addresses per call.
        let mut out = Vec::with_capacity(addresses.len());
        for batch in addresses.chunks(100) {
            let response = self
                .client
                .get_multiple_accounts_with_commitment(batch, self.config.commitment)
                .await
                .map_err(rpc_error)?;
            out.extend(response.value.into_iter().map(live));
        }
        Ok(out)
    }

    async fn program_accounts(
        &self,
        program: &Address,
        filters: &[AccountFilter],
    ) -> Result<Vec<(Address, Account)>, ChainError> {
        let filters = filters
            .iter()
            .map(|filter| match filter {
                AccountFilter::Memcmp { offset, bytes } => {
                    RpcFilterType::Memcmp(Memcmp::new_raw_bytes(*offset, bytes.clone()))
                }
                AccountFilter::DataSize(len) => RpcFilterType::DataSize(*len),
            })
            .collect::<Vec<_>>();
        let config = RpcProgramAccountsConfig {
            filters: if filters.is_empty() { None } else { Some(filters) },
            account_config: account_config(self.config.commitment),
            with_context: None,
            sort_results: Some(true),
        };
        let found = self.client.get_program_ui_accounts_with_config(program, config).await.map_err(rpc_error)?;
        let mut out = Vec::with_capacity(found.len());
        for (address, ui) in found {
            if let Some(account) = live(Some(decode(&ui)?)) {
                out.push((address, account));
            }
        }
        out.sort_by_key(|(address, _)| *address);
        Ok(out)
    }

    async fn subscribe(&self, address: &Address) -> Result<AccountUpdates, ChainError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let watcher = Watcher {
            client: Arc::clone(&self.client),
            ws_url: self.config.websocket_url(),
            commitment: self.config.commitment,
            poll_interval: self.config.poll_interval,
            address: *address,
            sender,
            last: None,
        };
        // Subscribe before the first read, so no change can fall between them.
        let (ready_sender, ready) = tokio::sync::oneshot::channel();
        tokio::spawn(watcher.run(ready_sender));
        ready.await.map_err(|_| ChainError::Rpc("subscription task ended".into()))??;
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    async fn clock(&self) -> Result<ChainClock, ChainError> {
        let account =
            self.account(&CLOCK_SYSVAR).await?.ok_or_else(|| ChainError::Rpc("no Clock sysvar account".into()))?;
        // Clock: slot u64, epoch_start_timestamp i64, epoch u64, leader_schedule_epoch u64, unix_timestamp i64.
        let field = |at: usize| -> Result<[u8; 8], ChainError> {
            account
                .data
                .get(at..at.saturating_add(8))
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| ChainError::Rpc("Clock sysvar too short".into()))
        };
        Ok(ChainClock { slot: u64::from_le_bytes(field(0)?), unix_timestamp: i64::from_le_bytes(field(32)?) })
    }

    async fn rent_exempt_minimum(&self, data_len: usize) -> Result<u64, ChainError> {
        self.client.get_minimum_balance_for_rent_exemption(data_len).await.map_err(rpc_error)
    }

    async fn signatures_for(
        &self,
        address: &Address,
        before: Option<Signature>,
        limit: usize,
    ) -> Result<Vec<TransactionRef>, ChainError> {
        // A node answers at most 1,000 per call.
        let config = solana_rpc_client::rpc_client::GetConfirmedSignaturesForAddress2Config {
            before,
            until: None,
            limit: Some(limit.clamp(1, 1_000)),
            commitment: Some(self.history_commitment()),
        };
        let found = self.client.get_signatures_for_address_with_config(address, config).await.map_err(rpc_error)?;
        found
            .into_iter()
            .take(limit)
            .map(|status| {
                let signature = status
                    .signature
                    .parse()
                    .map_err(|err| ChainError::Rpc(format!("a node sent signature {:?}: {err}", status.signature)))?;
                Ok(TransactionRef {
                    signature,
                    slot: status.slot,
                    block_time: status.block_time,
                    failed: status.err.is_some(),
                })
            })
            .collect()
    }

    async fn transaction(&self, signature: &Signature) -> Result<Option<ConfirmedTransaction>, ChainError> {
        let config = serde_json::json!({
            "encoding": "base64",
            "commitment": self.history_commitment().commitment,
            "maxSupportedTransactionVersion": 0,
        });
        let found: Option<EncodedConfirmedTransactionWithStatusMeta> = self
            .client
            .send(RpcRequest::GetTransaction, serde_json::json!([signature.to_string(), config]))
            .await
            .map_err(rpc_error)?;
        let Some(found) = found else { return Ok(None) };
        let decoded = found.transaction.transaction.decode().ok_or_else(|| {
            ChainError::Rpc(format!("transaction {signature}: the node sent bytes that do not decode"))
        })?;
        let meta = found.transaction.meta;
        let message = &decoded.message;
        let keys = message.static_account_keys();
        let instructions = crate::resolve_instructions(message);
        let (failed, balances) = match &meta {
            Some(meta) => (
                meta.err.is_some(),
                keys.iter()
                    .zip(meta.pre_balances.iter().zip(&meta.post_balances))
                    .map(|(address, (before, after))| BalanceChange {
                        address: *address,
                        before: *before,
                        after: *after,
                    })
                    .collect(),
            ),
            None => (false, Vec::new()),
        };
        Ok(Some(ConfirmedTransaction {
            reference: TransactionRef { signature: *signature, slot: found.slot, block_time: found.block_time, failed },
            instructions,
            balances,
        }))
    }

    async fn airdrop(&self, to: &Address, lamports: u64) -> Result<(), ChainError> {
        let signature = self.client.request_airdrop(to, lamports).await.map_err(|err| {
            let text = err.to_string();
            if text.contains("airdrop") || text.contains("faucet") || text.contains("Method not found") {
                ChainError::Rpc(format!("airdrop refused: {text} (is there a faucet on this cluster?)"))
            } else {
                rpc_error(err)
            }
        })?;
        let now = Instant::now();
        let deadline = now.checked_add(self.config.confirm_timeout).unwrap_or(now);
        while Instant::now() < deadline {
            match self.confirm(&signature).await? {
                Some(ConfirmedStatus::Landed(_)) => return Ok(()),
                Some(ConfirmedStatus::Failed(error)) => {
                    return Err(ChainError::Transaction { error, logs: Vec::new(), charged: 0 });
                }
                _ => tokio::time::sleep(self.config.status_poll).await,
            }
        }
        Err(ChainError::Unconfirmed { signature, seconds: self.config.confirm_timeout.as_secs() })
    }
}

/// The task behind one subscription: websocket while it works, polling while it does not.
struct Watcher {
    client: Arc<RpcClient>,
    ws_url: String,
    commitment: CommitmentConfig,
    poll_interval: Duration,
    address: Address,
    sender: mpsc::UnboundedSender<Option<Account>>,
    last: Option<Option<Account>>,
}

impl Watcher {
    /// Sends `state` unless it is what the subscriber saw last. Returns false once nobody listens.
    fn offer(&mut self, state: Option<Account>) -> bool {
        if self.last.as_ref() == Some(&state) {
            return !self.sender.is_closed();
        }
        self.last = Some(state.clone());
        self.sender.send(state).is_ok()
    }

    async fn read(&self) -> Result<Option<Account>, ChainError> {
        let response =
            self.client.get_account_with_commitment(&self.address, self.commitment).await.map_err(rpc_error)?;
        Ok(live(response.value))
    }

    async fn run(mut self, ready: tokio::sync::oneshot::Sender<Result<(), ChainError>>) {
        let mut ready = Some(ready);
        loop {
            match PubsubClient::new(self.ws_url.as_str()).await {
                Ok(pubsub) => {
                    let subscribed =
                        pubsub.account_subscribe(&self.address, Some(account_config(self.commitment))).await;
                    match subscribed {
                        Ok((mut updates, unsubscribe)) => {
                            let first = self.read().await;
                            if let Some(ready) = ready.take() {
                                let failed = first.as_ref().err().map(|err| ChainError::Rpc(err.to_string()));
                                let _ = ready.send(failed.map_or(Ok(()), Err));
                            }
                            if let Ok(state) = first
                                && !self.offer(state)
                            {
                                unsubscribe().await;
                                return;
                            }
                            loop {
                                tokio::select! {
                                    update = updates.next() => match update {
                                        Some(response) => match decode(&response.value) {
                                            Ok(account) => {
                                                if !self.offer(live(Some(account))) {
                                                    break;
                                                }
                                            }
                                            Err(err) => tracing::warn!(%err, "undecodable account notification"),
                                        },
                                        // The websocket dropped: poll until it is back.
                                        None => break,
                                    },
                                    () = self.sender.closed() => break,
                                }
                            }
                            if self.sender.is_closed() {
                                unsubscribe().await;
                                return;
                            }
                            tracing::warn!(account = %Short(&self.address), "websocket dropped; polling");
                        }
                        Err(err) => tracing::warn!(%err, "account_subscribe failed; polling"),
                    }
                }
                Err(err) => tracing::warn!(%err, url = %self.ws_url, "websocket unavailable; polling"),
            }
            // Polling fallback for a while, then try the websocket again.
            let now = Instant::now();
            let retry_at = now.checked_add(Duration::from_secs(5)).unwrap_or(now);
            while Instant::now() < retry_at {
                match self.read().await {
                    Ok(state) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                        if !self.offer(state) {
                            return;
                        }
                    }
                    Err(err) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Err(err));
                            return;
                        }
                    }
                }
                if self.sender.is_closed() {
                    return;
                }
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }
}
