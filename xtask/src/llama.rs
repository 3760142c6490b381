//! llama.cpp: a real OpenAI-compatible server for the HTTP backend's tests, and the speed
//! reference of `cargo xtask bench-backend`.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chainference_host::cache_dir;
use chainference_host::process::{KillOnDrop, wait_until};

use crate::sbf::build_sbf;
use crate::setup::{apt_install, model_path, setup_model, setup_sbf};
use crate::{Result, cargo, output, root, run, stage, target_dir};

/// A real OpenAI-compatible server (llama.cpp inside), built from PyPI's source with cmake.
const LLAMA_CPP_PYTHON: &str = "llama-cpp-python[server]==0.3.16";
const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.16";
/// The model name the test server answers to.
pub(crate) const LLAMA_MODEL_ALIAS: &str = "smollm2";
/// How long the server may take to load the model and listen.
const LLAMA_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The virtual environment `llama-cpp-python` is built into.
fn llama_venv() -> PathBuf {
    cache_dir().join("llama-server")
}

/// The virtual environment's Python.
fn llama_python() -> PathBuf {
    llama_venv().join("bin/python")
}

/// Builds `llama-cpp-python[server]` (llama.cpp compiled by cmake, minutes on 2 cores) into a
/// virtual environment in the cache, once.
pub(crate) fn setup_llama_server() -> Result {
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
pub(crate) struct RunningLlama {
    /// The server process.
    _server: KillOnDrop,
    /// Its OpenAI base URL (`http://127.0.0.1:PORT/v1`).
    pub(crate) url: String,
}

/// Starts the llama.cpp server on the model setup installed with `threads` threads, its output in
/// `<cache>/test-llama/server.log`, and waits until it listens.
pub(crate) fn start_llama_server(threads: u32) -> Result<RunningLlama> {
    let port =
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))?.port();
    let dir = cache_dir().join("test-llama");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let log = fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(llama_python())
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model_path())
        .args(["--model_alias", LLAMA_MODEL_ALIAS, "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "2048", "--n_threads", &threads.to_string(), "--verbose", "false"])
        // Flash attention: without it llama.cpp 0.3.16 answers greedy chat prompts wrongly here
        // whenever the prompt is evaluated as a batch ("La femme de France, le Grand Croix…"
        // instead of "The capital of France is Paris.", measured with native and AVX2 builds).
        .args(["--flash_attn", "true"])
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("could not start the llama.cpp server: {e}"))?;
    let mut server = KillOnDrop::new(child);
    let url = format!("http://127.0.0.1:{port}/v1");
    let started = Instant::now();
    // The server loads the model before it listens: a connection means ready.
    let ready = wait_until(LLAMA_READY_TIMEOUT, Duration::from_millis(200), || {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Some(()));
        }
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("the llama.cpp server exited with {status}; see {}", dir.join("server.log").display()));
        }
        Ok(None)
    })?;
    if ready.is_none() {
        return Err(format!(
            "the llama.cpp server was not ready in {} s; see {}",
            LLAMA_READY_TIMEOUT.as_secs(),
            dir.join("server.log").display()
        ));
    }
    println!("llama.cpp server ready at {url} after {:.1}s", started.elapsed().as_secs_f64());
    Ok(RunningLlama { _server: server, url })
}

/// One JSON object's number field.
fn json_number(line: &str, name: &str) -> Option<f64> {
    let key = format!("\"{name}\":");
    let (_, rest) = line.split_once(&key)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

/// Runs one benchmark and returns (and shows) the last JSON line of its output.
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
pub(crate) fn bench_backend() -> Result {
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
