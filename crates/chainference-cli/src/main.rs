//! `chainference`: the end-to-end demo, the client and server command lines, and an
//! OpenAI-compatible gateway, over the Chainference SDKs.
//!
//! ```text
//! chainference demo                                # everything in one process, embedded chain, real model
//! chainference localnet                            # a real local validator with the program and a faucet
//! chainference keygen                              # a wallet at ~/.config/chainference/id.json
//! chainference server run --price 2000000          # sell this machine's time (Candle, the setup model)
//! chainference servers                             # who offers the model, at what price and reputation
//! chainference ask "What is the capital of France?" --max-cost 100000
//! chainference history --json
//! chainference gateway --demo --listen 127.0.0.1:8080
//! ```

mod commands;
mod demo;
mod gateway;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    Ask(commands::AskArgs),
    /// Your requests on chain, decrypted.
    History,
    /// Flags a completed answer as bad.
    Flag {
        /// The request address.
        request: String,
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
    Gateway(gateway::GatewayArgs),
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
    Run(commands::ServerRunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "chainference", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = commands::hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
