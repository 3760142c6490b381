//! `chainference demo`: the whole network in one process, on the embedded chain (the real
//! program `.so` in LiteSVM) with the real model, no cluster and no network.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainference_chain::{Address, Chain, EmbeddedChain, Keypair, Signer};
use chainference_client::{AnswerEvent, Ask, Client, PendingRequest, ServerQuery};
use chainference_core::prompt::{ChatMessage, Role};
use chainference_core::state::ConfigParams;
use chainference_server::InferenceBackend;
use chainference_server::candle::CandleBackend;
use chainference_server::runtime::{Server, ServerEvent, ServerHandle};
use futures::StreamExt;

use crate::output::{lamports, load_model};

/// One row of the settlement table.
struct Settled {
    label: String,
    server: String,
    stake: u64,
    tokens: u64,
    cost: u64,
    fee: u64,
    /// The server's share held in the request until the flag window closes (or the close).
    held: u64,
    refund: u64,
    rent_locked: u64,
    /// Signatures the client paid for this request (open, upload; its close rides in the next
    /// open, or in the one shared close at the end).
    client_signatures: u64,
    /// Transactions (one signature each) the server sent to answer it.
    server_signatures: u64,
}

/// The embedded chain's fee per signature (no priority fee).
const LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// Server transactions per request, from the servers' `Completed` events.
type ServerTransactions = Arc<Mutex<HashMap<Address, u32>>>;

/// The demo's servers.
struct DemoServer {
    name: &'static str,
    handle: ServerHandle,
}

const FUNDS: u64 = 20_000_000_000;

fn chat(question: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new(Role::System, "You are a helpful assistant."), ChatMessage::new(Role::User, question)]
}

async fn funded(chain: &EmbeddedChain) -> Result<Keypair> {
    let wallet = Keypair::new();
    chain.airdrop(&wallet.pubkey(), FUNDS).await?;
    Ok(wallet)
}

async fn start_server(
    chain: &Arc<EmbeddedChain>,
    model: &Arc<CandleBackend>,
    (name, price): (&'static str, u64),
    transactions: &ServerTransactions,
) -> Result<DemoServer> {
    let handle = Server::builder(Arc::clone(chain), funded(chain).await?, Arc::clone(model))
        .program(*chain.program())
        .price(price)
        .start()
        .await
        .with_context(|| format!("starting server {name}"))?;
    let mut events = handle.events();
    let transactions = Arc::clone(transactions);
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let ServerEvent::Completed { request, transactions: sent, .. } = event
                && let Ok(mut map) = transactions.lock()
            {
                map.insert(request, sent);
            }
        }
    });
    Ok(DemoServer { name, handle })
}

fn name_of<'a>(servers: &'a [DemoServer], authority: &Address) -> &'a str {
    servers.iter().find(|s| s.handle.authority() == *authority).map_or("?", |s| s.name)
}

/// Streams an answer to the terminal and returns its settlement.
async fn stream_answer(
    request: &PendingRequest<Arc<EmbeddedChain>>,
    indent: &str,
) -> Result<chainference_client::Receipt> {
    let mut events = request.events();
    let mut out = std::io::stdout();
    print!("{indent}");
    while let Some(event) = events.next().await {
        match event? {
            AnswerEvent::Text(text) => {
                print!("{}", text.replace('\n', &format!("\n{indent}")));
                out.flush().ok();
            }
            AnswerEvent::Restarted { .. } => {
                print!("\n{indent}[the server released it; another one starts over]\n{indent}")
            }
            AnswerEvent::Completed(receipt) => {
                println!();
                return Ok(receipt);
            }
            _ => {}
        }
    }
    bail!("the answer stream ended without a settlement")
}

/// How a request ended.
enum Ending<'a> {
    Completed(&'a chainference_client::Receipt),
    /// Reclaimed after the deadline, with the refund.
    Reclaimed(u64),
}

