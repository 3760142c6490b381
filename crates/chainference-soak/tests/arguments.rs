//! The soak binary's command line: what it accepts, and the precise error for what it does not.
//! (The soak itself runs as a stage of `cargo xtask test`, against a real validator.)

use std::process::{Command, Output};

fn soak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainference-soak")).args(args).output().expect("the soak binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_prints_the_usage_and_succeeds() {
    let output = soak(&["--help"]);
    assert!(output.status.success());
    let usage = String::from_utf8_lossy(&output.stdout);
    for flag in ["--requests R (200)", "--clients C (16)", "--servers S (3)", "--no-validator-restart", "--cli PATH"] {
        assert!(usage.contains(flag), "usage lacks {flag}: {usage}");
    }
}

#[test]
fn a_missing_cli_is_named() {
    let output = soak(&["--requests", "5"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--cli (the `chainference` binary) is required"), "{}", stderr(&output));
}

#[test]
fn a_bad_number_names_its_flag() {
    let output = soak(&["--clients", "many", "--cli", "chainference"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--clients takes a whole number, not \"many\""), "{}", stderr(&output));
}

#[test]
fn a_flag_without_its_value_is_named() {
    let output = soak(&["--cli"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--cli needs a value"), "{}", stderr(&output));
}

#[test]
fn too_small_a_network_is_refused_before_anything_starts() {
    let output = soak(&["--servers", "1", "--cli", "chainference"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("at least 2 servers, 1 client and 1 request"), "{}", stderr(&output));
    let output = soak(&["--surprise", "--cli", "chainference"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("unknown argument --surprise"), "{}", stderr(&output));
}
