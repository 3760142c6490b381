//! # chainference-host
//!
//! Where Chainference's files live on this machine, and how to start its local validator. One
//! definition of each rule, shared by the CLI, the SDKs (the embedded chain's `.so`, the Candle
//! backend's model), the program tests and `cargo xtask`:
//!
//! - [`cache_dir`]: `$CHAINFERENCE_CACHE`, else `$HOME/.cache/chainference`, else
//!   `/tmp/chainference` (a machine without `HOME`, such as a bare container).
//! - [`program_so`]: `$CHAINFERENCE_PROGRAM_SO`, else the first `target/deploy/chainference_program.so`
//!   above the working directory or the calling crate (where `cargo xtask build-sbf` puts it).
//! - [`default_model`]: `$CHAINFERENCE_MODEL`, else the GGUF `cargo xtask setup` installs into the cache.
//! - [`localnet`]: starts the `chainference-localnet` validator tool, waits for its ready line and
//!   stops it when dropped.
//!
//! std only and without dependencies, so `cargo xtask` can use it before anything is installed.
//!
//! ```
//! let cache = chainference_host::cache_dir();
//! assert!(chainference_host::tools_dir().starts_with(&cache));
//! assert!(chainference_host::default_model().is_absolute() || std::env::var_os("CHAINFERENCE_MODEL").is_some());
//! ```

pub mod localnet;
pub mod process;

use std::env;
use std::path::{Path, PathBuf};

/// Environment variable naming the cache directory.
pub const CACHE_ENV: &str = "CHAINFERENCE_CACHE";
/// Environment variable naming the program `.so`.
pub const PROGRAM_SO_ENV: &str = "CHAINFERENCE_PROGRAM_SO";
/// Environment variable naming the model file.
pub const MODEL_ENV: &str = "CHAINFERENCE_MODEL";
/// Where `cargo xtask build-sbf` writes the program, relative to the workspace root.
pub const DEPLOYED_PROGRAM_SO: &str = "target/deploy/chainference_program.so";
/// The model file `cargo xtask setup` installs (SmolLM2-135M-Instruct, Q4_1, from a PyPI wheel).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cache for tools, models and build output: `$CHAINFERENCE_CACHE`, else
/// `$HOME/.cache/chainference`, else `/tmp/chainference`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache/chainference"),
        None => env::temp_dir().join("chainference"),
    }
}

/// Tools built or installed once (`bin/sbpf-linker`, `bin/chainference-localnet`, …).
pub fn tools_dir() -> PathBuf {
    cache_dir().join("tools")
}

/// Where `cargo xtask setup` installs the model: `<cache>/models/`[`DEFAULT_MODEL_FILE`].
pub fn installed_model_path() -> PathBuf {
    cache_dir().join("models").join(DEFAULT_MODEL_FILE)
}

/// The model to load by default: `$CHAINFERENCE_MODEL`, else [`installed_model_path`].
pub fn default_model() -> PathBuf {
    env::var_os(MODEL_ENV).filter(|m| !m.is_empty()).map_or_else(installed_model_path, PathBuf::from)
}

/// The program's SBF `.so`: `$CHAINFERENCE_PROGRAM_SO`, else the first [`DEPLOYED_PROGRAM_SO`]
/// found above the working directory, above `$CARGO_MANIFEST_DIR` (set by `cargo run` and
/// `cargo test`), or above this crate's sources; else where the last of those would put it (so the
/// error names a path to build).
pub fn program_so() -> PathBuf {
    if let Some(path) = env::var_os(PROGRAM_SO_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    // Run-time roots first: checkouts sharing one target dir share binaries, and each must find
    // its own build rather than the one of the checkout that compiled it.
    let mut roots: Vec<PathBuf> = Vec::new();
    roots.extend(env::current_dir().ok());
    roots.extend(env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from));
    let compiled_here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    roots.push(compiled_here.clone());
    roots
        .iter()
        .flat_map(|root| root.ancestors())
        .map(|dir| dir.join(DEPLOYED_PROGRAM_SO))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| workspace_root_of(&compiled_here).join(DEPLOYED_PROGRAM_SO))
}

/// `crates/<name>` → the workspace root two levels up (or the directory itself).
fn workspace_root_of(crate_dir: &Path) -> PathBuf {
    crate_dir.parent().and_then(Path::parent).map_or_else(|| crate_dir.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_hang_off_the_cache() {
        let cache = cache_dir();
        assert_eq!(tools_dir(), cache.join("tools"));
        if env::var_os(MODEL_ENV).is_none() {
            assert_eq!(default_model(), cache.join("models").join(DEFAULT_MODEL_FILE));
        }
    }

    #[test]
    fn program_so_ends_at_the_deploy_path() {
        if env::var_os(PROGRAM_SO_ENV).is_none() {
            assert!(program_so().ends_with(DEPLOYED_PROGRAM_SO));
        }
    }
}
