//! `cargo xtask soak`: the network under load and faults on a real validator
//! (`crates/chainference-soak`). Not yet a stage of `cargo xtask test`: the default run still
//! leaves 2 requests for its own sweep to settle (see README).

use std::process::Command;

use chainference_host::DEPLOYED_PROGRAM_SO;

use crate::localnet::setup_localnet;
use crate::sbf::build_sbf;
use crate::setup::{setup_model, setup_sbf};
use crate::{Result, cargo, root, run, stage, target_dir};

/// `cargo xtask soak [ARGS]`: builds the CLI and the soak, then runs it (defaults: 200 requests,
/// 16 clients, 3 servers, 64 gateway calls; `ARGS` override them, `--json` for machine output).
pub(crate) fn soak(rest: &[String]) -> Result {
    setup_sbf()?;
    build_sbf()?;
    setup_model()?;
    setup_localnet()?;
    stage("build the CLI and the soak", || {
        run(cargo().args(["build", "-p", "chainference-cli", "--bin", "chainference", "-p", "chainference-soak"]))
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
