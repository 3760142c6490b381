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

mod args;
mod commands;
mod demo;
mod gateway;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};

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
