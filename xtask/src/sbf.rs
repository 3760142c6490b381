//! The on-chain program for SBF: cargo with the SBF linker, the `.so`, and the checks that it
//! (and core's `no_std` build) call no 128-bit builtins.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chainference_host::{DEPLOYED_PROGRAM_SO, cache_dir};

use crate::setup::{DEBIAN_RUSTC, LLVM_PREFIX, sbpf_linker};
use crate::{Result, output, plain_cargo, root, run, stage};

const SBF_TARGET: &str = "bpfel-unknown-none";

/// Cargo with Debian's rustc and `sbpf-linker` for `bpfel-unknown-none`, in its own target dir.
fn sbf_cargo() -> Command {
    let mut c = plain_cargo();
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

/// The program's crate directory, if this checkout has it.
pub(crate) fn sbf_program_crate() -> Option<PathBuf> {
    let dir = root().join("crates/chainference-program");
    dir.join("Cargo.toml").exists().then_some(dir)
}

/// The program is its own workspace (see the root Cargo.toml), so it is addressed by manifest.
pub(crate) fn program_manifest() -> PathBuf {
    root().join("crates/chainference-program/Cargo.toml")
}

/// Builds the program `.so` into `target/deploy/` and returns its path.
pub(crate) fn build_sbf() -> Result<PathBuf> {
    if sbf_program_crate().is_none() {
        return Err("crates/chainference-program does not exist yet".into());
    }
    let so = root().join(DEPLOYED_PROGRAM_SO);
    stage("build-sbf", || {
        run(sbf_cargo()
            .args(["build", "--profile", "release-sbf", "--target", SBF_TARGET, "--manifest-path"])
            .arg(program_manifest()))?;
        let built = cache_dir().join("target-sbf").join(SBF_TARGET).join("release-sbf/libchainference_program.so");
        if let Some(deploy) = so.parent() {
            fs::create_dir_all(deploy).map_err(|e| format!("create {}: {e}", deploy.display()))?;
        }
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
pub(crate) fn core_no_std() -> Result {
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
