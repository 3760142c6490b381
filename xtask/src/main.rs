//! `cargo xtask`: the one entry point for setting up, building, testing and demonstrating
//! Chainference. Every subcommand is idempotent and says what it does.
//!
//! - `setup`: installs the SBF toolchain (Debian's rustc-web with the bpfel std, LLVM 22,
//!   `sbpf-linker`), the wasm toolchain (`wasm-bindgen`), Chromium, Firefox and `geckodriver`,
//!   and the model (a
//!   SHA-256-checked SmolLM2 GGUF), into `$CHAINFERENCE_CACHE` (default `~/.cache/chainference`)
//!   or from apt, skipping what is already there at the right version.
//! - `build-sbf`: builds the on-chain program to `target/deploy/chainference_program.so`.
//! - `test`: fmt check, clippy `-D warnings`, core's `no_std` build for `bpfel-unknown-none`
//!   (checked for 128-bit multiply calls), the SBF build and every workspace test (extra
//!   arguments go to `cargo test`); then the wasm tests in node and headless Chromium and the web
//!   example's offline page in Chromium and Firefox; the RPC and HTTP suites against a real
//!   validator and a real llama.cpp server, and the web dApp in both browsers against that
//!   validator and real server processes; the soak's short form (load and faults on a real
//!   validator, see `soak`); and the demo. The gateway is also driven by the
//!   official OpenAI clients (openai-python and openai-node, pinned, installed into the cache).
//! - `cu`: measures every instruction's compute units and writes `docs/compute-units.md`.
//! - `wasm`: builds the npm package (node and web) into `pkg/`.
//! - `wasm-test`: the wasm stages of `test` alone (node, headless Chromium, the web example,
//!   envelope interop).
//! - `localnet`: a real local validator with the program deployed and a faucet (the
//!   `chainference-localnet` tool, built once into the tools cache; arguments pass through).
//! - `bench-backend`: Candle next to llama.cpp on the same GGUF and thread counts, and the
//!   server runtime through the embedded chain next to the bare backend.
//! - `soak`: many clients and servers on a real validator while faults are injected (a server
//!   killed mid-answer, one shut down, websockets cut, RPC refusing and slow, a client killed
//!   after its open, the validator restarted); checks nothing is stranded and lamports are
//!   conserved, and prints its figures (arguments pass through; see `crates/chainference-soak`).
//! - `demo`: the main job (see README).

mod llama;
mod localnet;
mod openai_clients;
mod sbf;
mod setup;
mod soak;
mod test;
mod wasm;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// What every step returns: an error is a message for the user.
type Result<T = ()> = std::result::Result<T, String>;

/// Dispatches the subcommand.
fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <setup|build-sbf|test|cu|wasm|wasm-test|localnet|bench-backend|soak|demo>");
        return ExitCode::from(2);
    };
    let outcome = match cmd.as_str() {
        "setup" => setup::setup(),
        "build-sbf" => setup::setup().and_then(|()| sbf::build_sbf()).map(|so| println!("built {}", so.display())),
        "test" => {
            let outcome = test::test(rest);
            print_stage_times();
            outcome
        }
        "cu" => setup::setup().and_then(|()| sbf::build_sbf()).and_then(|_| test::compute_units()),
        "wasm" => setup::setup().and_then(|()| wasm::build_wasm_package()),
        "wasm-test" => setup::setup().and_then(|()| wasm::wasm_tests()),
        "demo" => {
            let outcome = test::demo(rest, true);
            print_stage_times();
            outcome
        }
        "localnet" => localnet::localnet(rest),
        "bench-backend" => llama::bench_backend(),
        "soak" => {
            let outcome = soak::soak(rest);
            print_stage_times();
            outcome
        }
        other => Err(format!(
            "unknown subcommand `{other}`; expected setup, build-sbf, test, cu, wasm, wasm-test, localnet, bench-backend, soak or demo"
        )),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {cmd}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    // Read at run time (cargo run sets it): checkouts sharing one target dir share this binary,
    // and a compile-time path would point at whichever checkout built it.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("xtask"));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The host target dir: `$CARGO_TARGET_DIR` (a relative one from the workspace root, as cargo
/// reads it there), else one shared cache outside the clone. Always absolute: tools run from
/// other folders are handed paths inside it.
fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root().join(dir),
        None => chainference_host::cache_dir().join("target"),
    }
}

/// The cargo that runs xtask (`$CARGO`, else `cargo` on the `PATH`), with nothing else set.
fn plain_cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Cargo for the workspace: run in the root, building into [`target_dir`].
fn cargo() -> Command {
    let mut c = plain_cargo();
    c.current_dir(root()).env("CARGO_TARGET_DIR", target_dir());
    c
}

/// Shows `cmd`, runs it with inherited output and fails unless it succeeds.
fn run(cmd: &mut Command) -> Result {
    let shown = format!("{cmd:?}");
    println!("$ {shown}");
    let status = cmd.status().map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed with {status}")) }
}

/// `cmd`'s stdout if it starts and succeeds, quietly.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every stage run so far: name, whether it passed, seconds.
static STAGES: std::sync::Mutex<Vec<(String, bool, f64)>> = std::sync::Mutex::new(Vec::new());

/// Runs one named stage between a start line and an outcome line with its duration, and records
/// it for [`print_stage_times`].
fn stage(name: &str, f: impl FnOnce() -> Result) -> Result {
    println!("==> {name}");
    let start = Instant::now();
    let r = f();
    let seconds = start.elapsed().as_secs_f64();
    println!("==> {name}: {} in {seconds:.1}s", if r.is_ok() { "ok" } else { "FAILED" });
    if let Ok(mut stages) = STAGES.lock() {
        stages.push((name.to_string(), r.is_ok(), seconds));
    }
    r
}

/// A table of every stage's outcome and time, longest first (where a run's time went).
fn print_stage_times() {
    let Ok(mut stages) = STAGES.lock().map(|s| s.clone()) else { return };
    stages.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("\n| stage | outcome | seconds |\n| --- | --- | --- |");
    for (name, ok, seconds) in &stages {
        println!("| {name} | {} | {seconds:.1} |", if *ok { "ok" } else { "FAILED" });
    }
}
