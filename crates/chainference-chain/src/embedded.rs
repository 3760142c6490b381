//! [`EmbeddedChain`]: LiteSVM in-process, running the program's real SBF `.so`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chainference_core::builders::{self, Program};
use chainference_core::pda;
use chainference_core::state::ConfigParams;
use litesvm::LiteSVM;
use solana_clock::Clock;
use solana_message::Message;
use solana_transaction::Transaction;
use tokio::sync::mpsc;

use crate::{
    Account, AccountFilter, AccountUpdates, Address, BalanceChange, Chain, ChainClock, ChainError,
    ConfirmedTransaction, Instruction, Keypair, ReceiverStream, Sent, Signature, Signer, SignerRef, TransactionError,
    TransactionRef, address, check_signers, instruction,
};

/// Milliseconds per slot on the embedded chain, as on mainnet.
const SLOT_MS: u64 = 400;
/// LiteSVM's default fee structure: 5,000 lamports per signature, no priority fees.
const LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// How to start an [`EmbeddedChain`].
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The program's SBF `.so` (default: [`chainference_host::program_so`]).
    pub program_so: Option<PathBuf>,
    /// Send `InitConfig` with these parameters at start (default: the defaults); `None` leaves
    /// the program unconfigured.
    pub config: Option<ConfigParams>,
    /// Unix time the clock starts at (default: the wall clock now).
    pub start_unix: Option<i64>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { program_so: None, config: Some(ConfigParams::default()), start_unix: None }
    }
}

/// An in-process chain: LiteSVM with the Chainference program deployed from its SBF `.so`.
///
/// The clock advances with wall time (a slot per 400 ms) plus whatever [`EmbeddedChain::advance`]
/// adds. Every transaction gets a fresh blockhash, so identical transactions are not deduplicated.
/// Subscribers hear about every account a successful transaction wrote, right after it.
pub struct EmbeddedChain {
    inner: Mutex<Inner>,
    admin: Keypair,
    program: Program,
}

struct Inner {
    svm: LiteSVM,
    started: Instant,
    start_unix: i64,
    start_slot: u64,
    skipped: Duration,
    subscribers: HashMap<Address, Vec<mpsc::UnboundedSender<Option<Account>>>>,
    /// Every fee charged so far (transactions that failed included, airdrops included).
    fees_charged: u128,
    /// Every executed transaction (failed ones that paid a fee included), oldest first, as a
    /// node's transaction history keeps them.
    history: Vec<ConfirmedTransaction>,
    /// For each address, the indexes in `history` of the transactions naming it, oldest first.
    history_by_address: HashMap<Address, Vec<usize>>,
    /// Each transaction's index in `history`.
    history_by_signature: HashMap<Signature, usize>,
}

impl Inner {
    /// Brings the program's clock up to wall time plus what was skipped.
    fn sync_clock(&mut self) -> ChainClock {
        let elapsed = self.started.elapsed().saturating_add(self.skipped);
        let slots =
            u64::try_from(elapsed.as_millis().checked_div(u128::from(SLOT_MS)).unwrap_or(0)).unwrap_or(u64::MAX);
        let slot = self.start_slot.saturating_add(slots);
        let unix = self.start_unix.saturating_add(i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX));
        let mut clock: Clock = self.svm.get_sysvar();
        // Never backwards, even if the sysvar was set by hand.
        let slot = slot.max(clock.slot);
        let unix = unix.max(clock.unix_timestamp);
        if clock.slot != slot || clock.unix_timestamp != unix {
            clock.slot = slot;
            clock.unix_timestamp = unix;
            self.svm.set_sysvar(&clock);
        }
        ChainClock { slot, unix_timestamp: unix }
    }

    /// Every account's lamports now (0 for one that does not exist).
    fn lamports(&self, keys: &[Address]) -> Vec<u64> {
        keys.iter().map(|key| self.svm.get_account(key).map_or(0, |account| account.lamports)).collect()
    }

    /// Adds an executed transaction to the history.
    fn record(&mut self, transaction: &Transaction, reference: TransactionRef, before: &[u64]) {
        let keys = &transaction.message.account_keys;
        let after = self.lamports(keys);
        let balances = keys
            .iter()
            .zip(before.iter().zip(after))
            .map(|(address, (before, after))| BalanceChange { address: *address, before: *before, after })
            .collect();
        let index = self.history.len();
        for key in keys {
            self.history_by_address.entry(*key).or_default().push(index);
        }
        self.history_by_signature.insert(reference.signature, index);
        let message = solana_message::VersionedMessage::Legacy(transaction.message.clone());
        self.history.push(ConfirmedTransaction {
            reference,
            instructions: crate::resolve_instructions(&message),
            balances,
        });
    }

    fn notify(&mut self, written: &[Address]) {
        for address in written {
            if let Some(senders) = self.subscribers.get_mut(address) {
                let state = self.svm.get_account(address).filter(|account| account.lamports > 0);
                senders.retain(|sender| sender.send(state.clone()).is_ok());
            }
        }
        self.subscribers.retain(|_, senders| !senders.is_empty());
    }
}

