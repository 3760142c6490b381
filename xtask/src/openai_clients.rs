//! The official OpenAI clients (openai-python from PyPI, openai-node from npm), installed into
//! the cache so the gateway's tests can drive it the way its users do.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use chainference_host::cache_dir;

use crate::setup::apt_install;
use crate::{Result, output, run, stage};

/// Pinned so a new client release cannot change what the tests check.
const OPENAI_PYTHON_VERSION: &str = "3.63.0";
const OPENAI_NODE_VERSION: &str = "7.60.0";

/// Where both clients live.
fn clients_dir() -> PathBuf {
    cache_dir().join("openai-clients")
}

/// The virtual environment's Python, with `openai` installed.
pub(crate) fn openai_python() -> PathBuf {
    clients_dir().join("venv/bin/python")
}

/// The folder whose `node_modules` holds the `openai` npm package.
pub(crate) fn openai_node_dir() -> PathBuf {
    clients_dir().join("node")
}

/// Installs both clients at their pinned versions, once.
pub(crate) fn setup_openai_clients() -> Result {
    stage("setup: official OpenAI clients (python, node)", || {
        let check = format!("import openai; assert openai.__version__ == '{OPENAI_PYTHON_VERSION}'");
        if output(Command::new(openai_python()).args(["-c", &check])).is_some() {
            println!("openai-python {OPENAI_PYTHON_VERSION} already in {}", clients_dir().display());
        } else {
            if output(Command::new("python3").args(["-c", "import ensurepip, venv"])).is_none() {
                apt_install(&["python3-venv"])?;
            }
            run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(clients_dir().join("venv")))?;
            run(Command::new(openai_python()).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-cache-dir",
                &format!("openai=={OPENAI_PYTHON_VERSION}"),
            ]))?;
        }
        let node = openai_node_dir();
        let installed = fs::read_to_string(node.join("node_modules/openai/package.json")).unwrap_or_default();
        if installed.contains(&format!("\"version\": \"{OPENAI_NODE_VERSION}\"")) {
            println!("openai-node {OPENAI_NODE_VERSION} already in {}", node.display());
            return Ok(());
        }
        fs::create_dir_all(&node).map_err(|e| format!("create {}: {e}", node.display()))?;
        if !node.join("package.json").exists() {
            fs::write(node.join("package.json"), "{\"private\": true}\n").map_err(|e| format!("package.json: {e}"))?;
        }
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", &format!("openai@{OPENAI_NODE_VERSION}")])
            .current_dir(&node))
    })
}
