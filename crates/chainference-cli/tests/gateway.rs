//! The OpenAI-compatible gateway as a user runs it: the built `chainference` binary with
//! `gateway --demo` (embedded chain, two local servers, the real model), spoken to over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chainference_host::process::KillOnDrop;
use futures::StreamExt;
use serde_json::{Value, json};

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";

/// A running gateway, killed when dropped.
struct Gateway {
    _child: KillOnDrop,
    url: String,
}

fn gateway(extra: &[&str]) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chainference"))
        .args(["gateway", "--demo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the chainference binary");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a ready line: {line:?}"));
    Gateway { _child: KillOnDrop::new(child), url: ready["listening"].as_str().unwrap().to_string() }
}

fn france(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [
            { "role": "system", "content": "You are a helpful assistant." },
            { "role": "user", "content": "What is the capital of France?" }
        ],
        "max_tokens": 64,
        "temperature": 0,
        "stream": stream,
        "stream_options": { "include_usage": true }
    })
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = http.post(format!("{url}/chat/completions")).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn assert_openai_error(body: &Value, code: Option<&str>) {
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    if let Some(code) = code {
        assert_eq!(error["code"], code, "{body}");
    }
}

/// Reads a server-sent event stream the way OpenAI's SDKs do: `data:` lines, blank-line
/// separated, until `[DONE]`. Returns the chunks and when the first content arrived.
async fn read_sse(response: reqwest::Response, started: Instant) -> (Vec<Value>, Option<Duration>) {
    let mut bytes = response.bytes_stream();
    let mut buffer = String::new();
    let mut chunks = Vec::new();
    let mut first_content = None;
    while let Some(piece) = bytes.next().await {
        buffer.push_str(&String::from_utf8_lossy(&piece.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data: ") else { continue };
                if data == "[DONE]" {
                    return (chunks, first_content);
                }
                let chunk: Value = serde_json::from_str(data).unwrap();
                if chunk["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
                    first_content.get_or_insert(started.elapsed());
                }
                chunks.push(chunk);
            }
        }
    }
    panic!("the stream ended without [DONE]: {chunks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_speaks_openai() {
    let gateway = gateway(&[]);
    let http = reqwest::Client::new();

    let models: Value = http.get(format!("{}/models", gateway.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == MODEL), "{models}");

    // Without streaming.
    let (status, body) = post(&http, &gateway.url, &france(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "The capital of France is Paris.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 27, "{body}");
    assert_eq!(usage["completion_tokens"], 7, "{body}");
    assert_eq!(usage["total_tokens"], body["chainference"]["billed_tokens"]);

    // Streaming, parsed as a real client does.
    let started = Instant::now();
    let response = http.post(format!("{}/chat/completions", gateway.url)).json(&france(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (chunks, first) = read_sse(response, started).await;
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks.iter().find(|c| c.get("usage").is_some()).expect("a usage chunk");
    assert_eq!(usage["usage"]["total_tokens"], 34);
    println!("gateway time to first token (streaming, through the chain): {:?}", first.unwrap());

    // Stop sequences end the answer before them (not shown) and bill only what was generated.
    for stream in [false, true] {
        let mut body = france(stream);
        body["stop"] = json!(["Paris", "never"]);
        let started = Instant::now();
        let response = http.post(format!("{}/chat/completions", gateway.url)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let (text, finish, billed) = if stream {
            let (chunks, _) = read_sse(response, started).await;
            let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
            let last = chunks.iter().find(|c| c["choices"][0]["finish_reason"].is_string()).unwrap();
            (text, last["choices"][0]["finish_reason"].clone(), last["chainference"]["billed_tokens"].clone())
        } else {
            let body: Value = response.json().await.unwrap();
            let text = body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
            (text, body["choices"][0]["finish_reason"].clone(), body["chainference"]["billed_tokens"].clone())
        };
        assert_eq!(text, "The capital of France is ", "stream {stream}");
        assert_eq!(finish, "stop");
        // 27 prompt tokens and the 6 completion tokens through " Paris" (34 unstopped).
        assert_eq!(billed, 33, "stream {stream}");
    }

    // Concurrent requests all complete.
    let body = france(false);
    let replies = futures::future::join_all((0..3).map(|_| post(&http, &gateway.url, &body))).await;
    for (status, body) in replies {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "The capital of France is Paris.");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_errors() {
    let gateway = gateway(&["--api-key", "sk-test"]);
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", gateway.url);

    // The API key.
    let response = http.post(&url).json(&france(false)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_openai_error(&response.json().await.unwrap(), Some("invalid_api_key"));
    let response = http.get(format!("{}/models", gateway.url)).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let authed = |body: &Value| http.post(&url).bearer_auth("sk-test").json(body).send();

    let cases: Vec<(Value, u16, Option<&str>, Option<&str>)> = vec![
        (json!({ "messages": [{ "role": "user", "content": "hi" }] }), 400, None, Some("model")),
        (json!({ "model": MODEL }), 400, None, Some("messages")),
        (json!({ "model": MODEL, "messages": [] }), 400, None, Some("messages")),
        (json!({ "model": MODEL, "messages": [{ "role": "wizard", "content": "hi" }] }), 400, None, Some("messages")),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "temperature": 7 }),
            400,
            None,
            Some("temperature"),
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "max_tokens": -3 }),
            400,
            None,
            Some("max_tokens"),
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "stop": ["a", "b", "c", "d", "e"] }),
            400,
            None,
            Some("stop"),
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "stop": 5 }),
            400,
            None,
            Some("stop"),
        ),
        (json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "n": 2 }), 400, None, Some("n")),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "tools": [{ "type": "function" }] }),
            400,
            None,
            Some("tools"),
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "response_format": { "type": "json_schema" } }),
            400,
            None,
            Some("response_format"),
        ),
        (
            json!({ "model": "nobody/serves-this:Q8_0", "messages": [{ "role": "user", "content": "hi" }] }),
            404,
            Some("model_not_found"),
            None,
        ),
    ];
    for (body, status, code, param) in cases {
        let response = authed(&body).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_openai_error(&error, code);
        if let Some(param) = param {
            assert_eq!(error["error"]["param"], param, "{error}");
        }
    }

    // Not JSON at all.
    let response = http
        .post(&url)
        .bearer_auth("sk-test")
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_openai_error(&response.json().await.unwrap(), None);

    // Too large.
    let huge = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "x".repeat(400_000) }] });
    let response = authed(&huge).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_openai_error(&response.json().await.unwrap(), Some("request_too_large"));

    // With the key, it works.
    let response = authed(&france(false)).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// The official OpenAI clients against the gateway, as its users call it: answers, streaming,
