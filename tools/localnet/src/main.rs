//! `chainference-localnet`: a real local Solana cluster for Chainference.
//!
//! Starts the agave test validator (JSON-RPC and websocket pubsub) with the Chainference program
//! deployed as an upgradeable program, and a faucet funded by the genesis mint. The program's
//! upgrade authority is the admin keypair written to (or read from) `<ledger>/admin.json`, so
//! whoever holds that file can send `InitConfig`.
//!
//! When the cluster is ready it prints one JSON line on stdout (and writes it to `--ready-file`):
//! `{"rpc_url", "ws_url", "faucet", "program_id", "admin_keypair", "ledger"}`. It then runs until
//! it is killed.
//!
//! Built once by `cargo xtask localnet` into the tools cache, in its own workspace, because the
//! validator (RocksDB and all) takes about 20 minutes to build on 2 cores.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use solana_faucet::faucet::{Faucet, run_faucet};
use solana_keypair::Keypair;
use solana_net_utils::SocketAddrSpace;
use solana_pubkey::Pubkey;
use solana_rpc::rpc::JsonRpcConfig;
use solana_signer::Signer;
use solana_test_validator::{TestValidatorGenesis, UpgradeableProgramInfo};

const USAGE: &str = "\
usage: chainference-localnet --program <chainference_program.so> [options]

  --program PATH       the program's SBF .so (required)
  --program-id ID      the address to deploy it at (default: Chainference's PROGRAM_ID)
  --ledger DIR         ledger directory (default: ./.localnet); wiped unless --keep-ledger
  --keep-ledger        resume an existing ledger instead of starting from genesis
  --rpc-port PORT      JSON-RPC port, websocket on PORT+1 (default 8899; 0 picks a free one)
  --faucet-port PORT   faucet port (default 9900; 0 picks a free one)
  --ready-file PATH    also write the ready line there, once the first slot is processed
  --quiet              no validator logs on stderr
";

/// Chainference's program id: sha256(\"chainference program v1\"), as `chainference_core::pda`.
const DEFAULT_PROGRAM_ID: &str = "2f3KVk2a7EYVcZGZFS16NE717EqpTpyRH8WETBirdNdt";

struct Options {
    program: PathBuf,
    program_id: Pubkey,
    ledger: PathBuf,
    keep_ledger: bool,
    rpc_port: u16,
    faucet_port: u16,
    ready_file: Option<PathBuf>,
    quiet: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        program: PathBuf::new(),
        program_id: Pubkey::from_str(DEFAULT_PROGRAM_ID).map_err(|err| err.to_string())?,
        ledger: PathBuf::from(".localnet"),
        keep_ledger: false,
        rpc_port: 8899,
        faucet_port: 9900,
        ready_file: None,
        quiet: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--program" => options.program = PathBuf::from(value("--program")?),
            "--program-id" => {
                let id = value("--program-id")?;
                options.program_id = Pubkey::from_str(&id).map_err(|err| format!("--program-id {id}: {err}"))?;
            }
            "--ledger" => options.ledger = PathBuf::from(value("--ledger")?),
            "--keep-ledger" => options.keep_ledger = true,
            "--rpc-port" => options.rpc_port = parse_port(&value("--rpc-port")?)?,
            "--faucet-port" => options.faucet_port = parse_port(&value("--faucet-port")?)?,
            "--ready-file" => options.ready_file = Some(PathBuf::from(value("--ready-file")?)),
            "--quiet" => options.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.program.as_os_str().is_empty() {
        return Err("--program is required".into());
    }
    if !options.program.is_file() {
        return Err(format!("--program {}: no such file (run `cargo xtask build-sbf`)", options.program.display()));
    }
    Ok(options)
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse().map_err(|_| format!("not a port: {text}"))
}

/// A port that was free a moment ago (0 asks the OS), or the one asked for.
fn pick_port(port: u16) -> Result<u16, String> {
    if port != 0 {
        return Ok(port);
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|err| format!("no free port: {err}"))?;
    listener.local_addr().map(|addr| addr.port()).map_err(|err| err.to_string())
}

/// A free RPC port whose websocket neighbour (port + 1) is free too.
fn pick_rpc_port(port: u16) -> Result<u16, String> {
    if port != 0 {
        return Ok(port);
    }
    for _ in 0..64 {
        let candidate = pick_port(0)?;
        if candidate < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, candidate + 1)).is_ok() {
            return Ok(candidate);
        }
    }
    Err("no pair of free ports for RPC and websocket".into())
}

