//! The network under test: the validator (restartable from its ledger), the proxy in front of
//! it, funded wallets, and the `chainference` processes (servers and the gateway) whose output
//! the soak reads back.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainference_chain::{Address, Chain, Keypair, RpcChain, RpcConfig, Signer};
use chainference_core::builders::Program;
use chainference_host::localnet::{Localnet, LocalnetOptions};
use tokio::process::{Child, Command};

use crate::proxy::FaultProxy;

/// The validator and the two proxies (RPC and websocket) everyone but the soak itself goes through.
pub struct Cluster {
    /// The validator, while it runs.
    validator: Option<Localnet>,
    options: LocalnetOptions,
    /// Direct RPC URL (the soak's own reads, funding and audit).
    pub direct_rpc: String,
    /// The proxy in front of JSON-RPC.
    pub rpc_proxy: FaultProxy,
    /// The proxy in front of the websocket.
    pub ws_proxy: FaultProxy,
    /// The admin keypair file of the deployment.
    pub admin: PathBuf,
}

impl Cluster {
    /// Starts the validator on fixed ports (a restart must come back on the same ones) and the
    /// proxies in front of it.
    pub async fn start(program: &Path, dir: &Path) -> Result<Self> {
        let rpc_port = free_port_pair()?;
        let options = LocalnetOptions {
            program: program.to_path_buf(),
            ledger: dir.join("ledger"),
            ready_file: dir.join("ready.json"),
            args: vec!["--rpc-port".into(), rpc_port.to_string(), "--faucet-port".into(), "0".into(), "--quiet".into()],
            log: Some(dir.join("validator.log")),
            ready_timeout: Duration::from_secs(300),
            ..LocalnetOptions::default()
        };
        let started = options.clone();
        let validator = tokio::task::spawn_blocking(move || Localnet::start(started)).await??;
        let direct_rpc = validator.ready.rpc_url.clone();
        let admin = validator.ready.admin_keypair.clone();
        let rpc_target = socket_of(&direct_rpc)?;
        let ws_url = validator.ready.ws_url.clone().unwrap_or_else(|| format!("ws://127.0.0.1:{}", rpc_port + 1));
        let ws_target = socket_of(&ws_url)?;
        let rpc_proxy = FaultProxy::start(rpc_target).await?;
        let ws_proxy = FaultProxy::start(ws_target).await?;
        Ok(Cluster { validator: Some(validator), options, direct_rpc, rpc_proxy, ws_proxy, admin })
    }

    /// The RPC URL through the proxy.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_proxy.listen)
    }

    /// The websocket URL through the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws_proxy.listen)
    }

    /// A chain through the proxies (what clients and servers see).
    pub fn proxied_chain(&self) -> Arc<RpcChain> {
        let mut config = RpcConfig::new(self.rpc_url());
        config.ws_url = Some(self.ws_url());
        Arc::new(RpcChain::with_config(config))
    }

    /// A chain straight to the validator (the soak's own bookkeeping).
    pub fn direct_chain(&self) -> Arc<RpcChain> {
        Arc::new(RpcChain::connect(self.direct_rpc.clone()))
    }

    /// A chain straight to the validator that reads only finalized (rooted) state.
    pub fn finalized_chain(&self) -> Arc<RpcChain> {
        let mut config = RpcConfig::new(self.direct_rpc.clone());
        config.commitment = chainference_chain::CommitmentConfig::finalized();
        Arc::new(RpcChain::with_config(config))
    }

    /// Kills the validator (as a crash would) and starts it again from its ledger on the same
    /// ports. Returns how long it was down.
    pub async fn restart_validator(&mut self) -> Result<Duration> {
        let down = Instant::now();
        drop(self.validator.take());
        let mut options = self.options.clone();
        options.args.push("--keep-ledger".into());
        options.ready_file = options.ready_file.with_extension("restart.json");
        // The first run's log stays as it was; the restart's goes beside it.
        options.log = options.log.map(|log| log.with_extension("restart.log"));
        let validator = tokio::task::spawn_blocking(move || Localnet::start(options))
            .await?
            .context("restarting the validator from its ledger")?;
        if validator.ready.rpc_url != self.direct_rpc {
            bail!("the validator came back at {} instead of {}", validator.ready.rpc_url, self.direct_rpc);
        }
        self.validator = Some(validator);
        Ok(down.elapsed())
    }

    /// Initializes the protocol config with the defaults (as `chainference localnet` does).
    pub async fn ensure_config(&self) -> Result<()> {
        let chain = self.direct_chain();
        let program = Program::default();
        if chain.account(&chainference_chain::address(&program.config)).await?.is_some() {
            return Ok(());
        }
        let admin = read_keypair(&self.admin)?;
        chain.airdrop(&admin.pubkey(), 1_000_000_000).await?;
        let init = chainference_core::builders::init_config(&program, &admin.pubkey().to_bytes(), Default::default());
        chain.send(&[chainference_chain::instruction(init)], &[&admin]).await?;
        Ok(())
    }
}

