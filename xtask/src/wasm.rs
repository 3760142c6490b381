//! The wasm package (`pkg/`, for node and the web) and its tests: wasm-bindgen-test in node and
//! headless Chromium, the web example's offline page in headless Chromium and Firefox, node's
//! tests of the package, and (with a validator) the web dApp against a real server.

use std::env;
use std::fs;
use std::path::Path;
use std::process::Command;

use chainference_host::{cache_dir, tools_dir};

use crate::setup::{DEBIAN_RUSTC, geckodriver, wasm_bindgen};
use crate::{Result, cargo, root, run, stage, target_dir};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Debian's cargo-web, next to its rustc.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// The web example's folder: its package.json pins @solana/kit, esbuild and playwright-core.
const WEB_EXAMPLE: &str = "examples/web";

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

/// `path`'s size in bytes (0 if it cannot be read).
fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `path`'s size after `gzip -9`.
fn gzip_size(path: &Path) -> Result<u64> {
    let out = Command::new("gzip").args(["-9", "-c"]).arg(path).output().map_err(|e| format!("gzip: {e}"))?;
    Ok(out.stdout.len() as u64)
}

/// Builds `pkg/` (node and web targets, one package.json) and shows the `.wasm`'s size.
pub(crate) fn build_wasm_package() -> Result {
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

/// Builds the package, then wasm-bindgen-test under node and in headless Chromium, the web
/// example's offline page in headless Chromium and Firefox, and node --test on the package.
pub(crate) fn wasm_tests() -> Result {
    build_wasm_package()?;
    let wasm_test = || {
        let mut c = wasm_cargo();
        c.args(["test", "--target", WASM_TARGET, "-Zbuild-std=std,panic_abort", "-p", "chainference-wasm", "--tests"]);
        c
    };
    stage("wasm tests (node)", || run(&mut wasm_test()))?;
    stage("wasm tests (headless Chromium)", || {
        run(wasm_test().env("CHROMEDRIVER", "/usr/bin/chromedriver").env("WASM_BINDGEN_USE_BROWSER", "1"))
    })?;
    stage("web example offline page (headless Chromium, Firefox)", || {
        setup_web_example()?;
        run(&mut web_test_command("offline.test.mjs"))
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

/// `npm ci` in the web example (when its lockfile changed since the last one) and `npm run
/// build` (bundles @solana/kit into `vendor/kit.js`): what a user of the example runs.
pub(crate) fn setup_web_example() -> Result {
    let dir = root().join(WEB_EXAMPLE);
    let lock = fs::read(dir.join("package-lock.json")).map_err(|e| format!("{WEB_EXAMPLE}/package-lock.json: {e}"))?;
    // A copy of the lockfile the last `npm ci` installed from.
    let stamp = dir.join("node_modules/.chainference-lock");
    if fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir))?;
        fs::write(&stamp, &lock).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    run(Command::new("npm").args(["run", "--silent", "build"]).current_dir(&dir))
}

/// `node <script>` in the web example, with the browsers' drivers named.
pub(crate) fn web_test_command(script: &str) -> Command {
    let mut c = Command::new("node");
    c.arg(script).current_dir(root().join(WEB_EXAMPLE)).env("GECKODRIVER", geckodriver());
    c
}