impl EmbeddedChain {
    /// Starts with the defaults: the program from [`chainference_host::program_so`], configured with
    /// [`ConfigParams::default`], the clock at wall time.
    pub fn start() -> Result<Self, ChainError> {
        Self::with_config(EmbeddedConfig::default())
    }

    /// Starts with `config`.
    pub fn with_config(config: EmbeddedConfig) -> Result<Self, ChainError> {
        let so = config.program_so.clone().unwrap_or_else(chainference_host::program_so);
        let bytes = std::fs::read(&so).map_err(|err| ChainError::Program {
            path: so.display().to_string(),
            reason: format!("{err} (build it with `cargo xtask build-sbf`, or set CHAINFERENCE_PROGRAM_SO)"),
        })?;
        Self::with_program_bytes(&bytes, config)
    }

    /// Starts with the program given as `.so` bytes (`config.program_so` is ignored).
    pub fn with_program_bytes(program_so: &[u8], config: EmbeddedConfig) -> Result<Self, ChainError> {
        let program = Program::default();
        let mut svm = LiteSVM::new();
        let program_id = address(&program.id);
        svm.add_program(program_id, program_so)
            .map_err(|err| ChainError::Program { path: "<bytes>".into(), reason: err.to_string() })?;
        let admin = Keypair::new();
        set_upgrade_authority(&mut svm, &program, &admin.pubkey())?;
        let start_unix = config.start_unix.unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        });
        let start_slot = svm.get_sysvar::<Clock>().slot;
        let mut inner = Inner {
            svm,
            started: Instant::now(),
            start_unix,
            start_slot,
            skipped: Duration::ZERO,
            subscribers: HashMap::new(),
            fees_charged: 0,
            history: Vec::new(),
            history_by_address: HashMap::new(),
            history_by_signature: HashMap::new(),
        };
        inner.sync_clock();
        let chain = EmbeddedChain { inner: Mutex::new(inner), admin, program };
        if let Some(params) = config.config {
            let admin_address = chain.admin.pubkey();
            chain.airdrop_now(&admin_address, 10_000_000_000)?;
            let init = instruction(builders::init_config(&chain.program, &admin_address.to_bytes(), params));
            chain.send_now(&[init], &[&chain.admin])?;
        }
        Ok(chain)
    }

    /// The program's upgrade authority and the config's admin.
    pub fn admin(&self) -> &Keypair {
        &self.admin
    }

    /// The deployment's addresses.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Moves the clock forward by `by` (on top of wall time), e.g. past a request's deadline.
    pub fn advance(&self, by: Duration) {
        let mut inner = self.lock();
        inner.skipped = inner.skipped.saturating_add(by);
        inner.sync_clock();
    }

    /// Sum of every account's lamports (for conservation checks; fees are burned by the runtime,
    /// so this drops by exactly the fees paid).
    pub fn total_lamports(&self) -> u128 {
        let inner = self.lock();
        inner
            .svm
            .accounts_db()
            .inner
            .values()
            .map(|account| u128::from(solana_account::ReadableAccount::lamports(account)))
            .sum()
    }

    /// Every transaction fee charged since start (failed transactions and airdrops included).
    /// Fees are burned here, so `total_lamports()` falls by exactly this much when the program
    /// conserves lamports: what the demo checks.
    pub fn fees_charged(&self) -> u128 {
        self.lock().fees_charged
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave LiteSVM half-updated in a way that matters
        // more than losing the chain, so keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send_now(&self, instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<Sent, ChainError> {
        check_signers(instructions, signers)?;
        let payer = signers.first().map(|signer| signer.pubkey());
        let mut inner = self.lock();
        let clock = inner.sync_clock();
        let message = Message::new_with_blockhash(instructions, payer.as_ref(), &inner.svm.latest_blockhash());
        let mut transaction = Transaction::new_unsigned(message);
        transaction
            .try_sign(signers, inner.svm.latest_blockhash())
            .map_err(|err| ChainError::Invalid(format!("signing: {err}")))?;
        let written: Vec<Address> = transaction
            .message
            .account_keys
            .iter()
            .enumerate()
            .filter(|(index, _)| {
                transaction.message.is_maybe_writable_with_reserved_addresses(*index, None::<&HashSet<Address>>)
            })
            .map(|(_, key)| *key)
            .collect();
        let before = inner.lamports(&transaction.message.account_keys);
        let result = inner.svm.send_transaction(transaction.clone());
        // A new blockhash per transaction, so identical transactions are not deduplicated.
        inner.svm.expire_blockhash();
        let reference = |signature, failed| TransactionRef {
            signature,
            slot: clock.slot,
            block_time: Some(clock.unix_timestamp),
            failed,
        };
        match result {
            Ok(meta) => {
                inner.fees_charged = inner.fees_charged.saturating_add(u128::from(meta.fee));
                inner.record(&transaction, reference(meta.signature, false), &before);
                inner.notify(&written);
                Ok(Sent { signature: meta.signature, fee: meta.fee, slot: clock.slot })
            }
            Err(failed) => {
                inner.fees_charged = inner.fees_charged.saturating_add(u128::from(failed.meta.fee));
                if failed.meta.fee > 0 {
                    inner.record(&transaction, reference(failed.meta.signature, true), &before);
                    // The fee payer's balance changed.
                    if let Some(payer) = payer {
                        inner.notify(&[payer]);
                    }
                }
                Err(transaction_error(failed.err, failed.meta.logs, failed.meta.fee))
            }
        }
    }

    fn airdrop_now(&self, to: &Address, lamports: u64) -> Result<(), ChainError> {
        let mut inner = self.lock();
        inner.sync_clock();
        let result = inner.svm.airdrop(to, lamports);
        inner.svm.expire_blockhash();
        match result {
            Ok(meta) => {
                inner.fees_charged = inner.fees_charged.saturating_add(u128::from(meta.fee));
                inner.notify(&[*to]);
                Ok(())
            }
            Err(failed) => Err(transaction_error(failed.err, failed.meta.logs, failed.meta.fee)),
        }
    }
}

