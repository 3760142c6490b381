//! The command line: every subcommand and its arguments (clap), in one place the command
//! modules read from.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Decentralized AI inference on Solana.
#[derive(Parser, Debug)]
#[command(name = "chainference", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// JSON-RPC URL of the cluster (default: the local validator of `chainference localnet`).
    #[arg(long, global = true, env = "CHAINFERENCE_RPC", default_value = "http://127.0.0.1:8899")]
    pub rpc: String,
    /// Websocket URL (default: derived from --rpc, port + 1).
    #[arg(long, global = true, env = "CHAINFERENCE_WS")]
    pub ws: Option<String>,
    /// Wallet keypair file (Solana CLI format).
    #[arg(long, global = true, env = "CHAINFERENCE_KEYPAIR")]
    pub keypair: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  chainference demo
  chainference localnet &
  chainference keygen && chainference ask \"What is the capital of France?\" --airdrop 1
  chainference server run --price 2000000 --airdrop 10
  chainference servers --json
  chainference gateway --demo --listen 127.0.0.1:8080";

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the whole network in one process on the embedded chain with the real model.
    Demo,
    /// Starts a real local validator with the program deployed and a funded faucet.
    Localnet {
        /// Arguments passed to the validator tool (e.g. --rpc-port 8899 --ledger DIR).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Writes a new wallet keypair.
    Keygen {
        /// Where (default: ~/.config/chainference/id.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Server commands.
    Server {
        /// The server subcommand.
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Lists the servers offering a model, with reputation, and why others are excluded.
    Servers {
        /// Model id.
        #[arg(long, default_value = chainference_server::candle::DEFAULT_MODEL_ID)]
        model: String,
        /// Only servers at or below this price (lamports per million tokens).
        #[arg(long)]
        max_price: Option<u64>,
    },
    /// Sends a sealed prompt and streams the answer.
    Ask(AskArgs),
    /// Your requests, decrypted: those on chain and closed ones from transaction history.
    History(HistoryArgs),
    /// Flags a completed answer as bad: a mark on the server's reputation, or with `--refund`
    /// a dispute that takes part of the server's held share back instead (one or the other, once).
    Flag {
        /// The request address.
        request: String,
        /// Dispute the bill: money back, no mark on the server.
        #[arg(long)]
        refund: bool,
    },
    /// Compares two completed answers to the same prompt.
    Compare {
        /// First request.
        a: String,
        /// Second request.
        b: String,
        /// The better one (a or b's address).
        #[arg(long)]
        preferred: String,
    },
    /// Takes the stake back from a request whose deadline passed.
    Reclaim {
        /// The request address.
        request: String,
    },
    /// Closes a settled request and returns its rent.
    Close {
        /// The request address.
        request: String,
    },
    /// An OpenAI-compatible HTTP API over the network.
    Gateway(GatewayArgs),
    /// Prints shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `chainference server …`.
#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Serves the model until Ctrl-C, then finishes or releases what is in flight.
    Run(ServerRunArgs),
}

/// `chainference history`.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Only requests created since then: unix seconds, or an age such as `90m`, `12h`, `7d`.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
    /// How many of the wallet's transactions to read back for closed requests (0: none).
    #[arg(long, default_value_t = 500)]
    pub max_transactions: usize,
}

/// A `--since` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// A unix time, seconds.
    At(i64),
    /// An age, seconds before now.
    Ago(i64),
}

impl Since {
    /// The unix time it names, given the time now.
    pub fn unix(self, now: i64) -> i64 {
        match self {
            Since::At(at) => at,
            Since::Ago(age) => now.saturating_sub(age),
        }
    }
}

fn parse_since(text: &str) -> Result<Since, String> {
    let bad = || format!("{text:?}: expected unix seconds or an age like 90m, 12h, 7d");
    if let Ok(at) = text.parse::<i64>() {
        return Ok(Since::At(at));
    }
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = (text.get(..split).ok_or_else(bad)?, text.get(split..).ok_or_else(bad)?);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number.checked_mul(unit).filter(|age| *age >= 0).map(Since::Ago).ok_or_else(bad)
}

