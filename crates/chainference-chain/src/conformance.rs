//! The conformance suite every [`Chain`] backend must pass.
//!
//! [`run`] drives one backend through the whole contract of the crate docs, against the real
//! Chainference program deployed on it: sends and their fees, failures with program error codes,
//! identical sends, reads in order, program-account filters, subscriptions (first state, changes,
//! closure), the clock and rent. Each check returns a precise [`Failure`] instead of panicking, so a
//! backend's test can report every broken promise at once.
//!
//! ```no_run
//! # async fn run() {
//! use chainference_chain::{EmbeddedChain, conformance};
//! let chain = EmbeddedChain::start().unwrap();
//! let report = conformance::run(&chain, chain.program()).await;
//! assert!(report.failures.is_empty(), "{report}");
//! # }
//! ```

// A test suite over small fixed amounts and results it has just checked the length of.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::fmt;
use std::time::Duration;

use chainference_core::builders::{self, Program, ServerProfile};
use chainference_core::state::{AccountKind, ServerHeader};
use futures::StreamExt;

use crate::{AccountFilter, Address, Chain, ChainError, Instruction, Keypair, Signature, Signer, address, instruction};

/// Lamports each check's wallets start with.
const FUNDING: u64 = 2_000_000_000;
/// How long a subscription may take to report a confirmed change.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check that found it.
    pub check: &'static str,
    /// What was expected and what happened.
    pub detail: String,
}

/// What [`run`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: Vec<&'static str>,
    /// Checks that failed.
    pub failures: Vec<Failure>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} passed, {} failed", self.passed.len(), self.failures.len())?;
        for failure in &self.failures {
            writeln!(f, "  FAIL {}: {}", failure.check, failure.detail)?;
        }
        Ok(())
    }
}

type Outcome = Result<(), String>;

fn ensure(condition: bool, detail: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(detail()) }
}

fn chain_err(what: &str) -> impl FnOnce(ChainError) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Runs every check against `chain`, where `program` is deployed (configured or not).
pub async fn run<C: Chain + ?Sized>(chain: &C, program: &Program) -> Report {
    let mut report = Report::default();
    macro_rules! check {
        ($name:literal, $body:expr) => {
            match $body.await {
                Ok(()) => report.passed.push($name),
                Err(detail) => report.failures.push(Failure { check: $name, detail }),
            }
        };
    }
    check!("airdrop_and_balance", airdrop_and_balance(chain));
    check!("send_charges_the_estimated_fee", send_charges_the_estimated_fee(chain));
    check!("identical_sends_are_two_transactions", identical_sends_are_two_transactions(chain));
    check!("missing_signer_is_refused_before_sending", missing_signer_is_refused_before_sending(chain));
    check!("program_error_carries_its_code", program_error_carries_its_code(chain, program));
    check!("accounts_come_back_in_order", accounts_come_back_in_order(chain));
    check!("program_accounts_filter", program_accounts_filter(chain, program));
    check!("subscription_sees_changes_and_closure", subscription_sees_changes_and_closure(chain, program));
    check!("clock_moves_forward", clock_moves_forward(chain));
    check!("rent_matches_the_runtime", rent_matches_the_runtime(chain));
    check!("transaction_history_pages_back", transaction_history_pages_back(chain));
    report
}

async fn funded<C: Chain + ?Sized>(chain: &C) -> Result<Keypair, String> {
    let wallet = Keypair::new();
    chain.airdrop(&wallet.pubkey(), FUNDING).await.map_err(chain_err("airdrop"))?;
    Ok(wallet)
}

fn transfer(from: &Keypair, to: &Address, lamports: u64) -> Instruction {
    instruction(builders::system_transfer(&from.pubkey().to_bytes(), &to.to_bytes(), lamports))
}

async fn airdrop_and_balance<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let wallet = funded(chain).await?;
    let balance = chain.balance(&wallet.pubkey()).await.map_err(chain_err("balance"))?;
    ensure(balance == FUNDING, || format!("balance after airdrop of {FUNDING}: {balance}"))?;
    let account = chain.account(&wallet.pubkey()).await.map_err(chain_err("account"))?;
    let account = account.ok_or("airdropped wallet not found")?;
    ensure(account.owner == Address::default(), || format!("wallet owned by {}", account.owner))?;
    let nobody = Keypair::new().pubkey();
    let missing = chain.account(&nobody).await.map_err(chain_err("account"))?;
    ensure(missing.is_none(), || "a never-funded address reads as an account".into())?;
    ensure(chain.balance(&nobody).await.map_err(chain_err("balance"))? == 0, || "missing account balance not 0".into())
}