/// LiteSVM deploys with no upgrade authority; make `authority` the upgrade authority, as a real
/// deploy would, so `InitConfig`'s check runs against real ProgramData.
fn set_upgrade_authority(svm: &mut LiteSVM, program: &Program, authority: &Address) -> Result<(), ChainError> {
    let program_data = address(&pda::program_data_address(&program.id).0);
    let broken = |reason: &str| ChainError::Program { path: "<ProgramData>".into(), reason: reason.into() };
    let mut account = svm.get_account(&program_data).ok_or_else(|| broken("no ProgramData account"))?;
    // UpgradeableLoaderState::ProgramData: tag u32 (3), slot u64, Option<Address> (tag byte + 32).
    let (tag, key) = account
        .data
        .get_mut(12..45)
        .and_then(|slot| slot.split_first_mut())
        .ok_or_else(|| broken("ProgramData too short"))?;
    *tag = 1;
    key.copy_from_slice(authority.as_ref());
    svm.set_account(program_data, account).map_err(|err| broken(&err.to_string()))
}

/// Splits a failed transaction into "ran and failed" (fee charged) and "never ran".
fn transaction_error(error: TransactionError, logs: Vec<String>, charged: u64) -> ChainError {
    if charged > 0 || matches!(error, TransactionError::InstructionError(..)) {
        ChainError::Transaction { error, logs, charged }
    } else {
        ChainError::Rejected(error.to_string())
    }
}

