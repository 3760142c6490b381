//! No silent waits: input the model cannot use is refused up front, and a request nobody answers
//! ends in a 504 that says what happened, with the stake reclaimed and the account closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainference_client::{Chain, Client, EmbeddedChain, Keypair, Signer};
use chainference_gateway::{Gateway, GatewayConfig};
use chainference_server::candle::{CandleBackend, ModelSource};
use chainference_server::runtime::{AcceptPolicy, Server};
use common::{requests_of, serve};
use serde_json::{Value, json};

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";

async fn post(http: &reqwest::Client, base: &str, body: &Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = http.post(format!("{base}/chat/completions")).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_input_is_refused_at_once_and_silence_ends_in_a_504() {
    let chain = Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"));
    // A server that registers and then goes away: its account says it is active, nobody answers.
    let model = Arc::new(CandleBackend::load(&ModelSource::default_model()).expect("the model (`cargo xtask setup`)"));
    let operator = Keypair::new();
    chain.airdrop(&operator.pubkey(), 10_000_000_000).await.unwrap();
    let silent = Server::builder(Arc::clone(&chain), operator, model).program(*chain.program()).start().await.unwrap();
    drop(silent);

    let wallet = Keypair::new();
    let payer = wallet.pubkey();
    chain.airdrop(&payer, 10_000_000_000).await.unwrap();
    let before = chain.balance(&payer).await.unwrap();
    let program = *chain.program();
    let shared: Arc<dyn Chain> = Arc::clone(&chain) as Arc<dyn Chain>;
    let config = GatewayConfig::new().request_timeout_secs(10); // the deployment's shortest
    let base = serve(Gateway::new(Client::with_program(shared, wallet, program), config)).await;
    let http = reqwest::Client::new();

    // The legacy text completions API and unknown paths: OpenAI-shaped 404s naming what is served.
    let legacy = http.post(format!("{base}/completions")).json(&json!({ "model": MODEL, "prompt": "Hi" }));
    let legacy = legacy.send().await.unwrap();
    assert_eq!(legacy.status().as_u16(), 404);
    let legacy: Value = legacy.json().await.unwrap();
    assert_eq!(legacy["error"]["code"], "unsupported_endpoint");
    assert_eq!(legacy["error"]["type"], "invalid_request_error");
    assert!(legacy["error"]["message"].as_str().unwrap().contains("POST /v1/chat/completions"), "{legacy}");
    let unknown = http.post(format!("{base}/embeddings")).json(&json!({ "input": "Hi" })).send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["error"]["type"], "invalid_request_error");
    assert!(
        unknown["error"]["message"].as_str().unwrap().starts_with("Invalid URL (POST /v1/embeddings)"),
        "{unknown}"
    );
    let wrong_method = http.get(format!("{base}/chat/completions")).send().await.unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);
    let wrong_method: Value = wrong_method.json().await.unwrap();
    assert!(wrong_method["error"]["message"].as_str().unwrap().starts_with("Invalid URL (GET /v1/chat/completions)"));

    // Content the model cannot read, named in the error; nothing is sent on chain.
    for (part, kind) in [
        (json!({ "type": "image_url", "image_url": { "url": "https://example.com/a.png" } }), "image_url"),
        (json!({ "type": "input_audio", "input_audio": { "data": "", "format": "wav" } }), "input_audio"),
        (json!({ "type": "file", "file": { "file_id": "f" } }), "file"),
    ] {
        let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": [part] }] });
        let (status, error, took) = post(&http, &base, &body).await;
        assert_eq!(status, 400, "{error}");
        assert!(took < Duration::from_secs(1), "{kind}: {took:?}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("messages[0].content[0].type") && message.contains(kind), "{message}");
        assert_eq!(error["error"]["param"], "messages");
    }
    // No text at all: empty strings, whitespace, empty part lists.
    for messages in [
        json!([{ "role": "user", "content": "" }]),
        json!([{ "role": "system", "content": " " }, { "role": "user", "content": "\n" }]),
        json!([{ "role": "user", "content": [] }]),
        json!([{ "role": "user", "content": [{ "type": "text", "text": "" }] }]),
    ] {
        let (status, error, took) = post(&http, &base, &json!({ "model": MODEL, "messages": messages })).await;
        assert_eq!(status, 400, "{messages}: {error}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(error["error"]["message"].as_str().unwrap().contains("no text"), "{error}");
    }
    assert_eq!(chain.balance(&payer).await.unwrap(), before, "refused requests cost nothing");

    // A request nobody takes: a 504 at the gateway's ceiling, saying no server took it.
    let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "Hello?" }], "max_tokens": 8 });
    let (status, error, took) = post(&http, &base, &body).await;
    assert_eq!(status, 504, "{error}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no server took the request") && message.contains("reclaimed"), "{message}");

    // Settled in the background: reclaimed and closed, only fees spent.
    let settled = Instant::now();
    while requests_of(&chain, &payer).await > 0 {
        assert!(settled.elapsed() < Duration::from_secs(30), "the request was not closed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let spent = before - chain.balance(&payer).await.unwrap();
    assert!(spent > 0 && spent <= 50_000, "only transaction fees are spent: {spent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_declines_is_a_503_naming_the_reason_within_seconds() {
    let chain = Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"));
    let model = Arc::new(CandleBackend::load(&ModelSource::default_model()).expect("the model (`cargo xtask setup`)"));
    let operator = Keypair::new();
    chain.airdrop(&operator.pubkey(), 10_000_000_000).await.unwrap();
    // An operator who takes short prompts only (sealed size in bytes).
    let policy = AcceptPolicy { max_prompt_len: 300, ..AcceptPolicy::default() };
    let server = Server::builder(Arc::clone(&chain), operator, model)
        .program(*chain.program())
        .accept(policy)
        .start()
        .await
        .unwrap();

    let wallet = Keypair::new();
    let payer = wallet.pubkey();
    chain.airdrop(&payer, 10_000_000_000).await.unwrap();
    let before = chain.balance(&payer).await.unwrap();
    let shared: Arc<dyn Chain> = Arc::clone(&chain) as Arc<dyn Chain>;
    let program = *chain.program();
    let base = serve(Gateway::new(Client::with_program(shared, wallet, program), GatewayConfig::new())).await;
    let http = reqwest::Client::new();

    // Too long for this server: declined on chain, and the caller hears why within seconds.
    let long = "Tell me about the history of Paris. ".repeat(8);
    for stream in [false, true] {
        let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": long }], "stream": stream });
        let started = Instant::now();
        let response = http.post(format!("{base}/chat/completions")).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "stream {stream}: {took:?}");
        let error: Value = if stream {
            assert_eq!(status, 200, "{text}");
            let data = text.lines().filter_map(|l| l.strip_prefix("data: ")).find(|d| d.contains("\"error\"")).unwrap();
            serde_json::from_str(data).unwrap()
        } else {
            assert_eq!(status, 503, "{text}");
            serde_json::from_str(&text).unwrap()
        };
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("declined") && message.contains("prompt too large"), "{message}");
        assert_eq!(error["error"]["code"], "declined_by_servers", "{error}");
    }
    // A short one is answered by the same server.
    let body = json!({
        "model": MODEL,
        "temperature": 0,
        "messages": [
            { "role": "system", "content": "You are a helpful assistant." },
            { "role": "user", "content": "What is the capital of France?" },
        ],
    });
    let (status, answer, _) = post(&http, &base, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "The capital of France is Paris.");
    assert_eq!(server.counters().declined, 2);

    // Declined requests were cancelled and closed at once; the answered one closes shortly.
    let settled = Instant::now();
    while requests_of(&chain, &payer).await > 0 {
        assert!(settled.elapsed() < Duration::from_secs(30), "a request was left on chain");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cost = answer["chainference"]["cost_lamports"].as_u64().unwrap();
    let spent = before - chain.balance(&payer).await.unwrap();
    // Two signatures per declined request (its open, and the cancel + close; both prompts fit
    // one transaction), the answered one's open and close, and its cost.
    assert_eq!(spent, cost + 6 * 5_000, "only the answer's cost and the fees are spent");
}