async fn send_charges_the_estimated_fee<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let payer = funded(chain).await?;
    let recipient = Keypair::new().pubkey();
    let amount = 5_000_000;
    let ixs = [transfer(&payer, &recipient, amount)];
    let estimate = chain.fee_for(&ixs, &payer.pubkey()).await.map_err(chain_err("fee_for"))?;
    let sent = chain.send(&ixs, &[&payer]).await.map_err(chain_err("send"))?;
    ensure(sent.fee == estimate, || format!("fee {} but estimate {estimate}", sent.fee))?;
    ensure(sent.fee > 0, || "a transaction paid no fee".into())?;
    let left = chain.balance(&payer.pubkey()).await.map_err(chain_err("balance"))?;
    ensure(left == FUNDING - amount - sent.fee, || {
        format!("payer has {left}, expected {} - {amount} - fee {}", FUNDING, sent.fee)
    })?;
    let got = chain.balance(&recipient).await.map_err(chain_err("balance"))?;
    ensure(got == amount, || format!("recipient has {got}, expected {amount}"))
}

async fn transaction_history_pages_back<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let payer = funded(chain).await?;
    let recipient = Keypair::new().pubkey();
    let mut sent = Vec::new();
    for amount in [1_000_000, 2_000_000, 3_000_000] {
        let ixs = [transfer(&payer, &recipient, amount)];
        sent.push(chain.send(&ixs, &[&payer]).await.map_err(chain_err("send"))?);
    }
    // History is as of the `confirmed` commitment: a node may lag `send` by a slot or two.
    let waiting = std::time::Instant::now();
    while chain.signatures_for(&recipient, None, 10).await.map_err(chain_err("signatures_for"))?.len() < 3 {
        ensure(waiting.elapsed() < Duration::from_secs(30), || "three sends never all showed in history".into())?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Newest first, paged with `before`.
    let newest = chain.signatures_for(&recipient, None, 2).await.map_err(chain_err("signatures_for"))?;
    let names = |refs: &[crate::TransactionRef]| refs.iter().map(|r| r.signature).collect::<Vec<_>>();
    ensure(names(&newest) == [sent[2].signature, sent[1].signature], || format!("first page {newest:?}"))?;
    let before = newest.last().map(|r| r.signature);
    let older = chain.signatures_for(&recipient, before, 10).await.map_err(chain_err("signatures_for"))?;
    ensure(names(&older) == [sent[0].signature], || format!("second page {older:?}"))?;
    ensure(older.iter().all(|r| !r.failed && r.slot > 0), || format!("references {older:?}"))?;
    let nobody = Keypair::new().pubkey();
    let none = chain.signatures_for(&nobody, None, 10).await.map_err(chain_err("signatures_for"))?;
    ensure(none.is_empty(), || format!("an unused address has history: {none:?}"))?;

    // The transaction as sent, with what it did to each balance.
    // A node can list a signature in history a moment before `getTransaction` serves it
    // (seen once in a full test run): the same bounded wait as for the history above.
    let waiting = std::time::Instant::now();
    let found = loop {
        if let Some(found) = chain.transaction(&sent[1].signature).await.map_err(chain_err("transaction"))? {
            break found;
        }
        ensure(waiting.elapsed() < Duration::from_secs(30), || "a confirmed transaction is not found".into())?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let expected = transfer(&payer, &recipient, 2_000_000);
    ensure(found.instructions == [expected.clone()], || format!("instructions {:?}", found.instructions))?;
    let change = |address: &Address| found.balances.iter().find(|b| b.address == *address).copied();
    let received = change(&recipient).ok_or("no balance for the recipient")?;
    ensure(received.after - received.before == 2_000_000, || format!("recipient {received:?}"))?;
    let paid = change(&payer.pubkey()).ok_or("no balance for the payer")?;
    ensure(paid.before - paid.after == 2_000_000 + sent[1].fee, || format!("payer {paid:?}"))?;
    let unknown = chain.transaction(&Signature::from([7; 64])).await.map_err(chain_err("transaction"))?;
    ensure(unknown.is_none(), || "an unknown signature reads as a transaction".into())
}

async fn identical_sends_are_two_transactions<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let payer = funded(chain).await?;
    let recipient = Keypair::new().pubkey();
    let ixs = [transfer(&payer, &recipient, 1_000_000)];
    let first = chain.send(&ixs, &[&payer]).await.map_err(chain_err("first send"))?;
    let second = chain.send(&ixs, &[&payer]).await.map_err(chain_err("second send"))?;
    ensure(first.signature != second.signature, || "two sends share a signature".into())?;
    let got = chain.balance(&recipient).await.map_err(chain_err("balance"))?;
    ensure(got == 2_000_000, || format!("recipient has {got} after two identical transfers of 1,000,000"))
}

