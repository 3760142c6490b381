//! `chainference-soak`: the network under load and faults on a real validator.
//!
//! Starts the local validator behind a TCP proxy the soak owns, `S` `chainference server run`
//! processes (real model), `C` client tasks (the client SDK, one wallet each) and a
//! `chainference gateway`, and sends `R` requests: mixed prompt sizes, explicit and automatic
//! server choice, pairs that get compared, answers that get flagged. Meanwhile it injects each
//! fault once (a server killed mid-answer, one shut down gracefully, websockets cut, RPC
//! refusing and slow, a client process killed after its open, the validator restarted from its
//! ledger), then sends a burst of OpenAI-API calls to the gateway, some hanging up mid-stream.
//! At the end it checks that nothing is stranded (no request or response account left), that
//! lamports are conserved over every wallet, the treasury and the program's accounts (before −
//! after = the fees of every transaction in between), and that each server's own counters
//! match its on-chain stats, and prints its figures.
//!
//! `cargo xtask soak` builds and runs it; `cargo xtask test` runs a short form.
//!
//! ```text
//! chainference-soak [--requests R] [--clients C] [--servers S] [--gateway-calls G]
//!                   [--timeout SECS] [--no-validator-restart] [--json]
//!                   --cli target/debug/chainference --program target/deploy/chainference_program.so
//! ```

// A test harness: counters, sums and timings of its own, never input from outside.
#![allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation, clippy::cast_precision_loss)]
// JSON from the validator and the gateway is read with serde_json's `value["key"]`, which gives
// `Null` for what is missing rather than panicking.
#![allow(clippy::indexing_slicing)]

mod audit;
mod faults;
mod gateway;
mod load;
mod network;
mod proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainference_chain::{Address, Chain, Keypair, Signer};
use chainference_client::Client;
use chainference_core::builders::Program;
use serde_json::json;

use crate::load::{Board, Outcome};
use crate::network::{CliProcess, Cluster, ServerProcess, fund, write_keypair};

/// The command line.
struct Options {
    requests: usize,
    clients: usize,
    servers: usize,
    gateway_calls: usize,
    timeout_secs: u32,
    restart_validator: bool,
    json: bool,
    cli: PathBuf,
    program: PathBuf,
}

/// The gateway's on-chain timeout: its burst queues behind the servers, 64 calls on 3 servers.
const GATEWAY_TIMEOUT_SECS: u64 = 300;

const USAGE: &str = "usage: chainference-soak [--requests R (200)] [--clients C (16)] [--servers S (3)] \
    [--gateway-calls G (64)] [--timeout SECS (120)] [--no-validator-restart] [--json] --cli PATH --program PATH";

