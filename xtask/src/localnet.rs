//! A real validator: building the `chainference-localnet` tool once, `cargo xtask localnet`, and
//! the validator the test stages start.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chainference_host::localnet::{Localnet, LocalnetOptions, installed_tool_path};
use chainference_host::{cache_dir, tools_dir};

use crate::sbf::build_sbf;
use crate::setup::{apt_install, setup_sbf};
use crate::{Result, plain_cargo, root, run, stage};

/// What the agave validator's build needs (RocksDB's C++ and bindgen, protobuf, udev).
const APT_LOCALNET: &[&str] = &[
    "clang",
    "libclang-dev",
    "protobuf-compiler",
    "libudev-dev",
    "cmake",
    "pkg-config",
    "libssl-dev",
    "build-essential",
];

/// The tool's own workspace (excluded from the root one).
pub(crate) fn localnet_manifest_dir() -> PathBuf {
    root().join("tools/localnet")
}

/// FNV-1a over the tool's sources and lockfile: rebuild only when they change.
fn localnet_fingerprint() -> Result<String> {
    let dir = localnet_manifest_dir();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in ["Cargo.toml", "Cargo.lock", "src/main.rs"] {
        let bytes = fs::read(dir.join(file)).map_err(|e| format!("{}: {e}", dir.join(file).display()))?;
        for byte in bytes.iter().chain(file.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{hash:016x}"))
}

/// Builds `chainference-localnet` (the agave 4.2.2 test validator, ~20 min cold on 2 cores)
/// into the tools cache once, in its own target dir, and reuses it while its sources match.
pub(crate) fn setup_localnet() -> Result {
    stage("setup: local validator", || {
        apt_install(APT_LOCALNET)?;
        let fingerprint = localnet_fingerprint()?;
        let stamp = tools_dir().join("chainference-localnet.stamp");
        let built = fs::read_to_string(&stamp).unwrap_or_default();
        let binary = installed_tool_path();
        if binary.is_file() && built.trim() == fingerprint {
            println!("chainference-localnet {fingerprint} already at {}", binary.display());
            return Ok(());
        }
        let target = cache_dir().join("target-localnet");
        run(plain_cargo()
            .args(["build", "--locked", "--manifest-path"])
            .arg(localnet_manifest_dir().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target))?;
        if let Some(bin) = binary.parent() {
            fs::create_dir_all(bin).map_err(|e| e.to_string())?;
        }
        fs::copy(target.join("debug/chainference-localnet"), &binary)
            .map_err(|e| format!("copying chainference-localnet: {e}"))?;
        fs::write(&stamp, format!("{fingerprint}\n")).map_err(|e| e.to_string())
    })
}

/// `cargo xtask localnet [ARGS]`: the validator in the foreground with the program deployed.
pub(crate) fn localnet(rest: &[String]) -> Result {
    setup_sbf()?;
    let so = build_sbf()?;
    setup_localnet()?;
    let options =
        LocalnetOptions { tool: installed_tool_path(), program: so, args: rest.to_vec(), ..LocalnetOptions::default() };
    let (mut command, _) = options.command().map_err(|e| e.to_string())?;
    run(&mut command)
}

/// Starts a validator for the tests with `so` deployed, on free ports, its output in
/// `<cache>/test-localnet/validator.log`; it is killed when the returned value is dropped.
pub(crate) fn start_test_validator(so: &Path) -> Result<Localnet> {
    let dir = cache_dir().join("test-localnet");
    let started = Instant::now();
    let validator = Localnet::start(LocalnetOptions {
        tool: installed_tool_path(),
        program: so.to_path_buf(),
        ledger: dir.join("ledger"),
        ready_file: dir.join("ready.json"),
        args: ["--rpc-port", "0", "--faucet-port", "0", "--quiet"].map(String::from).to_vec(),
        log: Some(dir.join("validator.log")),
        ..LocalnetOptions::default()
    })
    .map_err(|e| e.to_string())?;
    println!("validator ready at {} after {:.1}s", validator.ready.rpc_url, started.elapsed().as_secs_f64());
    Ok(validator)
}