async fn missing_signer_is_refused_before_sending<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let payer = funded(chain).await?;
    let other = Keypair::new();
    let ixs = [transfer(&other, &payer.pubkey(), 1)];
    match chain.send(&ixs, &[&payer]).await {
        Err(ChainError::Invalid(_)) => {}
        other => return Err(format!("expected ChainError::Invalid, got {other:?}")),
    }
    match chain.send(&ixs, &[]).await {
        Err(ChainError::Invalid(_)) => {}
        other => return Err(format!("no signers: expected ChainError::Invalid, got {other:?}")),
    }
    let left = chain.balance(&payer.pubkey()).await.map_err(chain_err("balance"))?;
    ensure(left == FUNDING, || format!("a refused send charged {}", FUNDING - left))
}

async fn program_error_carries_its_code<C: Chain + ?Sized>(chain: &C, program: &Program) -> Outcome {
    let authority = funded(chain).await?;
    // Toggling a server that was never registered: the program refuses its missing account.
    let ixs = [instruction(builders::set_server_active(program, &authority.pubkey().to_bytes(), false))];
    match chain.send(&ixs, &[&authority]).await {
        Err(err @ ChainError::Transaction { .. }) => {
            let Some((index, code)) = err.program_error() else {
                return Err(format!("no program error code in {err:?}"));
            };
            ensure(index == 0, || format!("failing instruction index {index}"))?;
            let named = chainference_core::Error::from_code(code);
            ensure(named.is_some(), || format!("code {code} is not one of core's errors"))?;
            let charged = match err {
                ChainError::Transaction { charged, .. } => charged,
                _ => 0,
            };
            let left = chain.balance(&authority.pubkey()).await.map_err(chain_err("balance"))?;
            ensure(left == FUNDING - charged, || format!("failed send took {} but reported {charged}", FUNDING - left))
        }
        other => Err(format!("expected a program error, got {other:?}")),
    }
}

async fn accounts_come_back_in_order<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let a = funded(chain).await?;
    let b = funded(chain).await?;
    let missing = Keypair::new().pubkey();
    let found = chain.accounts(&[b.pubkey(), missing, a.pubkey()]).await.map_err(chain_err("accounts"))?;
    ensure(found.len() == 3, || format!("{} results for 3 addresses", found.len()))?;
    ensure(found[0].is_some() && found[1].is_none() && found[2].is_some(), || {
        format!("presence {:?}", found.iter().map(Option::is_some).collect::<Vec<_>>())
    })
}

async fn register<C: Chain + ?Sized>(chain: &C, program: &Program, authority: &Keypair) -> Outcome {
    let key = [7u8; 32];
    let profile =
        ServerProfile { hpke_key: &key, endpoint: "", offers: &[("HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1", 1_000)] };
    let ix = builders::register_server(program, &authority.pubkey().to_bytes(), &profile)
        .map_err(|err| format!("register_server: {err}"))?;
    chain.send(&[instruction(ix)], &[authority]).await.map_err(chain_err("register"))?;
    Ok(())
}

async fn program_accounts_filter<C: Chain + ?Sized>(chain: &C, program: &Program) -> Outcome {
    let first = funded(chain).await?;
    let second = funded(chain).await?;
    register(chain, program, &first).await?;
    register(chain, program, &second).await?;
    let program_id = address(&program.id);
    for (who, expected) in
        [(&first, program.server(&first.pubkey().to_bytes())), (&second, program.server(&second.pubkey().to_bytes()))]
    {
        let filters = [
            AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Server as u8] },
            AccountFilter::Memcmp { offset: ServerHeader::AUTHORITY_OFFSET, bytes: who.pubkey().to_bytes().to_vec() },
        ];
        let found = chain.program_accounts(&program_id, &filters).await.map_err(chain_err("program_accounts"))?;
        ensure(found.len() == 1 && found[0].0 == address(&expected), || {
            format!("authority filter found {:?}", found.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>())
        })?;
        let len = found[0].1.data.len() as u64;
        let sized = [filters[1].clone(), AccountFilter::DataSize(len)];
        let found = chain.program_accounts(&program_id, &sized).await.map_err(chain_err("program_accounts"))?;
        ensure(found.len() == 1, || format!("data-size filter found {} accounts", found.len()))?;
        let wrong = [filters[1].clone(), AccountFilter::DataSize(len + 1)];
        let found = chain.program_accounts(&program_id, &wrong).await.map_err(chain_err("program_accounts"))?;
        ensure(found.is_empty(), || format!("a wrong data size matched {} accounts", found.len()))?;
    }
    let all = [AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Server as u8] }];
    let found = chain.program_accounts(&program_id, &all).await.map_err(chain_err("program_accounts"))?;
    ensure(found.len() >= 2, || format!("kind filter found {} servers, registered 2", found.len()))?;
    ensure(found.windows(2).all(|w| w[0].0 < w[1].0), || "program accounts not sorted by address".into())
}

