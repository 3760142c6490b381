//! The subcommands over the SDKs, against a cluster (`--rpc`, default the local validator).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chainference_chain::{Address, Chain, Keypair, RpcChain, RpcConfig, Signer};
use chainference_client::{AnswerEvent, Ask, Client, ClientError, Filtered as _, Policy, ServerQuery};
use chainference_server::runtime::{AcceptPolicy, Server, ServerEvent};
use futures::StreamExt;
use serde_json::json;

use crate::args::{AskArgs, Cli, Command, ServerCommand, ServerRunArgs};
use crate::output::{lamports, load_model};

/// The default wallet path.
pub fn default_keypair_path() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config/chainference/id.json")
}

/// Reads a Solana CLI keypair file (a JSON array of 64 bytes).
pub fn read_keypair(path: &Path) -> Result<Keypair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the wallet {} (create one with `chainference keygen`)", path.display()))?;
    let bytes: Vec<u8> =
        serde_json::from_str(&text).with_context(|| format!("{} is not a keypair file", path.display()))?;
    Keypair::try_from(bytes.as_slice()).map_err(|err| anyhow::anyhow!("{} is not a keypair: {err}", path.display()))
}

fn write_keypair(path: &Path, keypair: &Keypair, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = keypair.to_bytes().to_vec();
    std::fs::write(path, serde_json::to_string(&bytes)?).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn parse_address(text: &str) -> Result<Address> {
    Address::from_str(text).map_err(|err| anyhow::anyhow!("{text:?} is not an address: {err}"))
}

/// The cluster transport for `--rpc`/`--ws`.
pub fn rpc_chain(cli: &Cli) -> Arc<RpcChain> {
    let mut config = RpcConfig::new(cli.rpc.clone());
    config.ws_url.clone_from(&cli.ws);
    Arc::new(RpcChain::with_config(config))
}

fn wallet(cli: &Cli) -> Result<Keypair> {
    read_keypair(&cli.keypair.clone().unwrap_or_else(default_keypair_path))
}

async fn airdrop(chain: &RpcChain, to: &Address, sol: Option<f64>) -> Result<()> {
    if let Some(sol) = sol {
        let amount = (sol * 1e9).round();
        if !(0.0..=1e18).contains(&amount) {
            bail!("--airdrop {sol}: out of range");
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked range above
        let lamports_wanted = amount as u64;
        chain.airdrop(to, lamports_wanted).await.context("airdrop (only local validators and devnet have a faucet)")?;
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A hint for an error a user can act on.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let specific = match err.downcast_ref::<ClientError>() {
        Some(ClientError::InsufficientFunds { .. }) => {
            Some("fund the wallet (on a local validator: --airdrop 1), or lower --max-tokens / --max-cost")
        }
        Some(ClientError::NoServerOffersModel { .. }) => {
            Some("start one with `chainference server run`, or check --model")
        }
        Some(ClientError::AllServersExcluded { .. }) => {
            Some("see `chainference servers` for why, and relax the filters")
        }
        Some(ClientError::DeadlinePassed { .. }) => Some("reclaim the stake with `chainference reclaim <request>`"),
        Some(ClientError::Refused { .. }) => Some(
            "see `chainference servers` for each server's limits; shorten the prompt, raise --max-cost or --timeout, or pick other servers",
        ),
        _ => None,
    };
    if specific.is_some() {
        return specific;
    }
    let text = format!("{err:#}");
    if text.contains("Connection refused") || text.contains("error sending request") || text.contains("connect") {
        return Some("is a validator running? start one with `chainference localnet`, or pass --rpc URL");
    }
    None
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Demo => crate::demo::run().await,
        Command::Completions { .. } => Ok(()),
        Command::Gateway(args) => {
            crate::gateway::run(args, || Ok((rpc_chain(&cli) as Arc<dyn Chain>, wallet(&cli)?))).await
        }
        Command::Localnet { args } => localnet(args).await,
        Command::Keygen { out, force } => {
            let path = out.clone().unwrap_or_else(default_keypair_path);
            let keypair = Keypair::new();
            write_keypair(&path, &keypair, *force)?;
            if cli.json {
                print_json(&json!({ "address": keypair.pubkey().to_string(), "path": path }));
            } else {
                println!("wrote {} ({})", path.display(), keypair.pubkey());
            }
            Ok(())
        }
        Command::Servers { model, max_price } => {
            let chain = rpc_chain(&cli);
            let client = Client::new(Arc::clone(&chain), Keypair::new());
            let mut query = ServerQuery::new(model.clone());
            if let Some(max) = max_price {
                query = query.max_price(*max);
            }
            let found = client.servers(&query).await?;
            if cli.json {
                let list = |infos: Vec<&chainference_client::ServerInfo>| -> Vec<serde_json::Value> {
                    infos.into_iter().map(server_json).collect()
                };
                print_json(&json!({
                    "model": found.model,
                    "eligible": list(found.eligible.iter().collect()),
                    "excluded": found.excluded.iter().map(|(info, why)| {
                        json!({ "server": server_json(info), "reasons": why.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>() })
                    }).collect::<Vec<_>>(),
                }));
            } else {
                print!("{}", found.explain());
            }
            Ok(())
        }
        Command::Ask(args) => ask(&cli, args).await,
        Command::History(args) => {
            let chain = rpc_chain(&cli);
            let client = Client::new(Arc::clone(&chain), wallet(&cli)?);
            let since = match args.since {
                Some(since) => Some(since.unix(chain.clock().await?.unix_timestamp)),
                None => None,
            };
            let query = chainference_client::HistoryQuery {
                since,
                include_closed: args.max_transactions > 0,
                max_transactions: args.max_transactions,
            };
            let entries = client.history_with(query).await?;
            if cli.json {
                print_json(&serde_json::Value::Array(
                    entries
                        .iter()
                        .map(|e| {
                            json!({
                                "request": e.address.to_string(),
                                "model": e.model,
                                "created_at": e.created_at,
                                "status": e.state.status.name(),
                                "prompt": e.prompt.as_ref().and_then(|p| p.messages.last()).map(|m| m.content.clone()),
                                "answer": e.answer,
                                "complete": e.answer_complete,
                                "tokens": e.state.tokens,
                                "cost": e.state.cost,
                                "problem": e.problem,
                                "closed": e.closed,
                                "closed_at": e.closed_at,
                            })
                        })
                        .collect(),
                ));
            } else if entries.is_empty() {
                println!("no requests of {} found", client.address());
            } else {
                for e in entries {
                    let prompt = e.prompt.as_ref().and_then(|p| p.messages.last()).map_or("?", |m| m.content.as_str());
                    let closed = if e.closed { " (closed)" } else { "" };
                    println!(
                        "{} {:?}{closed} {} tokens, {} lamports",
                        e.address,
                        e.state.status,
                        e.state.tokens,
                        lamports(e.state.cost)
                    );
                    println!("  > {prompt}");
                    println!("  < {}", e.answer.as_deref().unwrap_or("(no answer yet)"));
                }
            }
            Ok(())
        }
        Command::Flag { request, refund: false } => {
            let client = Client::new(rpc_chain(&cli), wallet(&cli)?);
            client.flag(&parse_address(request)?).await?;
            done(&cli, json!({ "flagged": request }), &format!("flagged {request}"));
            Ok(())
        }
        Command::Flag { request, refund: true } => {
            let client = Client::new(rpc_chain(&cli), wallet(&cli)?);
            let back = client.dispute(&parse_address(request)?).await?;
            done(
                &cli,
                json!({ "disputed": request, "refund_lamports": back }),
                &format!("disputed {request}: {back} lamports of the server's held share came back"),
            );
            Ok(())
        }
        Command::Compare { a, b, preferred } => {
            let client = Client::new(rpc_chain(&cli), wallet(&cli)?);
            client.compare(&parse_address(a)?, &parse_address(b)?, &parse_address(preferred)?).await?;
            done(
                &cli,
                json!({ "compared": [a, b], "preferred": preferred }),
                &format!("compared; preferred {preferred}"),
            );
            Ok(())
        }
        Command::Reclaim { request } => {
            let client = Client::new(rpc_chain(&cli), wallet(&cli)?);
            let refund = client.request(&parse_address(request)?).await?.reclaim().await?;
            done(
                &cli,
                json!({ "reclaimed": request, "refund": refund }),
                &format!("reclaimed {} lamports", lamports(refund)),
            );
            Ok(())
        }
        Command::Close { request } => {
            let client = Client::new(rpc_chain(&cli), wallet(&cli)?);
            let returned = client.request(&parse_address(request)?).await?.close().await?;
            done(
                &cli,
                json!({ "closed": request, "returned": returned }),
                &format!("closed; {} lamports back", lamports(returned)),
            );
            Ok(())
        }
        Command::Server { command: ServerCommand::Run(args) } => serve(&cli, args).await,
    }
}

fn done(cli: &Cli, value: serde_json::Value, text: &str) {
    if cli.json { print_json(&value) } else { println!("{text}") }
}

fn server_json(info: &chainference_client::ServerInfo) -> serde_json::Value {
    json!({
        "authority": info.authority.to_string(),
        "price_per_mtok": info.price,
        "active": info.active,
        "completed": info.stats.completed,
        "flagged": info.stats.flagged,
        "timed_out": info.stats.timed_out,
        "released": info.stats.released,
        "success_bps": info.success_bps,
        "preference_bps": info.preference_bps,
        "endpoint": info.endpoint,
    })
}

/// Runs the validator tool with the program deployed (started and awaited by
/// [`chainference_host::localnet`], as xtask's test stages do), and initializes the protocol's
/// config (defaults, signed by the deploy's admin) once it is up, so clients and servers can use
/// it at once.
async fn localnet(args: &[String]) -> Result<()> {
    // No deadline: a first start on a slow machine takes as long as it takes (Ctrl-C stops it).
    let options = chainference_host::localnet::LocalnetOptions {
        args: args.to_vec(),
        ready_timeout: Duration::MAX,
        ..Default::default()
    };
    let mut validator = tokio::task::spawn_blocking(move || chainference_host::localnet::Localnet::start(options))
        .await
        .context("waiting for the validator")??;
    let url = validator.ready.rpc_url.clone();
    let admin = validator.ready.admin_keypair.clone();
    let chain = RpcChain::connect(&url);
    if ensure_config(&chain, &read_keypair(&admin)?).await? {
        eprintln!("config initialized with the defaults (admin {})", admin.display());
    }
    eprintln!("ready: --rpc {url} (Ctrl-C stops the validator)");
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        if let Some(status) = validator.try_wait()? {
            if !status.success() {
                bail!("the validator exited with {status}");
            }
            return Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()), // dropping `validator` stops it
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Initializes the protocol config with the defaults if it is not yet; `true` if it did.
pub async fn ensure_config(chain: &RpcChain, admin: &Keypair) -> Result<bool> {
    let program = chainference_core::builders::Program::default();
    if chain.account(&chainference_chain::address(&program.config)).await?.is_some() {
        return Ok(false);
    }
    chain.airdrop(&admin.pubkey(), 1_000_000_000).await?;
    let init = chainference_core::builders::init_config(
        &program,
        &admin.pubkey().to_bytes(),
        chainference_core::state::ConfigParams::default(),
    );
    chain.send(&[chainference_chain::instruction(init)], &[admin]).await?;
    Ok(true)
}

async fn ask(cli: &Cli, args: &AskArgs) -> Result<()> {
    let prompt = match args.prompt.as_deref() {
        Some(text) if text != "-" => text.to_string(),
        _ => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the prompt from stdin")?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let chain = rpc_chain(cli);
    let wallet = wallet(cli)?;
    airdrop(&chain, &wallet.pubkey(), args.airdrop).await?;
    let client = Client::new(Arc::clone(&chain), wallet);
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(chainference_client::ChatMessage::new(chainference_client::Role::System, system.clone()));
    }
    messages.push(chainference_client::ChatMessage::new(chainference_client::Role::User, prompt));
    let mut request = Ask::chat(args.model.clone(), messages).max_tokens(args.max_tokens).temperature(args.temperature);
    if args.timeout > 0 {
        request = request.timeout_secs(args.timeout);
    }
    if !args.stop.is_empty() {
        request = request.stop(args.stop.clone());
    }
    if let Some(stake) = args.max_cost {
        request = request.stake(stake);
    }
    if args.pair {
        return ask_pair(cli, &client, request, &args.servers).await;
    }
    request = if args.servers.is_empty() {
        request.best(args.best, if args.cheapest { Policy::Cheapest } else { Policy::MostReliable })
    } else {
        request.to_servers(args.servers.iter().map(|s| parse_address(s)).collect::<Result<Vec<_>>>()?)
    };
    let pending = client.ask(request).await?;
    if !cli.json {
        eprintln!("request {} sent (stake {} lamports)", pending.address(), lamports(pending.stake()));
    }
    let mut events = pending.events();
    let mut text = String::new();
    let receipt = loop {
        let Some(event) = tokio::time::timeout(Duration::from_secs(3_600), events.next()).await? else {
            bail!("the answer stream ended");
        };
        match event? {
            AnswerEvent::Text(piece) => {
                if !cli.json {
                    print!("{piece}");
                    std::io::stdout().flush().ok();
                }
                text.push_str(&piece);
            }
            AnswerEvent::Restarted { server } => {
                text.clear();
                if !cli.json {
                    eprintln!("\n[{server} released the request; another server starts over]");
                }
            }
            AnswerEvent::Completed(receipt) => break receipt,
            _ => {}
        }
    };
    if cli.json {
        print_json(&json!({
            "request": pending.address().to_string(),
            "server": receipt.server.to_string(),
            "answer": text,
            "tokens": receipt.tokens,
            "price_per_mtok": receipt.price_per_mtok,
            "cost": receipt.cost,
            "fee": receipt.fee,
            "refund": receipt.refund,
            "rent_locked": receipt.rent_locked,
            "transaction_fees": receipt.transaction_fees,
        }));
    } else {
        println!();
        eprintln!(
            "{} tokens billed by {}: {} lamports ({} refunded); close it with `chainference close {}` to get {} lamports of rent back",
            receipt.tokens,
            receipt.server,
            lamports(receipt.cost),
            lamports(receipt.refund),
            pending.address(),
            lamports(receipt.rent_locked)
        );
    }
    Ok(())
}

async fn ask_pair(cli: &Cli, client: &Client<Arc<RpcChain>>, request: Ask, servers: &[String]) -> Result<()> {
    let [first, second] = servers else { bail!("--pair needs exactly two --servers (a,b)") };
    let (a, b) = client.ask_pair(request, parse_address(first)?, parse_address(second)?).await?;
    // Both at once: a refusal or failure of one is seen (and the other still settles) without
    // waiting for the other's answer.
    let limit = Duration::from_secs(3_600);
    let (answer_a, answer_b) =
        tokio::join!(tokio::time::timeout(limit, a.wait()), tokio::time::timeout(limit, b.wait()));
    let mut answers = Vec::new();
    for (pending, answer) in [(&a, answer_a), (&b, answer_b)] {
        let answer = answer.with_context(|| format!("request {}", pending.address()))??;
        if !cli.json {
            println!("{} from {}:\n{}\n", pending.address(), answer.receipt.server, answer.text);
        }
        answers.push(json!({
            "request": pending.address().to_string(),
            "server": answer.receipt.server.to_string(),
            "answer": answer.text,
            "tokens": answer.receipt.tokens,
            "cost": answer.receipt.cost,
        }));
    }
    if cli.json {
        print_json(&json!({ "pair": answers }));
    } else {
        eprintln!(
            "compare them with `chainference compare {} {} --preferred <the better one>`",
            a.address(),
            b.address()
        );
    }
    Ok(())
}

async fn serve(cli: &Cli, args: &ServerRunArgs) -> Result<()> {
    let chain = rpc_chain(cli);
    let wallet = wallet(cli)?;
    airdrop(&chain, &wallet.pubkey(), args.airdrop).await?;
    let model = load_model(args.model_file.clone())?;
    let mut policy = AcceptPolicy::default();
    if let Some(bytes) = args.max_prompt_bytes {
        policy.max_prompt_len = bytes;
    }
    if let Some(tokens) = args.min_answer_tokens {
        policy.min_answer_tokens = tokens;
    }
    if let Some(secs) = args.min_time_left {
        policy.min_time_left = Duration::from_secs(secs);
    }
    policy.only_clients = args.only_clients.iter().map(|s| parse_address(s)).collect::<Result<_>>()?;
    policy.deny_clients = args.deny_clients.iter().map(|s| parse_address(s)).collect::<Result<_>>()?;
    let handle = Server::builder(Arc::clone(&chain), wallet, model)
        .accept(policy)
        .declines(!args.no_decline)
        .price(args.price)
        .endpoint(args.endpoint.clone())
        .flush_interval(Duration::from_millis(args.flush_ms.max(1)))
        .max_concurrent(args.concurrency)
        .start()
        .await?;
    let mut events = handle.events();
    eprintln!(
        "serving as {} at {} lamports per million tokens; Ctrl-C to stop",
        handle.authority(),
        lamports(args.price)
    );
    let json = cli.json;
    let mut printer = tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                // Fell behind (a burst of skips): say so, and what follows still prints.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    if json {
                        println!("{}", json!({ "event": format!("Lagged({missed})") }));
                    } else {
                        eprintln!("({missed} events not shown: the printer fell behind)");
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            if json {
                println!("{}", json!({ "event": format!("{event:?}") }));
                continue;
            }
            match event {
                ServerEvent::Locked { request, budget } => eprintln!("locked {request} (budget {budget} tokens)"),
                ServerEvent::Completed { request, tokens, earned, transactions } => {
                    eprintln!(
                        "completed {request}: {tokens} tokens, earned {} lamports, {transactions} transactions",
                        lamports(earned)
                    );
                }
                ServerEvent::Released { request, reason } => eprintln!("released {request}: {reason:?}"),
                ServerEvent::Failed { request, error } => eprintln!("failed {request}: {error}"),
                ServerEvent::LostRace { request } => eprintln!("another server locked {request} first"),
                ServerEvent::Declined { request, reasons } => eprintln!("declined {request}: {reasons}"),
                _ => {}
            }
        }
    });
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    eprintln!("stopping: finishing or releasing in-flight requests");
    let stopped = handle.shutdown().await;
    // What shutdown did (the last completions, the releases) is printed before the counters,
    // and before any error of the shutdown itself.
    if tokio::time::timeout(Duration::from_secs(2), &mut printer).await.is_err() {
        printer.abort();
    }
    let counters = stopped?;
    done(
        cli,
        json!({ "completed": counters.completed, "released": counters.released, "declined": counters.declined, "earned": counters.earned, "fees_paid": counters.fees_paid }),
        &format!("served {} requests, earned {} lamports", counters.completed, lamports(counters.earned)),
    );
    Ok(())
}
