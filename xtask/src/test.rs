//! `cargo xtask test`, `cu` and `demo`.

use std::fs;
use std::process::Command;
use std::time::Instant;

use chainference_host::{DEPLOYED_PROGRAM_SO, cache_dir};

use crate::llama::{LLAMA_MODEL_ALIAS, setup_llama_server, start_llama_server};
use crate::localnet::{localnet_manifest_dir, setup_localnet, start_test_validator};
use crate::openai_clients::{openai_node_dir, openai_python, setup_openai_clients};
use crate::sbf::{build_sbf, core_no_std, program_manifest, sbf_program_crate};
use crate::setup::{setup, setup_model, setup_sbf};
use crate::wasm::{setup_web_example, wasm_tests, web_test_command};
use crate::{Result, cargo, root, run, stage, target_dir};

/// Features the RPC tests need, on top of the workspace defaults.
pub(crate) const RPC_FEATURES: &str = "chainference-chain/rpc,chainference-client/rpc,chainference-server/hub";

/// What the first build of the demo takes on a fresh 2-core machine (measured; README).
const DEMO_COLD_BUILD_MINUTES: u32 = 9;

/// The gateway's bad-input sweep (crates/chainference-gateway/tests/sweep.rs): run in a stage of
/// its own so its report (bodies sent, none hung) shows in the log.
const GATEWAY_SWEEP: &str = "every_malformed_or_odd_body_gets_a_prompt_answer_and_nothing_is_stranded";

/// `cargo xtask test [ARGS]`: every stage in order, stopping at the first failure; `ARGS` go to
/// the workspace's `cargo test`.
pub(crate) fn test(rest: &[String]) -> Result {
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
    setup_openai_clients()?;
    let so = sbf_program_crate().map(|_| root().join(DEPLOYED_PROGRAM_SO));
    stage("tests", || {
        let mut c = cargo();
        // With the RPC features, so the RPC stage below reuses these test binaries.
        c.args(["test", "--workspace", "--features", RPC_FEATURES]).args(rest);
        // The gateway sweep runs next, in its own stage, where its report is shown.
        if !rest.iter().any(|arg| arg == "--") {
            c.arg("--");
        }
        c.args(["--skip", GATEWAY_SWEEP]);
        // The gateway's test with the official OpenAI clients (required here, skipped elsewhere).
        c.env("CHAINFERENCE_OPENAI_PYTHON", openai_python())
            .env("CHAINFERENCE_OPENAI_NODE_DIR", openai_node_dir())
            .env("CHAINFERENCE_REQUIRE_OPENAI_CLIENTS", "1");
        if let Some(so) = &so {
            c.env("CHAINFERENCE_PROGRAM_SO", so);
        }
        run(&mut c)
    })?;
    stage("gateway bad-input sweep", || {
        let mut c = cargo();
        // Every test target, as above (so dev-dependency features unify the same way and
        // nothing is rebuilt), filtered to the sweep by name.
        c.args(["test", "--workspace", "--features", RPC_FEATURES, "--tests", "--"])
            .args([GATEWAY_SWEEP, "--nocapture"]);
        if let Some(so) = &so {
            c.env("CHAINFERENCE_PROGRAM_SO", so);
        }
        run(&mut c)
    })?;
    // The wasm package first: the validator stage drives the web dApp, which loads it.
    wasm_tests()?;
    real_server_tests()?;
    // After the test validator is gone: the soak starts its own (and restarts it).
    crate::soak::soak_stage()?;
    // The README's main job must keep working (and conserving lamports).
    // On the binary the tests built (cargo test's feature set): rebuilding it with `cargo
    // build`'s would recompile the crates whose features differ, twice per run.
    demo(&[], false)?;
    println!("==> all stages ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

/// `cargo xtask cu`: measures every instruction's compute units into `docs/compute-units.md`.
pub(crate) fn compute_units() -> Result {
    stage("cu", || {
        run(cargo()
            .args(["test", "-p", "chainference-program-tests", "--test", "compute_units", "--", "--nocapture"])
            .env("CHAINFERENCE_PROGRAM_SO", root().join(DEPLOYED_PROGRAM_SO))
            .env("CHAINFERENCE_WRITE_CU", root().join("docs/compute-units.md")))
    })
}

/// `cargo xtask demo [ARGS]`: the CLI's demo on the freshly built program; `ARGS` go to it.
/// `build`: build the binary first (otherwise the one in the target dir runs).
pub(crate) fn demo(rest: &[String], build: bool) -> Result {
    setup_sbf()?;
    let so = build_sbf()?;
    setup_model()?;
    if build {
        stage("build the demo", || {
            // The dev profile builds dependencies at opt-level 2 (see the root Cargo.toml), so
            // the model runs at speed while the demo shares the test build. Cargo's progress shows.
            println!(
                "building the `chainference` binary: the first time about {DEMO_COLD_BUILD_MINUTES} minutes on 2 \
                 cores (Solana runtime, Candle, RPC client), seconds after that"
            );
            run(cargo().args(["build", "-p", "chainference-cli", "--bin", "chainference"]))
        })?;
    }
    stage("demo", || {
        run(Command::new(target_dir().join("debug/chainference"))
            .arg("demo")
            .args(rest)
            .current_dir(root())
            .env("CHAINFERENCE_PROGRAM_SO", &so))
    })
}

/// The suites that need real servers, in one cargo selection (one build): the transport
/// conformance suite, the client flow and the CLI over RPC against a real validator, and the
/// HTTP backend against a real llama.cpp server on the same GGUF; then the web dApp in headless
/// Chromium and Firefox against the same validator and a real `chainference server run`. Both
/// servers run only for these tests (the validator keeps ~1.8 cores busy even when idle).
fn real_server_tests() -> Result {
    setup_localnet()?;
    setup_llama_server()?;
    let so = root().join(DEPLOYED_PROGRAM_SO);
    let mut validator = None;
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
        let started = validator.insert(start_test_validator(&so)?);
        // The CLI's validator test also creates the protocol config the dApp stage relies on.
        let result = run(cargo()
            .args(selection)
            .args(["--", "--nocapture", "--test-threads", "1"])
            .env("CHAINFERENCE_PROGRAM_SO", &so)
            .env("CHAINFERENCE_RPC_URL", &started.ready.rpc_url)
            .env("CHAINFERENCE_LOCALNET_ADMIN", &started.ready.admin_keypair)
            .env("CHAINFERENCE_REQUIRE_RPC", "1")
            .env("CHAINFERENCE_OPENAI_URL", &llama.url)
            .env("CHAINFERENCE_OPENAI_MODEL", LLAMA_MODEL_ALIAS)
            .env("CHAINFERENCE_REQUIRE_OPENAI", "1"));
        drop(llama);
        result
    })?;
    let Some(validator) = validator else { return Err("the validator did not start".into()) };
    stage("web dApp against the validator (headless Chromium, Firefox)", || {
        setup_web_example()?;
        let mut c = web_test_command("dapp.test.mjs");
        c.env("CHAINFERENCE_RPC_URL", &validator.ready.rpc_url)
            .env("CHAINFERENCE_REQUIRE_RPC", "1")
            .env("CHAINFERENCE_BIN", target_dir().join("debug/chainference"))
            .env("CHAINFERENCE_SCREENSHOTS", cache_dir().join("web-screenshots"));
        if let Some(ws) = &validator.ready.ws_url {
            c.env("CHAINFERENCE_WS_URL", ws);
        }
        fs::create_dir_all(cache_dir().join("web-screenshots")).map_err(|e| format!("screenshots: {e}"))?;
        run(&mut c)
    })
}