async fn subscription_sees_changes_and_closure<C: Chain + ?Sized>(chain: &C, program: &Program) -> Outcome {
    let authority = funded(chain).await?;
    register(chain, program, &authority).await?;
    let server = address(&program.server(&authority.pubkey().to_bytes()));
    let mut updates = chain.subscribe(&server).await.map_err(chain_err("subscribe"))?;
    let first = next_state(&mut updates).await.map_err(|_| "no first state".to_string())?.ok_or("stream ended")?;
    let first = first.ok_or("first state: account missing")?;
    ensure(first.data.get(ServerHeader::ACTIVE_OFFSET) == Some(&1), || "a new server is not active".into())?;

    let deactivate = [instruction(builders::set_server_active(program, &authority.pubkey().to_bytes(), false))];
    chain.send(&deactivate, &[&authority]).await.map_err(chain_err("set_server_active"))?;
    loop {
        let state = next_state(&mut updates).await.map_err(|_| "no notification of the change".to_string())?;
        let state = state.ok_or("stream ended")?.ok_or("account gone after a change")?;
        if state.data.get(ServerHeader::ACTIVE_OFFSET) == Some(&0) {
            break;
        }
    }
    // Closing retires a server (its header stays, smaller): a notification of the new size.
    let close = [instruction(builders::close_server(program, &authority.pubkey().to_bytes()))];
    chain.send(&close, &[&authority]).await.map_err(chain_err("close_server"))?;
    loop {
        let state = next_state(&mut updates).await.map_err(|_| "no notification of the retirement".to_string())?;
        let state = state.ok_or("stream ended")?.ok_or("a retired server's account is gone")?;
        if state.data.len() == ServerHeader::LEN {
            break;
        }
    }
    // An account that goes away: a wallet drained to zero (another wallet pays the fee).
    let drained = funded(chain).await?;
    let mut gone = chain.subscribe(&drained.pubkey()).await.map_err(chain_err("subscribe"))?;
    next_state(&mut gone).await.map_err(|_| "no first state".to_string())?.ok_or("stream ended")?;
    let drain = [transfer(&drained, &authority.pubkey(), FUNDING)];
    chain.send(&drain, &[&authority, &drained]).await.map_err(chain_err("drain"))?;
    loop {
        let state = next_state(&mut gone).await.map_err(|_| "no notification of the closure".to_string())?;
        if state.ok_or("stream ended")?.is_none() {
            return Ok(());
        }
    }
}

async fn next_state(
    updates: &mut crate::AccountUpdates,
) -> Result<Option<Option<crate::Account>>, tokio::time::error::Elapsed> {
    tokio::time::timeout(NOTIFY_TIMEOUT, updates.next()).await
}

async fn clock_moves_forward<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let before = chain.clock().await.map_err(chain_err("clock"))?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = chain.clock().await.map_err(chain_err("clock"))?;
    ensure(after.slot > before.slot, || format!("slot {} then {} after 1.5 s", before.slot, after.slot))?;
    ensure(after.unix_timestamp >= before.unix_timestamp, || "unix time went back".into())?;
    ensure(before.unix_timestamp > 1_600_000_000, || format!("unix time {}", before.unix_timestamp))
}

async fn rent_matches_the_runtime<C: Chain + ?Sized>(chain: &C) -> Outcome {
    let empty = chain.rent_exempt_minimum(0).await.map_err(chain_err("rent"))?;
    let header = chain.rent_exempt_minimum(ServerHeader::LEN).await.map_err(chain_err("rent"))?;
    // The default rent: 3,480 lamports per byte-year, two years, 128 bytes of account overhead.
    ensure(empty == 890_880, || format!("rent for 0 bytes: {empty}"))?;
    ensure(header == 890_880 + 6_960 * ServerHeader::LEN as u64, || {
        format!("rent for {} bytes: {header}", ServerHeader::LEN)
    })
}