/// The request's settlement row; the request is then queued to close inside the client's next
/// open transaction (its rent and the server's held share go back then).
async fn settle_row(
    (label, server): (&str, &str),
    request: &PendingRequest<Arc<EmbeddedChain>>,
    ending: Ending<'_>,
    server_transactions: &ServerTransactions,
) -> Result<Settled> {
    let (receipt, reclaimed_refund) = match ending {
        Ending::Completed(receipt) => (Some(receipt), 0),
        Ending::Reclaimed(refund) => (None, refund),
    };
    // The server reports its transactions once its own confirmation is in, a moment after the
    // client saw the settlement.
    let mut sent = 0;
    for _ in 0..100 {
        if let Some(count) = server_transactions.lock().ok().and_then(|map| map.get(&request.address()).copied()) {
            sent = count;
            break;
        }
        if receipt.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    request.close_later().await?;
    Ok(Settled {
        label: label.to_string(),
        server: server.to_string(),
        stake: request.stake(),
        tokens: receipt.map_or(0, |r| r.tokens),
        cost: receipt.map_or(0, |r| r.cost),
        fee: receipt.map_or(0, |r| r.fee),
        held: receipt.map_or(0, |r| r.server_held),
        refund: receipt.map_or(reclaimed_refund, |r| r.refund),
        rent_locked: request.rent_locked(),
        client_signatures: request.transaction_fees() / LAMPORTS_PER_SIGNATURE,
        server_signatures: u64::from(sent),
    })
}

/// Runs the demo; errors (and a conservation failure) make the process exit non-zero.
pub async fn run() -> Result<()> {
    let wall = Instant::now();
    println!("Chainference demo: the real program (SBF .so) in an embedded Solana runtime, SmolLM2-135M on this CPU\n");

    // 1. Deploy and configure.
    let chain = Arc::new(EmbeddedChain::start().context(
        "starting the embedded chain (build the program first: `cargo xtask build-sbf`, or run `cargo xtask demo`)",
    )?);
    let params = ConfigParams::default();
    println!(
        "[1/6] program {} deployed and configured: fee {}% of the server's charge, timeouts {}–{} s",
        chainference_chain::address(&chain.program().id),
        f64::from(params.fee_bps) / 100.0,
        params.min_timeout,
        params.max_timeout
    );
    let model = Arc::new(load_model(None)?);

    // Servers: two good ones at different prices, a third that will stall.
    let server_transactions = ServerTransactions::default();
    let servers = vec![
        start_server(&chain, &model, ("alpha", 2_000_000), &server_transactions).await?,
        start_server(&chain, &model, ("beta", 3_000_000), &server_transactions).await?,
        start_server(&chain, &model, ("gamma", 1_000_000), &server_transactions).await?,
    ];
    let client_wallet = funded(&chain).await?;
    let total_before = chain.total_lamports();
    let fees_before = chain.fees_charged();
    println!(
        "[2/6] servers registered: alpha at 2,000,000, beta at 3,000,000, gamma at 1,000,000 lamports per million tokens"
    );

    // 2. The client lists the servers.
    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let model_id = model.model_id().to_string();
    let found = client.servers(&ServerQuery::new(&model_id)).await?;
    println!("[3/6] the client lists the servers offering {model_id}:");
    println!("      {:<6} {:>14} {:>10} {:>9} {:>11}", "server", "price/Mtok", "completed", "success", "preference");
    for info in &found.eligible {
        println!(
            "      {:<6} {:>14} {:>10} {:>8.1}% {:>11}",
            name_of(&servers, &info.authority),
            lamports(info.price.unwrap_or(0)),
            info.stats.completed,
            f64::from(info.success_bps) / 100.0,
            info.preference_bps.map_or("none yet".to_string(), |p| format!("{:.1}%", f64::from(p) / 100.0))
        );
    }

    let mut table = Vec::new();
    let alpha = servers.first().map(|s| s.handle.authority()).context("alpha")?;
    let beta = servers.get(1).map(|s| s.handle.authority()).context("beta")?;
    let gamma = servers.get(2).map(|s| s.handle.authority()).context("gamma")?;

    // 3. An encrypted prompt to alpha; the answer streams as it is generated.
    let question = "What is the capital of France?";
    println!("[4/6] sealed prompt to alpha: \"{question}\"");
    let sent = Instant::now();
    let request = client.ask(Ask::chat(&model_id, chat(question)).max_tokens(256).to_servers([alpha])).await?;
    let receipt = stream_answer(&request, "      > ").await?;
    println!(
        "      {} tokens billed, {} lamports, answered in {:.2} s",
        receipt.tokens,
        lamports(receipt.cost),
        sent.elapsed().as_secs_f64()
    );
    table.push(
        settle_row(("France → alpha", "alpha"), &request, Ending::Completed(&receipt), &server_transactions).await?,
    );

    // 4. The same prompt to both good servers, as two unlinkable requests; compare and flag.
    let compared = "What is the largest planet in the solar system?";
    println!("[5/6] the same prompt to alpha and beta (two unlinkable requests; neither can tell): \"{compared}\"");
    let (to_alpha, to_beta) =
        client.ask_pair(Ask::chat(&model_id, chat(compared)).max_tokens(256), alpha, beta).await?;
    println!("      alpha:");
    let alpha_receipt = stream_answer(&to_alpha, "      > ").await?;
    println!("      beta:");
    let beta_receipt = stream_answer(&to_beta, "      > ").await?;
    client.compare(&to_alpha.address(), &to_beta.address(), &to_alpha.address()).await?;
    client.flag(&to_beta.address()).await?;
    println!("      compared on chain (commitments checked): alpha preferred; beta's answer flagged");
    table.push(
        settle_row(("planet → alpha", "alpha"), &to_alpha, Ending::Completed(&alpha_receipt), &server_transactions)
            .await?,
    );
    table.push(
        settle_row(("planet → beta", "beta"), &to_beta, Ending::Completed(&beta_receipt), &server_transactions).await?,
    );

    // 5. gamma locks a request and goes silent; the client reclaims after the deadline.
    println!("[6/6] a request to gamma, which locks it and then stalls (its process dies)");
    let mut gamma_events = servers.get(2).context("gamma")?.handle.events();
    let stalled = client
        .ask(
            Ask::chat(&model_id, chat("Write a haiku about the sea."))
                .max_tokens(256)
                .timeout_secs(params.min_timeout)
                .to_servers([gamma]),
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(event) = gamma_events.recv().await {
            if matches!(event, ServerEvent::Locked { .. }) {
                break;
            }
        }
    })
    .await
    .context("gamma never locked the request")?;
    let mut servers = servers;
    let gamma_server = servers.pop().context("gamma")?;
    let gamma_counters = gamma_server.handle.abort().await;
    let deadline = stalled.state().await?.deadline;
    let now = chain.clock().await?.unix_timestamp;
    let wait = u64::try_from(deadline.saturating_sub(now)).unwrap_or(0).saturating_add(1);
    chain.advance(Duration::from_secs(wait));
    let refund = stalled.reclaim().await?;
    println!(
        "      gamma locked it and went silent; {wait} s later (the clock advanced) the deadline passed and the client reclaimed {} lamports",
        lamports(refund)
    );
    table
        .push(settle_row(("haiku → gamma", "gamma"), &stalled, Ending::Reclaimed(refund), &server_transactions).await?);
    // What no later open carried is closed now, in one transaction.
    let client_before_close = client.balance().await?;
    let closed_at_end = client.close_finished().await?;
    let returned_at_end = client.balance().await?.saturating_sub(client_before_close);

    // Settlement and reputation.
    println!("\nSettlement (lamports)");
    println!(
        "| request | server | stake | tokens | cost | fee | server share held (flag window) | refund | rent locked | signatures (client + server) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in &table {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} + {} |",
            row.label,
            row.server,
            lamports(row.stake),
            row.tokens,
            lamports(row.cost),
            lamports(row.fee),
            lamports(row.held),
            lamports(row.refund),
            lamports(row.rent_locked),
            row.client_signatures,
            row.server_signatures,
        );
    }
    println!(
        "The server's share stays in the request until the flag window closes (then the server claims it) or the \
         client closes the request; a dispute returns {}% of it (a flag marks the server instead). Each request was closed inside the client's next open \
         transaction (no signature of its own); the {closed_at_end} left at the end in one more transaction, \
         returning {} lamports. A server signs once per transaction it streams: a short answer is one (lock, \
         answer and bill together), a long one one per flush.",
        params.flag_refund_bps / 100,
        lamports(returned_at_end)
    );
    let mut stopped = vec![("gamma", gamma_counters)];
    for server in servers {
        stopped.push((server.name, server.handle.shutdown().await?));
    }
    let after = client.servers(&ServerQuery { include_inactive: true, ..ServerQuery::new(&model_id) }).await?;
    println!("\nReputation (on chain, after it all)");
    println!(
        "| server | completed | counted | fees paid | flagged | timed out | released | comparisons | preferred | success | preference | earned (lamports) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let everyone: Vec<_> = after.eligible.iter().chain(after.excluded.iter().map(|(info, _)| info)).collect();
    let names = [("alpha", alpha), ("beta", beta), ("gamma", gamma)];
    for (name, counters) in &stopped {
        let authority = names.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
        let Some(info) = everyone.iter().find(|info| Some(info.authority) == authority) else { continue };
        let s = info.stats;
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {} | {} |",
            s.completed,
            s.counted,
            lamports(s.fees),
            s.flagged,
            s.timed_out,
            s.released,
            s.comparisons,
            s.preferred,
            f64::from(info.success_bps) / 100.0,
            info.preference_bps.map_or("none".to_string(), |p| format!("{:.1}%", f64::from(p) / 100.0)),
            lamports(counters.earned)
        );
    }

    let burned = chain.fees_charged().saturating_sub(fees_before);
    let fell = total_before.saturating_sub(chain.total_lamports());
    println!(
        "\nConservation: the chain's lamports fell by {} and {} was charged in fees: {}",
        fell,
        burned,
        if fell == burned { "conserved" } else { "NOT CONSERVED" }
    );
    println!("Demo finished in {:.1} s", wall.elapsed().as_secs_f64());
    if fell != burned {
        bail!("lamports not conserved: the chain lost {fell} but fees were {burned}");
    }
    Ok(())
}
