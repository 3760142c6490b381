//! The fault script: each fault once, in order, bounded, while the clients keep asking. Where a
//! fault needs a request in flight, the script sends one itself (a probe) so it never depends on
//! the load's timing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainference_chain::{Address, Chain, RpcChain, Signer};
use chainference_client::Client;
use chainference_client::core::state::RequestStatus;

use crate::load::{Board, Choice, Job, run_job};
use crate::network::{CliProcess, Cluster, ServerProcess, run_cli};
use crate::proxy::Mode;

/// One injected fault.
#[derive(Clone, Debug)]
pub struct Fault {
    /// What.
    pub name: &'static str,
    /// When, from the start of the load.
    pub at: Duration,
    /// How long it lasted or what it hit.
    pub detail: String,
}

/// What the script needs.
pub struct Script<'a> {
    /// The cluster (its proxies; the validator for the restart).
    pub cluster: &'a mut Cluster,
    /// The servers.
    pub servers: &'a mut [ServerProcess],
    /// The client the probes come from.
    pub probe: Client<Arc<RpcChain>>,
    /// Where records go.
    pub board: Arc<Board>,
    /// The `chainference` binary.
    pub cli: &'a Path,
    /// The wallet file of the client process that gets killed.
    pub killed_client: &'a Path,
    /// The soak's working directory.
    pub dir: &'a Path,
    /// When the load started.
    pub start: Instant,
    /// Requests' timeout, seconds.
    pub timeout_secs: u32,
    /// Whether to restart the validator.
    pub restart_validator: bool,
}

