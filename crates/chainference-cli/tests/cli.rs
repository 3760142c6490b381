//! The `chainference` binary run as a user runs it, against a real local validator
//! (`cargo xtask test` starts one and names it in `CHAINFERENCE_RPC_URL`; without it these tests
//! say so and pass, unless `CHAINFERENCE_REQUIRE_RPC=1`). Offline subcommands run everywhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chainference"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chainference-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rpc_url() -> Option<String> {
    match std::env::var("CHAINFERENCE_RPC_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("CHAINFERENCE_REQUIRE_RPC").is_err(),
                "CHAINFERENCE_REQUIRE_RPC is set without CHAINFERENCE_RPC_URL"
            );
            eprintln!("skipped: no validator (CHAINFERENCE_RPC_URL); `cargo xtask test` starts one");
            None
        }
    }
}

fn run(args: &[&str]) -> Output {
    let output = bin().args(args).output().unwrap();
    eprintln!(
        "$ chainference {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(format!("{name}.json"));
    let out = json_of(&run(&["keygen", "--out", path.to_str().unwrap(), "--json"]));
    (path.to_str().unwrap().to_string(), out["address"].as_str().unwrap().to_string())
}

#[test]
fn help_completions_and_keygen_work_offline() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "demo",
        "localnet",
        "server",
        "ask",
        "servers",
        "history",
        "flag",
        "compare",
        "reclaim",
        "close",
        "keygen",
        "gateway",
        "Examples:",
    ] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let completions = run(&["completions", "bash"]);
    assert!(completions.status.success() && String::from_utf8_lossy(&completions.stdout).contains("chainference"));

    let dir = scratch("keygen");
    let (path, address) = keygen(&dir, "id");
    let bytes: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(bytes.len(), 64);
    assert!(address.len() >= 32);
    // An existing wallet is never overwritten by accident.
    let again = run(&["keygen", "--out", &path]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn a_missing_validator_gets_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = run(&["--rpc", &format!("http://127.0.0.1:{port}"), "servers"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error:") && stderr.contains("chainference localnet"), "{stderr}");
}

/// Initializes the protocol config as `chainference localnet` does, when the validator was
/// started by the test harness (`CHAINFERENCE_LOCALNET_ADMIN` names its admin keypair).
fn configure(rpc: &str) {
    use chainference_chain::{Chain, RpcChain, Signer};
    use chainference_core::builders::{self, Program};
    let Ok(admin) = std::env::var("CHAINFERENCE_LOCALNET_ADMIN") else { return };
    let bytes: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    let admin = chainference_chain::Keypair::try_from(bytes.as_slice()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let chain = RpcChain::connect(rpc);
        let program = Program::default();
        if chain.account(&chainference_chain::address(&program.config)).await.unwrap().is_some() {
            return;
        }
        chain.airdrop(&admin.pubkey(), 1_000_000_000).await.unwrap();
        let init = builders::init_config(&program, &admin.pubkey().to_bytes(), Default::default());
        let _ = chain.send(&[chainference_chain::instruction(init)], &[&admin]).await;
    });
}

/// A `chainference server run` process, stopped with Ctrl-C (SIGINT) when dropped.
struct ServerProcess(Child);

impl ServerProcess {
    /// `chainference server run` with `keypair` at `price`, funded from the validator's faucet.
    fn start(rpc: &str, keypair: &str, price: &str) -> Self {
        Self::start_with(rpc, keypair, price, &[])
    }

    /// The same with more `server run` options.
    fn start_with(rpc: &str, keypair: &str, price: &str, options: &[&str]) -> Self {
        let child = bin()
            .args(["--rpc", rpc, "--keypair", keypair, "server", "run", "--price", price, "--airdrop", "10"])
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        ServerProcess(child)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_subcommand_against_a_real_validator() {
    let Some(rpc) = rpc_url() else { return };
    configure(&rpc);
    let dir = scratch("rpc");
    let (server_key, server_address) = keygen(&dir, "server");
    let (second_key, second_address) = keygen(&dir, "second");
    let (client_key, client_address) = keygen(&dir, "client");
    let (picky_key, picky_address) = keygen(&dir, "picky");
    let (broke_key, _) = keygen(&dir, "broke");
    let with = |key: &str, args: &[&str]| {
        let mut all = vec!["--rpc", rpc.as_str(), "--keypair", key];
        all.extend_from_slice(args);
        run(&all)
    };

    // Nobody serves this model: a clear error with a hint. (Other tests' servers may share the
    // validator, so everything below names its servers.)
    let none = with(&client_key, &["ask", "hello", "--airdrop", "1", "--model", "nobody/serves-this:Q8_0"]);
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("hint:") && stderr.contains("server run"), "{stderr}");

    // A server process, as an operator runs it.
    let server = ServerProcess::start(&rpc, &server_key, "2000000");
    let find = |listed: &Value, authority: &str| {
        listed["eligible"].as_array().and_then(|e| e.iter().find(|s| s["authority"] == authority).cloned())
    };
    // Lists the servers until `authority` is among the eligible ones.
    let wait_listed = |authority: &str| {
        let started = Instant::now();
        loop {
            let listed = json_of(&with(&client_key, &["servers", "--json"]));
            if let Some(server) = find(&listed, authority) {
                return server;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{authority} never registered: {listed}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let ours = wait_listed(&server_address);
    assert_eq!(ours["price_per_mtok"], 2_000_000);

    // A server that does not serve this client declines on chain: `ask` says why within
    // seconds, and the request is cancelled and closed (stake and rent back).
    let picky = ServerProcess::start_with(&rpc, &picky_key, "2000000", &["--deny-clients", &client_address]);
    wait_listed(&picky_address);
    let started = Instant::now();
    let refused = with(&client_key, &["ask", "What is the capital of France?", "--servers", &picky_address]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}: {stderr}");
    assert!(
        stderr.contains("declined") && stderr.contains("client not served") && stderr.contains("hint:"),
        "{stderr}"
    );
    drop(picky);

    // Ask (streams; --json prints the settlement), then history, flag, close.
    let answer = json_of(&with(
        &client_key,
        &[
            "--json",
            "ask",
            "What is the capital of France?",
            "--system",
            "You are a helpful assistant.",
            "--max-tokens",
            "256",
            "--servers",
            &server_address,
        ],
    ));
    assert_eq!(answer["answer"], "The capital of France is Paris.");
    assert_eq!(answer["server"], server_address.as_str());
    assert_eq!(answer["tokens"], 34);
    let request = answer["request"].as_str().unwrap().to_string();

    let history = json_of(&with(&client_key, &["--json", "history"]));
    let entry = history.as_array().unwrap().iter().find(|e| e["request"] == request.as_str()).expect("in history");
    assert_eq!(entry["prompt"], "What is the capital of France?");
    assert_eq!(entry["answer"], "The capital of France is Paris.");

    // Reclaim is refused: it was completed, not stalled.
    let reclaim = with(&client_key, &["reclaim", &request]);
    assert!(!reclaim.status.success());

    let flagged = json_of(&with(&client_key, &["--json", "flag", &request]));
    assert_eq!(flagged["flagged"], request.as_str());
    let closed = json_of(&with(&client_key, &["--json", "close", &request]));
    assert!(closed["returned"].as_u64().unwrap() > 0);
    // Closed, and still in the history: recovered from transaction history, decrypted.
    // (History is read at the `confirmed` commitment, which a loaded validator reaches late.)
    let started = Instant::now();
    let entry = loop {
        let history = json_of(&with(&client_key, &["--json", "history", "--since", "1h"]));
        if let Some(entry) = history.as_array().unwrap().iter().find(|e| e["request"] == request.as_str()) {
            break entry.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{request} never came back in the history: {history}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(entry["closed"], true, "{entry}");
    assert_eq!(entry["status"], "Completed");
    assert_eq!(entry["prompt"], "What is the capital of France?");
    assert_eq!(entry["answer"], "The capital of France is Paris.");
    assert_eq!(entry["tokens"], 34);
    assert_eq!(entry["cost"], answer["cost"]);

    // A second server, the same prompt to both (unlinkable), and a comparison.
    let second = ServerProcess::start(&rpc, &second_key, "3000000");
    wait_listed(&second_address);
    let servers = format!("{server_address},{second_address}");
    let pair = json_of(&with(
        &client_key,
        &[
            "--json",
            "ask",
            "What is the capital of France?",
            "--system",
            "You are a helpful assistant.",
            "--pair",
            "--servers",
            &servers,
        ],
    ));
    let (a, b) = (pair["pair"][0]["request"].as_str().unwrap(), pair["pair"][1]["request"].as_str().unwrap());
    assert_eq!(pair["pair"][0]["server"], server_address.as_str());
    assert_eq!(pair["pair"][1]["server"], second_address.as_str());
    assert_eq!(pair["pair"][0]["answer"], pair["pair"][1]["answer"]);
    let compared = json_of(&with(&client_key, &["--json", "compare", a, b, "--preferred", b]));
    assert_eq!(compared["preferred"], b);
    let servers = json_of(&with(&client_key, &["servers", "--json"]));
    let preferred =
        servers["eligible"].as_array().unwrap().iter().find(|s| s["authority"] == second_address.as_str()).unwrap();
    assert_eq!(preferred["preference_bps"], 10_000, "{servers}");

    // The OpenAI gateway on the cluster: answers from the servers, usage split by the local
    // model's tokenizer as in the demo.
    let mut gateway = bin()
        .args(["--rpc", &rpc, "--keypair", &client_key, "gateway", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(gateway.stdout.take().unwrap()), &mut ready).unwrap();
    let url = serde_json::from_str::<Value>(&ready).unwrap()["listening"].as_str().unwrap().to_string();
    let body = serde_json::json!({
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1",
        "messages": [
            { "role": "system", "content": "You are a helpful assistant." },
            { "role": "user", "content": "What is the capital of France?" },
        ],
        "temperature": 0,
    });
    let reply: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let response = reqwest::Client::new().post(format!("{url}/chat/completions")).json(&body).send().await.unwrap();
        response.json().await.unwrap()
    });
    let _ = Command::new("kill").args(["-INT", &gateway.id().to_string()]).status();
    let _ = gateway.wait();
    assert_eq!(reply["choices"][0]["message"]["content"], "The capital of France is Paris.", "{reply}");
    assert_eq!(reply["usage"]["prompt_tokens"], 27, "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 7, "{reply}");
    drop(second);

    // A wallet with nothing in it is told how much is missing and what to do.
    let broke = with(&broke_key, &["ask", "hello"]);
    assert!(!broke.status.success());
    let stderr = String::from_utf8_lossy(&broke.stderr);
    assert!(stderr.contains("hint: fund the wallet"), "{stderr}");

    drop(server);
}