/// `chainference ask`.
#[derive(clap::Args, Debug)]
pub struct AskArgs {
    /// The prompt (read from stdin when absent or `-`).
    pub prompt: Option<String>,
    /// Model id.
    #[arg(long, default_value = chainference_server::candle::DEFAULT_MODEL_ID)]
    pub model: String,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most lamports to pay (the stake; default: max tokens at the dearest allowed price).
    #[arg(long)]
    pub max_cost: Option<u64>,
    /// Billable token budget (prompt + completion).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Servers to allow, by authority address (default: the most reliable eligible one).
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Send the same prompt to the two --servers as two unlinkable requests, for
    /// `chainference compare` (neither server can tell).
    #[arg(long)]
    pub pair: bool,
    /// How many servers to allow when choosing automatically.
    #[arg(long, default_value_t = 1)]
    pub best: usize,
    /// Choose the cheapest rather than the most reliable.
    #[arg(long)]
    pub cheapest: bool,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seconds before the request may be reclaimed (0 = the config's default).
    #[arg(long, default_value_t = 0)]
    pub timeout: u32,
    /// A text that ends the answer before it (repeat for up to four).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Request this many SOL from the cluster's faucet first (local validators and devnet).
    #[arg(long)]
    pub airdrop: Option<f64>,
}

/// `chainference server run`.
#[derive(clap::Args, Debug)]
pub struct ServerRunArgs {
    /// The GGUF to serve (default: the one `cargo xtask setup` installed).
    #[arg(long)]
    pub model_file: Option<PathBuf>,
    /// Price, lamports per million tokens.
    #[arg(long, default_value_t = 1_000_000)]
    pub price: u64,
    /// Milliseconds between flushes of generated text to the chain.
    #[arg(long, default_value_t = 400)]
    pub flush_ms: u64,
    /// Requests served at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// An endpoint URL to publish.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// Largest sealed prompt to accept, in bytes (default: the protocol's limit).
    #[arg(long)]
    pub max_prompt_bytes: Option<usize>,
    /// Least answer tokens a request's budget and stake must leave beyond its prompt.
    #[arg(long)]
    pub min_answer_tokens: Option<u32>,
    /// Least seconds before a request's deadline to take it.
    #[arg(long)]
    pub min_time_left: Option<u64>,
    /// Serve only these clients, by wallet address.
    #[arg(long, value_delimiter = ',')]
    pub only_clients: Vec<String>,
    /// Never serve these clients, by wallet address.
    #[arg(long, value_delimiter = ',')]
    pub deny_clients: Vec<String>,
    /// Pass on requests silently instead of declining them on chain with a reason (a decline
    /// costs one transaction fee, and lets a client whose every server declined stop waiting).
    #[arg(long)]
    pub no_decline: bool,
    /// Request this many SOL from the cluster's faucet first (local validators and devnet).
    #[arg(long)]
    pub airdrop: Option<f64>,
}

/// `chainference gateway`.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Run on the embedded chain with two local servers and the real model (no cluster).
    #[arg(long)]
    pub demo: bool,
    /// Require `Authorization: Bearer <key>`.
    #[arg(long, env = "CHAINFERENCE_GATEWAY_KEY")]
    pub api_key: Option<String>,
    /// Tokens allowed for the prompt on top of `max_tokens` in a request's billable budget.
    #[arg(long, default_value_t = chainference_gateway::DEFAULT_PROMPT_ALLOWANCE)]
    pub prompt_allowance: u32,
    /// Completion tokens when a request names none.
    #[arg(long, default_value_t = chainference_gateway::DEFAULT_MAX_TOKENS)]
    pub default_max_tokens: u32,
    /// A local GGUF whose tokenizer splits `usage` into prompt and completion tokens for
    /// requests of its model (default: the model `cargo xtask setup` installed, when present;
    /// without one, `prompt_tokens` reads 0 and the billed total is all completion).
    #[arg(long)]
    pub tokenizer_model: Option<PathBuf>,
    /// Each request's on-chain timeout in seconds (0: the deployment's default): past it the
    /// caller gets a 504 saying whether any server took the request, and the stake is reclaimed.
    #[arg(long, default_value_t = chainference_gateway::DEFAULT_REQUEST_TIMEOUT_SECS)]
    pub request_timeout: u32,
}

impl std::fmt::Debug for GatewayArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayArgs")
            .field("listen", &self.listen)
            .field("demo", &self.demo)
            // A secret: say whether there is one, never what it is.
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("prompt_allowance", &self.prompt_allowance)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("request_timeout", &self.request_timeout)
            .field("tokenizer_model", &self.tokenizer_model)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Since, parse_since};

    #[test]
    fn since_takes_unix_seconds_or_an_age() {
        assert_eq!(parse_since("1700000000"), Ok(Since::At(1_700_000_000)));
        assert_eq!(parse_since("90m"), Ok(Since::Ago(5_400)));
        assert_eq!(parse_since("12h").map(|s| s.unix(100_000)), Ok(100_000 - 43_200));
        assert_eq!(parse_since("7d"), Ok(Since::Ago(604_800)));
        for bad in ["", "h", "3w", "-2h", "1.5h", "99999999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