#[async_trait::async_trait]
impl Chain for EmbeddedChain {
    async fn send(&self, instructions: &[Instruction], signers: &[SignerRef<'_>]) -> Result<Sent, ChainError> {
        self.send_now(instructions, signers)
    }

    async fn fee_for(&self, instructions: &[Instruction], payer: &Address) -> Result<u64, ChainError> {
        let message = Message::new(instructions, Some(payer));
        let signatures = u64::from(message.header.num_required_signatures);
        Ok(signatures.saturating_mul(LAMPORTS_PER_SIGNATURE))
    }

    async fn account(&self, address: &Address) -> Result<Option<Account>, ChainError> {
        Ok(self.lock().svm.get_account(address).filter(|account| account.lamports > 0))
    }

    async fn accounts(&self, addresses: &[Address]) -> Result<Vec<Option<Account>>, ChainError> {
        let inner = self.lock();
        Ok(addresses.iter().map(|a| inner.svm.get_account(a).filter(|account| account.lamports > 0)).collect())
    }

    async fn program_accounts(
        &self,
        program: &Address,
        filters: &[AccountFilter],
    ) -> Result<Vec<(Address, Account)>, ChainError> {
        let inner = self.lock();
        let mut found: Vec<(Address, Account)> = inner
            .svm
            .get_program_accounts(program)
            .into_iter()
            .filter(|(_, account)| account.lamports > 0 && filters.iter().all(|f| f.matches(&account.data)))
            .collect();
        // A stable order, as a node's index gives.
        found.sort_by_key(|(address, _)| *address);
        Ok(found)
    }

    async fn subscribe(&self, address: &Address) -> Result<AccountUpdates, ChainError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let current = inner.svm.get_account(address).filter(|account| account.lamports > 0);
        // Cannot fail: the receiver is alive.
        let _ = sender.send(current);
        inner.subscribers.entry(*address).or_default().push(sender);
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    async fn clock(&self) -> Result<ChainClock, ChainError> {
        Ok(self.lock().sync_clock())
    }

    async fn rent_exempt_minimum(&self, data_len: usize) -> Result<u64, ChainError> {
        Ok(self.lock().svm.minimum_balance_for_rent_exemption(data_len))
    }

    async fn airdrop(&self, to: &Address, lamports: u64) -> Result<(), ChainError> {
        self.airdrop_now(to, lamports)
    }

    async fn signatures_for(
        &self,
        address: &Address,
        before: Option<Signature>,
        limit: usize,
    ) -> Result<Vec<TransactionRef>, ChainError> {
        let inner = self.lock();
        let Some(indexes) = inner.history_by_address.get(address) else { return Ok(Vec::new()) };
        // Only what is older than `before` (nothing when `before` is unknown, as on a node).
        let older = match before {
            None => indexes.as_slice(),
            Some(before) => match inner.history_by_signature.get(&before) {
                Some(at) => indexes.get(..indexes.partition_point(|index| index < at)).unwrap_or_default(),
                None => &[],
            },
        };
        let newest_first = older.iter().rev().filter_map(|index| inner.history.get(*index));
        Ok(newest_first.take(limit).map(|tx| tx.reference.clone()).collect())
    }

    async fn transaction(&self, signature: &Signature) -> Result<Option<ConfirmedTransaction>, ChainError> {
        let inner = self.lock();
        Ok(inner.history_by_signature.get(signature).and_then(|index| inner.history.get(*index)).cloned())
    }
}