/// A port whose successor is free too (the validator's websocket listens on RPC port + 1).
fn free_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        let Some(next) = port.checked_add(1) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two consecutive free ports found")
}

fn socket_of(url: &str) -> Result<std::net::SocketAddr> {
    let host = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    let host = host.split('/').next().unwrap_or(host);
    host.parse().with_context(|| format!("{url}: not host:port"))
}

/// A keypair in the Solana CLI's file format (a JSON array of 64 numbers).
pub fn write_keypair(keypair: &Keypair, path: &Path) -> Result<()> {
    let bytes = keypair.to_bytes();
    let text = serde_json::to_string(&bytes.to_vec())?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads a keypair file in the Solana CLI's format.
pub fn read_keypair(path: &Path) -> Result<Keypair> {
    let bytes: Vec<u8> = serde_json::from_str(&fs::read_to_string(path)?)?;
    Keypair::try_from(bytes.as_slice()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Funds `to` from the faucet and waits until the lamports show.
pub async fn fund(chain: &RpcChain, to: &Address, lamports: u64) -> Result<()> {
    let before = chain.balance(to).await?;
    chain.airdrop(to, lamports).await?;
    let waited = Instant::now();
    while chain.balance(to).await? < before.saturating_add(lamports) {
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("the airdrop to {to} did not land");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// What a `chainference ... --json` process printed, one event a line.
#[derive(Clone, Debug, Default)]
pub struct EventCounts {
    /// `Completed` events.
    pub completed: u64,
    /// `Released` events.
    pub released: u64,
    /// `LostRace` events.
    pub lost_races: u64,
    /// `Declined` events.
    pub declined: u64,
    /// `Failed` events.
    pub failed: u64,
    /// Requests locked and not yet completed, released or failed in the current process.
    pub in_flight: Vec<String>,
}

/// A `chainference server run` process, restartable; its events go to `<dir>/server-N.log`.
pub struct ServerProcess {
    /// Its wallet (the server's authority).
    pub authority: Address,
    /// Price per million tokens.
    pub price: u64,
    keypair: PathBuf,
    log: PathBuf,
    cli: PathBuf,
    rpc: String,
    ws: String,
    child: Option<Child>,
    /// How many processes it took (1 + restarts).
    pub lifetimes: u32,
    /// Byte offset in the log where the current process's output starts.
    current_from: u64,
}

impl ServerProcess {
    /// Writes the wallet; does not start the process.
    pub fn new(cli: &Path, dir: &Path, index: usize, price: u64, cluster: &Cluster) -> Result<Self> {
        let wallet = Keypair::new();
        let keypair = dir.join(format!("server-{index}.json"));
        write_keypair(&wallet, &keypair)?;
        Ok(ServerProcess {
            authority: wallet.pubkey(),
            price,
            keypair,
            log: dir.join(format!("server-{index}.log")),
            cli: cli.to_path_buf(),
            rpc: cluster.rpc_url(),
            ws: cluster.ws_url(),
            child: None,
            lifetimes: 0,
            current_from: 0,
        })
    }

    /// Starts (or restarts) the process.
    pub fn start(&mut self) -> Result<()> {
        self.current_from = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let out = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let err = OpenOptions::new().create(true).append(true).open(self.log.with_extension("err"))?;
        let child = Command::new(&self.cli)
            .args(["--rpc", &self.rpc, "--ws", &self.ws, "--json", "--keypair"])
            .arg(&self.keypair)
            .args(["server", "run", "--price", &self.price.to_string(), "--flush-ms", "300"])
            // Several servers share this machine's cores: one inference thread each.
            .env("RAYON_NUM_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.cli.display()))?;
        self.child = Some(child);
        self.lifetimes = self.lifetimes.saturating_add(1);
        Ok(())
    }

    /// SIGKILL: the process dies wherever it is.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGINT (Ctrl-C): the CLI stops locking, finishes or releases what is in flight and
    /// exits. Waits up to `limit` for it.
    pub async fn shut_down(&mut self, limit: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        signal(&child, "-INT")?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("server {} exited with {status} after Ctrl-C", self.authority);
                }
                Ok(())
            }
            Err(_) => {
                child.kill().await?;
                bail!("server {} did not stop within {:.0} s of Ctrl-C", self.authority, limit.as_secs_f64())
            }
        }
    }

    /// SIGSTOP / SIGCONT: the process freezes (a hung machine) or goes on.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match &self.child {
            Some(child) => signal(child, if frozen { "-STOP" } else { "-CONT" }),
            None => Ok(()),
        }
    }

    /// Whether the process has exited on its own.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// What every process of this server printed so far, and what the current one holds.
    pub fn events(&self) -> EventCounts {
        let text = fs::read(&self.log).unwrap_or_default();
        let mut counts = EventCounts::default();
        let mut offset = 0u64;
        for line in text.split(|b| *b == b'\n') {
            let current = offset >= self.current_from;
            offset = offset.saturating_add(line.len() as u64).saturating_add(1);
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
            let Some(event) = value.get("event").and_then(|e| e.as_str()) else { continue };
            let request = event.split("request: ").nth(1).and_then(|r| r.split([',', ' ']).next()).map(str::to_string);
            let mut finished = |counter: &mut u64| {
                *counter = counter.saturating_add(1);
                if let (true, Some(request)) = (current, &request) {
                    counts.in_flight.retain(|r| r != request);
                }
            };
            if event.starts_with("Completed") {
                finished(&mut counts.completed);
            } else if event.starts_with("Released") {
                finished(&mut counts.released);
            } else if event.starts_with("Failed") {
                finished(&mut counts.failed);
            } else if event.starts_with("LostRace") {
                counts.lost_races = counts.lost_races.saturating_add(1);
            } else if event.starts_with("Declined") {
                counts.declined = counts.declined.saturating_add(1);
            } else if event.starts_with("Locked")
                && current
                && let Some(request) = request
            {
                counts.in_flight.push(request);
            }
        }
        counts
    }

    /// Waits until the current process holds a request (locked, not finished), up to `limit`.
    pub async fn wait_in_flight(&self, limit: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(request) = self.events().in_flight.first() {
                return Some(request.clone());
            }
            // The whole log is read each time: not too often, on cores the models share.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        None
    }
}

/// Sends a signal by name (`-INT`, `-STOP`, …) to a child process.
pub fn signal(child: &Child, name: &str) -> Result<()> {
    let pid = child.id().context("the process has exited")?;
    let status = std::process::Command::new("kill").arg(name).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill {name} {pid} failed");
    }
    Ok(())
}

/// A `chainference` process that is not a server (the gateway, a client that gets killed).
pub struct CliProcess {
    /// The child.
    pub child: Child,
}

impl CliProcess {
    /// Starts `cli args…` against the proxied cluster with `keypair`, output into `log`.
    pub fn start(cli: &Path, cluster: &Cluster, keypair: &Path, args: &[String], log: &Path) -> Result<Self> {
        let out = File::create(log)?;
        let err = File::create(log.with_extension("err"))?;
        let child = Command::new(cli)
            .args(["--rpc", &cluster.rpc_url(), "--ws", &cluster.ws_url(), "--keypair"])
            .arg(keypair)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", cli.display()))?;
        Ok(CliProcess { child })
    }
}

/// Runs `cli args…` to the end and returns its stdout (an error with stderr if it failed).
pub async fn run_cli(cli: &Path, cluster: &Cluster, keypair: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(cli)
        .args(["--rpc", &cluster.rpc_url(), "--ws", &cluster.ws_url(), "--json", "--keypair"])
        .arg(keypair)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        bail!("chainference {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