impl Script<'_> {
    fn probe(&self, server: Option<Address>) -> tokio::task::JoinHandle<()> {
        let (client, board, timeout) = (self.probe.clone(), Arc::clone(&self.board), self.timeout_secs);
        let choice = server.map_or(Choice::Best(1), Choice::Explicit);
        let job = Job { prompt: 2, choice, flag: false };
        tokio::spawn(async move { run_job("fault probe", &client, &job, &board, timeout).await })
    }

    fn note(&self, faults: &mut Vec<Fault>, name: &'static str, at: Instant, detail: String) {
        let fault = Fault { name, at: at.duration_since(self.start), detail };
        eprintln!("soak: fault at {:>6.1} s: {name} ({})", fault.at.as_secs_f64(), fault.detail);
        faults.push(fault);
    }

    /// Runs every fault; returns them with their times.
    pub async fn run(mut self) -> Result<Vec<Fault>> {
        let mut faults = Vec::new();
        let mut probes = Vec::new();
        let pause = Duration::from_secs(3);

        // 1. A server killed mid-answer, then restarted.
        let target = self.servers.first().map(|s| s.authority).context("no server")?;
        probes.push(self.probe(Some(target)));
        let server = self.servers.first_mut().context("no server")?;
        let holding = server
            .wait_in_flight(Duration::from_secs(90))
            .await
            .context("server 0 locked nothing to be killed in the middle of")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at = Instant::now();
        server.kill().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        server.start()?;
        let detail = format!("SIGKILL {target} holding {holding}; restarted 2 s later");
        self.note(&mut faults, "server killed mid-answer", at, detail);
        tokio::time::sleep(pause).await;

        // 2. Websockets cut for clients, servers and gateway.
        probes.push(self.probe(None));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = Instant::now();
        self.cluster.ws_proxy.for_a_while(Mode::Refuse, Duration::from_secs(5)).await;
        self.note(&mut faults, "websocket cut", at, "every websocket closed, new ones refused for 5 s".into());
        tokio::time::sleep(pause).await;

        // 3. RPC refusing.
        probes.push(self.probe(None));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = Instant::now();
        self.cluster.rpc_proxy.for_a_while(Mode::Refuse, Duration::from_secs(4)).await;
        self.note(&mut faults, "rpc refusing", at, "every RPC connection closed, new ones refused for 4 s".into());
        tokio::time::sleep(pause).await;

        // 4. RPC slow.
        probes.push(self.probe(None));
        let at = Instant::now();
        self.cluster.rpc_proxy.for_a_while(Mode::Slow(Duration::from_millis(250)), Duration::from_secs(6)).await;
        self.note(&mut faults, "rpc slow", at, "250 ms added to every RPC read and write for 6 s".into());
        tokio::time::sleep(pause).await;

        // 5. A server shut down gracefully with a request in flight, then started again.
        let target = self.servers.get(1).or(self.servers.first()).map(|s| s.authority).context("no server")?;
        probes.push(self.probe(Some(target)));
        let index = usize::from(self.servers.len() > 1);
        let server = self.servers.get_mut(index).context("no server")?;
        let holding =
            server.wait_in_flight(Duration::from_secs(90)).await.context("the server to shut down locked nothing")?;
        let at = Instant::now();
        server.shut_down(Duration::from_secs(60)).await?;
        let stopped = at.elapsed();
        server.start()?;
        let detail = format!(
            "Ctrl-C to {target} holding {holding}; it exited after {:.1} s and was started again",
            stopped.as_secs_f64()
        );
        self.note(&mut faults, "server shut down gracefully", at, detail);
        tokio::time::sleep(pause).await;

        // 6. A client process killed after its open, before the answer; its request is found,
        // reclaimed and closed later by the same wallet through the CLI. The one server it
        // allows is frozen meanwhile (SIGSTOP), so nobody answers before the deadline.
        let frozen = self.servers.last().context("no server")?;
        let frozen_authority = frozen.authority;
        frozen.freeze(true)?;
        let at = Instant::now();
        let detail = self.kill_a_client(frozen_authority).await;
        if let Some(frozen) = self.servers.last() {
            frozen.freeze(false)?;
        }
        self.note(&mut faults, "client process killed after open", at, detail?);
        tokio::time::sleep(pause).await;

        // 7. The validator killed and restarted from its ledger.
        if self.restart_validator {
            probes.push(self.probe(None));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let at = Instant::now();
            // Agave's RPC answers as soon as the restarted node runs, from older banks while it
            // replays its ledger (wallets at 0, servers unregistered): what a load balancer's
            // health check keeps from clients. The proxy plays that check: it refuses until the
            // node is back at the slot it was killed at, with an idle wallet's balance as before.
            let direct = self.cluster.direct_chain();
            let marker = crate::network::read_keypair(self.killed_client)?.pubkey();
            self.cluster.rpc_proxy.set(Mode::Refuse);
            self.cluster.ws_proxy.set(Mode::Refuse);
            // What was sent before the refusal lands first; then the node's state is read.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (slot_before, balance_before) = (direct.clock().await?.slot, direct.balance(&marker).await?);
            // Observed here (agave 4.2.2, one node, SIGKILL, --keep-ledger): transactions
            // confirmed in the last slots before the kill were gone after the restart (listed
            // by the node's history, missing from its blocks), and with them answers, closes
            // and payments clients had been told landed; an earlier default run stranded two
            // requests that way. No real cluster forgets a confirmed slot (its supermajority
            // voted on it), so this fault is a planned kill: clients are held off (as a load
            // balancer drains a node) until the node has rooted the slot it is judged against.
            // What it tests is the outage and the restart, not a rollback.
            let rooted = self.cluster.finalized_chain();
            let rooted_at = loop {
                let slot = rooted.clock().await.map(|c| c.slot).unwrap_or(0);
                if slot >= slot_before && rooted.balance(&marker).await.ok() == Some(balance_before) {
                    break at.elapsed();
                }
                // Bounded well inside what clients ride out (120 s of a failing chain).
                if at.elapsed() > Duration::from_secs(75) {
                    let now = direct.clock().await.map(|c| c.slot).unwrap_or(0);
                    bail!(
                        "the validator did not root slot {slot_before} within 75 s (rooted: {slot}, tip: {now}; \
                         {:.2} s per slot since the refusal)",
                        at.elapsed().as_secs_f64() / now.saturating_sub(slot_before).max(1) as f64
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            let down = self.cluster.restart_validator().await?;
            let direct = self.cluster.direct_chain();
            let caught_up = loop {
                let slot = direct.clock().await.map(|c| c.slot).unwrap_or(0);
                let balance = direct.balance(&marker).await.ok();
                if slot >= slot_before && balance == Some(balance_before) {
                    break at.elapsed();
                }
                if at.elapsed() > Duration::from_secs(300) {
                    bail!("the restarted validator did not replay back to slot {slot_before} within 300 s");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            self.cluster.rpc_proxy.set(Mode::Pass);
            self.cluster.ws_proxy.set(Mode::Pass);
            self.note(
                &mut faults,
                "validator restarted from its ledger",
                at,
                format!(
                    "killed at slot {slot_before} once it was rooted ({:.1} s after refusing clients), \
                     restarted with --keep-ledger on the same ports ({:.1} s), \
                     served again once replayed to that slot ({:.1} s after the refusal)",
                    rooted_at.as_secs_f64(),
                    down.as_secs_f64(),
                    caught_up.as_secs_f64()
                ),
            );
        }
        for probe in probes {
            probe.await?;
        }
        Ok(faults)
    }

    async fn kill_a_client(&mut self, server: Address) -> Result<String> {
        let wallet = crate::network::read_keypair(self.killed_client)?;
        let watcher = Client::new(self.cluster.direct_chain(), wallet);
        let args: Vec<String> = [
            "ask",
            "--servers",
            &server.to_string(),
            "--timeout",
            "12",
            "--max-tokens",
            "200",
            "What is the capital of Italy?",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut process =
            CliProcess::start(self.cli, self.cluster, self.killed_client, &args, &self.dir.join("killed-client.log"))?;
        let query = || chainference_client::HistoryQuery { since: None, include_closed: false, max_transactions: 0 };
        let started = Instant::now();
        let request = loop {
            if let Ok(entries) = watcher.history_with(query()).await
                && let Some(entry) = entries.into_iter().find(|e| e.state.status == RequestStatus::Open)
            {
                break entry;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the client process opened no request within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        process.child.kill().await?;
        let killed_after = started.elapsed();
        // Past the deadline in chain time, then the same wallet, from the CLI, finds it again.
        loop {
            let now = watcher.chain().clock().await.map(|c| c.unix_timestamp).unwrap_or(0);
            if now > request.state.deadline {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the chain clock did not pass {}'s deadline within 120 s", request.address);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let address = request.address.to_string();
        let history = run_cli(self.cli, self.cluster, self.killed_client, &["history"]).await?;
        let listed: serde_json::Value = serde_json::from_str(&history).context("history --json")?;
        let entry = listed
            .as_array()
            .and_then(|list| list.iter().find(|e| e["request"] == address.as_str()))
            .with_context(|| format!("`chainference history` does not list {address}"))?;
        let status = entry["status"].as_str().unwrap_or_default().to_string();
        run_cli(self.cli, self.cluster, self.killed_client, &["reclaim", &address]).await?;
        run_cli(self.cli, self.cluster, self.killed_client, &["close", &address]).await?;
        if watcher.chain().account(&request.address).await?.is_some() {
            bail!("{address} still exists after `chainference close`");
        }
        Ok(format!(
            "SIGKILL the `chainference ask` process {:.1} s after start, once {address} was open; after its \
             deadline `history` listed it ({status}), `reclaim` and `close` settled it",
            killed_after.as_secs_f64()
        ))
    }
}
