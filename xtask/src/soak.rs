//! `cargo xtask soak`: the network under load and faults on a real validator
//! (`crates/chainference-soak`), and its short form as a stage of `cargo xtask test`.

use std::process::Command;

use chainference_host::DEPLOYED_PROGRAM_SO;

use crate::localnet::setup_localnet;
use crate::sbf::build_sbf;
use crate::setup::{setup_model, setup_sbf};
use crate::{Result, cargo, root, run, stage, target_dir};

/// The short form `cargo xtask test` runs: the same clients, servers, gateway burst and faults,
/// 30 requests instead of 200.
pub(crate) const SHORT_FORM: &[&str] = &["--requests", "30"];

/// `cargo xtask soak [ARGS]`: builds the CLI and the soak, then runs it (defaults: 200 requests,
/// 16 clients, 3 servers, 64 gateway calls; `ARGS` override them, `--json` for machine output).
pub(crate) fn soak(rest: &[String]) -> Result {
    setup_sbf()?;
    build_sbf()?;
    setup_model()?;
    setup_localnet()?;
    stage("build the CLI and the soak", || {
        // `--bin` applies to every package named, so each binary is named.
        run(cargo().args([
            "build",
            "-p",
            "chainference-cli",
            "--bin",
            "chainference",
            "-p",
            "chainference-soak",
            "--bin",
            "chainference-soak",
        ]))
    })?;
    stage("soak", || run_soak(rest))
}

/// Runs the built soak binary with `args` against the built `chainference` binary.
pub(crate) fn run_soak<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result {
    run(Command::new(target_dir().join("debug/chainference-soak"))
        .args(args)
        .arg("--cli")
        .arg(target_dir().join("debug/chainference"))
        .arg("--program")
        .arg(root().join(DEPLOYED_PROGRAM_SO))
        .current_dir(root()))
}

/// The test stage: the short form, on the `chainference` and `chainference-soak` binaries of
/// the tests' build. `cargo test --no-run` with the tests' features makes sure they are current
/// (a no-op after the test stages; building them with `cargo build` instead would recompile
/// what the tests' feature set changes). The soak's own tests run its binary, so cargo builds it.
pub(crate) fn soak_stage() -> Result {
    setup_localnet()?;
    stage("soak (short form): load and faults on a real validator", || {
        run(cargo().args(["test", "--workspace", "--features", crate::test::RPC_FEATURES, "--tests", "--no-run"]))?;
        run_soak(SHORT_FORM)
    })
}