/// stop sequences, usage, and the refused fields named in `BadRequestError.param`. `cargo xtask
/// test` installs them (pinned) and names them: `CHAINFERENCE_OPENAI_PYTHON` (a Python with
/// `openai`) and `CHAINFERENCE_OPENAI_NODE_DIR` (a folder with `node_modules/openai`); without
/// them the test is skipped unless `CHAINFERENCE_REQUIRE_OPENAI_CLIENTS` is set.
#[test]
fn the_official_openai_clients_work_against_the_gateway() {
    let python = std::env::var_os("CHAINFERENCE_OPENAI_PYTHON");
    let node_dir = std::env::var_os("CHAINFERENCE_OPENAI_NODE_DIR");
    let (Some(python), Some(node_dir)) = (python, node_dir) else {
        assert!(
            std::env::var_os("CHAINFERENCE_REQUIRE_OPENAI_CLIENTS").is_none(),
            "CHAINFERENCE_OPENAI_PYTHON and CHAINFERENCE_OPENAI_NODE_DIR must name the clients"
        );
        eprintln!("skipped: the official OpenAI clients are installed by `cargo xtask test`");
        return;
    };
    let gateway = gateway(&[]);
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_clients");
    let mut python_check = Command::new(python);
    python_check.arg(scripts.join("check.py"));
    let mut node_check = Command::new("node");
    node_check.arg(scripts.join("check.mjs")).env("OPENAI_NODE_DIR", node_dir);
    for mut check in [python_check, node_check] {
        let output = check.args([gateway.url.as_str(), MODEL]).output().expect("the client runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{check:?} failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("all checks passed"), "{stdout}");
        print!("{stdout}");
    }
}