/// The admin keypair in the Solana CLI's JSON format (64 numbers), created on first use.
fn admin_keypair(path: &Path) -> Result<Keypair, String> {
    if let Ok(text) = fs::read_to_string(path) {
        let bytes: Vec<u8> = text
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|byte| byte.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|err| format!("{}: not a keypair file: {err}", path.display()))?;
        return Keypair::try_from(bytes.as_slice()).map_err(|err| format!("{}: {err}", path.display()));
    }
    let keypair = Keypair::new();
    let numbers: Vec<String> = keypair.to_bytes().iter().map(u8::to_string).collect();
    fs::write(path, format!("[{}]\n", numbers.join(","))).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(keypair)
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run(options: Options) -> Result<(), String> {
    if !options.keep_ledger && options.ledger.exists() {
        // Only ever wipe what looks like a ledger we made, never an arbitrary directory.
        let ours = options.ledger.join("admin.json").exists() || options.ledger.join("genesis.bin").exists();
        if !ours {
            return Err(format!("{} exists and is not a ledger; pick another --ledger", options.ledger.display()));
        }
        fs::remove_dir_all(&options.ledger).map_err(|err| format!("{}: {err}", options.ledger.display()))?;
    }
    fs::create_dir_all(&options.ledger).map_err(|err| format!("{}: {err}", options.ledger.display()))?;
    let ledger = fs::canonicalize(&options.ledger).map_err(|err| err.to_string())?;
    let admin_path = ledger.join("admin.json");
    let admin = admin_keypair(&admin_path)?;

    let rpc_port = pick_rpc_port(options.rpc_port)?;
    let faucet_port = pick_port(options.faucet_port)?;
    let faucet_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, faucet_port));

    let mint = Keypair::new();
    let mint_address = mint.pubkey();
    let mut genesis = TestValidatorGenesis::default();
    genesis
        .ledger_path(&ledger)
        .rpc_config(JsonRpcConfig {
            enable_rpc_transaction_history: true,
            enable_extended_tx_metadata_storage: true,
            ..JsonRpcConfig::default_for_test()
        })
        // After rpc_config, which would overwrite it.
        .faucet_addr(Some(faucet_addr))
        .rpc_port(rpc_port)
        .add_upgradeable_programs_with_path(&[UpgradeableProgramInfo {
            program_id: options.program_id,
            loader: solana_sdk_ids::bpf_loader_upgradeable::id(),
            upgrade_authority: admin.pubkey(),
            program_path: options.program.clone(),
        }]);

    // The faucet signs airdrops with the mint keypair, on its own thread and runtime.
    let faucet = Arc::new(Mutex::new(Faucet::new(mint, None, None, None)));
    let (faucet_ready, faucet_bound) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("faucet".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(run_faucet(faucet, faucet_addr, Some(faucet_ready))),
                Err(err) => {
                    let _ = faucet_ready.send(Err(err.to_string()));
                }
            }
        })
        .map_err(|err| err.to_string())?;
    let faucet_addr = faucet_bound.recv().map_err(|err| err.to_string())??;

    // Synchronous by design (it builds its own runtimes); returns once the first slot is processed.
    let validator = genesis
        .start_with_mint_address(mint_address, SocketAddrSpace::new(true))
        .map_err(|err| format!("validator failed to start: {err}"))?;

    let ready = format!(
        "{{\"rpc_url\":{},\"ws_url\":{},\"faucet\":{},\"program_id\":{},\"admin_keypair\":{},\"ledger\":{}}}",
        json_string(&validator.rpc_url()),
        json_string(&validator.rpc_pubsub_url()),
        json_string(&faucet_addr.to_string()),
        json_string(&options.program_id.to_string()),
        json_string(&admin_path.to_string_lossy()),
        json_string(&ledger.to_string_lossy()),
    );
    if let Some(path) = &options.ready_file {
        // Written whole, then renamed, so a watcher never reads half a line.
        let partial = path.with_extension("partial");
        fs::write(&partial, format!("{ready}\n")).map_err(|err| format!("{}: {err}", partial.display()))?;
        fs::rename(&partial, path).map_err(|err| format!("{}: {err}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}").map_err(|err| err.to_string())?;
    stdout.flush().map_err(|err| err.to_string())?;
    drop(stdout);

    validator.join();
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("chainference-localnet: {message}\n");
            }
            eprint!("{USAGE}");
            return if message.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    if !options.quiet {
        // The validator logs through `log`; show warnings and errors unless asked not to.
        solana_logger_init();
    }
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chainference-localnet: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Warnings and errors of the validator's `log` output on stderr (`RUST_LOG` overrides).
fn solana_logger_init() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = env_logger::Builder::new().parse_filters(&filter).format_timestamp_millis().try_init();
}