fn options() -> Result<Options> {
    let mut options = Options {
        requests: 200,
        clients: 16,
        servers: 3,
        gateway_calls: 64,
        timeout_secs: 120,
        restart_validator: true,
        json: false,
        cli: PathBuf::new(),
        program: chainference_host::program_so(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--requests" => options.requests = number(&arg, value()?)?,
            "--clients" => options.clients = number(&arg, value()?)?,
            "--servers" => options.servers = number(&arg, value()?)?,
            "--gateway-calls" => options.gateway_calls = number(&arg, value()?)?,
            "--timeout" => options.timeout_secs = number(&arg, value()?)?,
            "--no-validator-restart" => options.restart_validator = false,
            "--json" => options.json = true,
            "--cli" => options.cli = PathBuf::from(value()?),
            "--program" => options.program = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if options.cli.as_os_str().is_empty() {
        bail!("--cli (the `chainference` binary) is required\n{USAGE}");
    }
    if options.servers < 2 || options.clients == 0 || options.requests == 0 {
        bail!("the soak needs at least 2 servers, 1 client and 1 request");
    }
    Ok(options)
}

/// `text` as the number `flag` takes, or an error naming both.
fn number<T: std::str::FromStr<Err = std::num::ParseIntError>>(flag: &str, text: String) -> Result<T> {
    text.parse().with_context(|| format!("{flag} takes a whole number, not {text:?}\n{USAGE}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(err) => {
            eprintln!("soak: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--audit") {
        // Debugging: the fee accounting of a run, against a validator still up.
        let rpc = args.get(2).context("--audit RPC AFTER_SLOT ADDRESS...")?;
        let after: u64 = args.get(3).context("AFTER_SLOT")?.parse()?;
        let wallets: Vec<Address> = args.iter().skip(4).map(|a| a.parse()).collect::<Result<_, _>>()?;
        let fees = audit::fees_between(&reqwest::Client::new(), rpc, &wallets, (after, u64::MAX)).await?;
        println!("{fees:#?}");
        return Ok(true);
    }
    let options = options()?;
    let dir = chainference_host::cache_dir().join("soak");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("soak: logs and wallets in {}", dir.display());
    let program = Program::default();
    // Longer than a gateway call can take (its on-chain timeout, below, and then some).
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;

    // The network.
    let mut cluster = Cluster::start(&options.program, &dir).await.context("starting the validator")?;
    cluster.ensure_config().await?;
    let direct = cluster.direct_chain();
    let mut servers = Vec::new();
    for index in 0..options.servers {
        let price = 1_000_000 + 250_000 * index as u64;
        let server = ServerProcess::new(&options.cli, &dir, index, price, &cluster)?;
        fund(&direct, &server.authority, 5_000_000_000).await?;
        servers.push(server);
    }
    for server in &mut servers {
        server.start()?;
    }
    let wallets: Vec<Keypair> = (0..options.clients).map(|_| Keypair::new()).collect();
    for wallet in &wallets {
        fund(&direct, &wallet.pubkey(), 2_000_000_000).await?;
    }
    let gateway_wallet = Keypair::new();
    let gateway_keypair = dir.join("gateway.json");
    write_keypair(&gateway_wallet, &gateway_keypair)?;
    fund(&direct, &gateway_wallet.pubkey(), 5_000_000_000).await?;
    let killed_wallet = Keypair::new();
    let killed_keypair = dir.join("killed-client.json");
    write_keypair(&killed_wallet, &killed_keypair)?;
    fund(&direct, &killed_wallet.pubkey(), 1_000_000_000).await?;
    let probe_wallet = Keypair::new();
    fund(&direct, &probe_wallet.pubkey(), 2_000_000_000).await?;

    // Servers registered and active before anything is counted.
    let observer = Client::new(Arc::clone(&direct), Keypair::new());
    let registered = Instant::now();
    for server in &mut servers {
        loop {
            if observer.server(&server.authority, load::MODEL).await.ok().flatten().is_some_and(|s| s.active) {
                break;
            }
            if server.exited() || registered.elapsed() > Duration::from_secs(300) {
                bail!("server {} did not register; see {}", server.authority, dir.display());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let gateway_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let gateway_args: Vec<String> = [
        "gateway",
        "--listen",
        &format!("127.0.0.1:{gateway_port}"),
        "--request-timeout",
        &GATEWAY_TIMEOUT_SECS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut gateway =
        CliProcess::start(&options.cli, &cluster, &gateway_keypair, &gateway_args, &dir.join("gateway.log"))?;
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    gateway::wait_ready(&http, &gateway_url, Duration::from_secs(120)).await?;

    let mut everyone: Vec<Address> = servers.iter().map(|s| s.authority).collect();
    everyone.extend(wallets.iter().map(Signer::pubkey));
    everyone.extend([gateway_wallet.pubkey(), killed_wallet.pubkey(), probe_wallet.pubkey()]);
    eprintln!(
        "soak: wallets: gateway {}, killed client {}, probe {}, servers {:?}, clients 0.. {:?}",
        gateway_wallet.pubkey(),
        killed_wallet.pubkey(),
        probe_wallet.pubkey(),
        servers.iter().map(|s| s.authority.to_string()).collect::<Vec<_>>(),
        wallets.iter().map(|w| w.pubkey().to_string()).collect::<Vec<_>>()
    );
    let stats_before = server_stats(&observer, &servers).await?;
    let before = audit::snapshot(&direct, &program, &everyone).await?;
    eprintln!(
        "soak: {} servers, {} clients, {} requests; {} lamports held before",
        servers.len(),
        wallets.len(),
        options.requests,
        before.total()
    );

    // The load, and the faults while it runs.
    let authorities: Vec<Address> = servers.iter().map(|s| s.authority).collect();
    let board = Arc::new(Board::default());
    *board.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = load::plan(options.requests, &authorities);
    let start = Instant::now();
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for (i, wallet) in wallets.into_iter().enumerate() {
        let client = Client::new(cluster.proxied_chain(), wallet);
        clients.push(client.clone());
        tasks.push(tokio::spawn(load::client_task(
            format!("client {i}"),
            client,
            Arc::clone(&board),
            options.timeout_secs,
        )));
    }
    let probe = Client::new(cluster.proxied_chain(), probe_wallet);
    let script = faults::Script {
        cluster: &mut cluster,
        servers: &mut servers,
        probe: probe.clone(),
        board: Arc::clone(&board),
        cli: &options.cli,
        killed_client: &killed_keypair,
        dir: &dir,
        start,
        timeout_secs: options.timeout_secs,
        restart_validator: options.restart_validator,
    };
    let faults = script.run().await.context("the fault script")?;
    for task in tasks {
        task.await?;
    }
    load::close_queued(&probe).await;
    let load_time = start.elapsed();

    // The gateway under load.
    let burst = gateway::burst(&http, &gateway_url, options.gateway_calls).await;
    let gateway_client = Client::new(Arc::clone(&direct), network::read_keypair(&gateway_keypair)?);
    let settle_start = Instant::now();
    let gateway_settled = loop {
        let left = open_requests(&gateway_client).await;
        if left == Some(0) {
            break Some(settle_start.elapsed());
        }
        if settle_start.elapsed() > Duration::from_secs(GATEWAY_TIMEOUT_SECS + 90) {
            break None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let gateway_left = open_requests(&gateway_client).await.unwrap_or(usize::MAX);
    network::signal(&gateway.child, "-INT")?;
    if tokio::time::timeout(Duration::from_secs(30), gateway.child.wait()).await.is_err() {
        eprintln!("soak: the gateway did not stop within 30 s of Ctrl-C; killing it");
        gateway.child.kill().await?;
    }

    // Stranded: what the clients and the gateway left on chain once they are done. Then the
    // soak settles it itself (so the books close), counting what it had to rescue.
    let left = audit::snapshot(&direct, &program, &everyone).await?;
    let stranded = left.request_accounts;
    let records_so_far = board.records();
    for line in &left.request_details {
        eprintln!("soak: stranded {line}");
        for record in records_so_far.iter().filter(|r| r.request.is_some_and(|a| line.contains(&a.to_string()))) {
            eprintln!("soak:   its record: {} {:?}, restarts {}", record.who, record.outcome, record.restarts);
        }
    }
    let killed_client = Client::new(Arc::clone(&direct), network::read_keypair(&killed_keypair)?);
    let patience = Duration::from_secs(u64::from(options.timeout_secs) + 30);
    let sweeps = clients.iter().chain([&probe, &gateway_client, &killed_client]).map(|c| load::sweep(c, patience));
    let rescued: usize =
        futures::future::join_all(sweeps).await.into_iter().map(|(closed, reclaimed)| closed + reclaimed).sum();

    // Servers stop (each finishes or releases, then reports its counters).
    for server in &mut servers {
        if let Err(err) = server.shut_down(Duration::from_secs(60)).await {
            eprintln!("soak: {err}");
        }
    }
    let stats_after = server_stats(&observer, &servers).await?;
    let after = audit::snapshot(&direct, &program, &everyone).await?;
    let up_to_slot = direct.clock().await?.slot;
    // The node indexes transactions by address in the background, behind the blocks under
    // load: read the history until it accounts for every lamport or stops growing.
    // Only transactions between the two snapshots count (nothing of ours runs after `after`).
    let window = (before.slot, up_to_slot);
    let mut chain_fees = audit::fees_between(&http, &cluster.direct_rpc, &everyone, window).await?;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let again = audit::fees_between(&http, &cluster.direct_rpc, &everyone, window).await?;
        let settled = again.transactions == chain_fees.transactions && again.lamports == chain_fees.lamports;
        chain_fees = again;
        if settled {
            break;
        }
    }
    let (transactions, signatures, fees) = (chain_fees.transactions, chain_fees.signatures, chain_fees.lamports);

    // The books.
    let records = board.records();
    let count = |f: &dyn Fn(&Outcome) -> bool| records.iter().filter(|r| f(&r.outcome)).count();
    let completed = count(&|o| *o == Outcome::Completed);
    let reclaimed = count(&|o| *o == Outcome::Reclaimed);
    let refused = count(&|o| *o == Outcome::Refused);
    let open_failed = count(&|o| matches!(o, Outcome::OpenFailed(_)));
    let vanished = count(&|o| matches!(o, Outcome::Vanished));
    let lost: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Lost(why) => Some(format!("{} {:?}: {why}", r.who, r.request)),
            _ => None,
        })
        .collect();
    let left_after_sweep = after.request_accounts;
    // Account by account: the snapshots' change against what the transactions say moved.
    let mut unexplained = Vec::new();
    let accounts: std::collections::BTreeSet<&Address> = before.lamports.keys().chain(after.lamports.keys()).collect();
    for account in accounts {
        let seen = i128::from(after.lamports.get(account).copied().unwrap_or(0))
            - i128::from(before.lamports.get(account).copied().unwrap_or(0));
        let moved = chain_fees.deltas.get(&account.to_string()).copied().unwrap_or(0);
        if seen != moved {
            unexplained.push(format!("{account}: balance changed by {seen}, its transactions moved {moved}"));
        }
    }
    for (account, moved) in &chain_fees.deltas {
        let ours = account
            .parse::<Address>()
            .is_ok_and(|a| before.lamports.contains_key(&a) || after.lamports.contains_key(&a));
        // Accounts opened and closed in between are in neither snapshot: they must net to 0.
        if !ours && *moved != 0 {
            unexplained.push(format!("{account} (outside the books): our transactions moved {moved}"));
        }
    }
    let spent = before.total().checked_sub(after.total());
    let conserved = spent == Some(u128::from(fees));
    let tokens: u64 = records.iter().filter_map(|r| r.receipt.as_ref().map(|x| x.tokens)).sum();
    let cost: u64 = records.iter().filter_map(|r| r.receipt.as_ref().map(|x| x.cost)).sum();
    let restarts: u32 = records.iter().map(|r| r.restarts).sum();
    let mut first: Vec<Duration> = records.iter().filter_map(|r| r.first_chunk).collect();
    let mut whole: Vec<Duration> = records.iter().filter_map(|r| r.complete).collect();
    let events: Vec<network::EventCounts> = servers.iter().map(ServerProcess::events).collect();
    let lost_races: u64 = events.iter().map(|e| e.lost_races).sum();
    let released: u64 = events.iter().map(|e| e.released).sum();
    let mut counter_mismatches = Vec::new();
    for (((server, events), before), after) in servers.iter().zip(&events).zip(&stats_before).zip(&stats_after) {
        let chain_completed = after.completed.checked_sub(before.completed);
        let chain_released = after.released.checked_sub(before.released);
        if chain_completed != Some(events.completed) || chain_released != Some(events.released) {
            counter_mismatches.push(format!(
                "{}: completed {} (chain {chain_completed:?}), released {} (chain {chain_released:?})",
                server.authority, events.completed, events.released
            ));
        }
    }
    let requests_total = records.len() + burst.calls + 1; // + the killed client's
    let minutes = load_time.as_secs_f64() / 60.0;
    let figures = json!({
        "requests": records.len(),
        "gateway_calls": burst.calls,
        "completed": completed,
        "reclaimed": reclaimed,
        "refused": refused,
        "open_failed": open_failed,
        "vanished": vanished,
        "rolled_back_transactions": chain_fees.rolled_back,
        "lost_by_client": lost.len(),
        "rescued_by_sweep": rescued,
        "stranded": stranded,
        "left_after_sweep": left_after_sweep,
        "load_seconds": load_time.as_secs_f64(),
        "requests_per_min": records.len() as f64 / minutes.max(1e-9),
        "tokens_per_s": tokens as f64 / load_time.as_secs_f64().max(1e-9),
        "first_chunk_ms_p50": percentile(&mut first, 50.0),
        "first_chunk_ms_p99": percentile(&mut first, 99.0),
        "complete_ms_p50": percentile(&mut whole, 50.0),
        "complete_ms_p99": percentile(&mut whole, 99.0),
        "lock_races_lost": lost_races,
        "releases": released,
        "restarts_seen_by_clients": restarts,
        "reclaims": reclaimed,
        "transactions_per_request": transactions as f64 / requests_total as f64,
        "signatures_per_request": signatures as f64 / requests_total as f64,
        "fee_lamports_per_request": fees as f64 / requests_total as f64,
        "cost_lamports_per_request": cost as f64 / completed.max(1) as f64,
        "gateway": {
            "calls": burst.calls, "streamed": burst.streamed, "hung_up": burst.hung_up, "answered": burst.answered,
            "unanswered": burst.unanswered.len(), "unanswered_reasons": burst.unanswered,
            "failures": burst.failures, "seconds": burst.elapsed.as_secs_f64(),
            "settled_after_seconds": gateway_settled.map(|d| d.as_secs_f64()), "left_on_chain": gateway_left,
        },
        "faults": faults.iter().map(|f| json!({ "fault": f.name, "at_seconds": f.at.as_secs_f64(), "detail": f.detail })).collect::<Vec<_>>(),
        "lamports_before": before.total().to_string(),
        "lamports_after": after.total().to_string(),
        "fees": fees,
        "transactions": transactions,
        "signatures": signatures,
        "lamports_conserved": conserved,
        "server_counters_match_chain": counter_mismatches.is_empty(),
        "server_counter_mismatches": counter_mismatches,
        "lost": lost,
        "open_failures": records.iter().filter_map(|r| match &r.outcome {
            Outcome::OpenFailed(why) => Some(format!("{}: {why}", r.who)),
            _ => None,
        }).collect::<Vec<_>>(),
        "lamports_spent": spent.map(|s| s.to_string()),
        "unexplained": unexplained,
    });
    // The restart fault kills the node only once it has rooted what it confirmed: a
    // transaction missing from the blocks now means that gate failed.
    let ok = stranded == 0
        && chain_fees.rolled_back == 0
        && left_after_sweep == 0
        && unexplained.is_empty()
        && conserved
        && counter_mismatches.is_empty()
        && lost.is_empty()
        && burst.failures.is_empty()
        && gateway_left == 0;
    if options.json {
        println!("{figures:#}");
    } else {
        print_report(&figures);
    }
    println!(
        "soak: {} requests, {stranded} stranded, lamports conserved: {}",
        requests_total,
        if conserved { "yes" } else { "no" }
    );
    if let Some(secs) = std::env::var("SOAK_HOLD_SECS").ok().and_then(|s| s.parse::<u64>().ok()) {
        eprintln!("soak: holding the validator at {} for {secs} s", cluster.direct_rpc);
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    Ok(ok)
}

/// On-chain stats of each server, in order.
async fn server_stats(
    observer: &Client<Arc<chainference_chain::RpcChain>>,
    servers: &[ServerProcess],
) -> Result<Vec<chainference_core::pricing::ServerStats>> {
    let mut stats = Vec::new();
    for server in servers {
        let info = observer.server(&server.authority, load::MODEL).await?.context("server account gone")?;
        stats.push(info.stats);
    }
    Ok(stats)
}

/// Request accounts of `client`'s wallet still on chain; `None` if the chain did not answer.
async fn open_requests(client: &Client<Arc<chainference_chain::RpcChain>>) -> Option<usize> {
    let query = chainference_client::HistoryQuery { since: None, include_closed: false, max_transactions: 0 };
    client.history_with(query).await.ok().map(|entries| entries.iter().filter(|e| !e.closed).count())
}

fn percentile(values: &mut [Duration], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values.get(rank.min(values.len() - 1)).map(|d| d.as_secs_f64() * 1000.0)
}

fn print_report(f: &serde_json::Value) {
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.0} ms"));
    println!("| figure | value |\n|---|---|");
    let rows = [
        ("requests (clients and probes)", f["requests"].to_string()),
        (
            "completed / reclaimed / refused / open failed / vanished",
            format!(
                "{} / {} / {} / {} / {}",
                f["completed"], f["reclaimed"], f["refused"], f["open_failed"], f["vanished"]
            ),
        ),
        ("transactions rolled back by the validator restart", f["rolled_back_transactions"].to_string()),
        ("load time", format!("{:.1} s", f["load_seconds"].as_f64().unwrap_or(0.0))),
        ("requests/min", format!("{:.1}", f["requests_per_min"].as_f64().unwrap_or(0.0))),
        ("aggregate tokens/s", format!("{:.1}", f["tokens_per_s"].as_f64().unwrap_or(0.0))),
        (
            "send to first chunk p50 / p99",
            format!("{} / {}", ms(&f["first_chunk_ms_p50"]), ms(&f["first_chunk_ms_p99"])),
        ),
        ("send to complete p50 / p99", format!("{} / {}", ms(&f["complete_ms_p50"]), ms(&f["complete_ms_p99"]))),
        ("lock races lost", f["lock_races_lost"].to_string()),
        ("releases (restarts seen by clients)", format!("{} ({})", f["releases"], f["restarts_seen_by_clients"])),
        ("reclaims", f["reclaims"].to_string()),
        (
            "transactions / signatures per request",
            format!(
                "{:.2} / {:.2}",
                f["transactions_per_request"].as_f64().unwrap_or(0.0),
                f["signatures_per_request"].as_f64().unwrap_or(0.0)
            ),
        ),
        (
            "lamports per request (fees / cost)",
            format!(
                "{:.0} / {:.0}",
                f["fee_lamports_per_request"].as_f64().unwrap_or(0.0),
                f["cost_lamports_per_request"].as_f64().unwrap_or(0.0)
            ),
        ),
        (
            "gateway calls (streamed, hung up, answered, 503/504)",
            format!(
                "{} ({}, {}, {}, {})",
                f["gateway"]["calls"],
                f["gateway"]["streamed"],
                f["gateway"]["hung_up"],
                f["gateway"]["answered"],
                f["gateway"]["unanswered"]
            ),
        ),
        ("gateway requests left on chain", f["gateway"]["left_on_chain"].to_string()),
        ("rescued by the final sweep", f["rescued_by_sweep"].to_string()),
        ("server counters match chain stats", f["server_counters_match_chain"].to_string()),
    ];
    for (name, value) in &rows {
        println!("| {name} | {value} |");
    }
    println!();
    for fault in f["faults"].as_array().into_iter().flatten() {
        println!(
            "fault at {:>6.1} s: {}: {}",
            fault["at_seconds"].as_f64().unwrap_or(0.0),
            fault["fault"].as_str().unwrap_or(""),
            fault["detail"].as_str().unwrap_or("")
        );
    }
    for (name, value) in &rows {
        println!("{name}: {value}");
    }
    println!(
        "lamports: before {} after {} spent {} fees {}",
        f["lamports_before"], f["lamports_after"], f["lamports_spent"], f["fees"]
    );
    for line in f["unexplained"].as_array().into_iter().flatten() {
        println!("unexplained: {}", line.as_str().unwrap_or_default());
    }
    for line in f["open_failures"].as_array().into_iter().flatten() {
        println!("open failed: {}", line.as_str().unwrap_or_default());
    }
    for line in f["lost"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(f["server_counter_mismatches"].as_array().into_iter().flatten())
        .chain(f["gateway"]["failures"].as_array().into_iter().flatten())
    {
        println!("problem: {}", line.as_str().unwrap_or_default());
    }
}
