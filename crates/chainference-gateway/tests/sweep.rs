//! A bad-input sweep of the gateway: several hundred generated bodies (wrong types in every
//! field, empty and huge values, unknown fields, content-part variants, unicode edge cases,
//! duplicate keys, truncated JSON, wrong content types), each answered within a bound with a 4xx
//! and an OpenAI error object or a valid completion: no hang, no 5xx. It ends with every request
//! settled and closed, and lamports conserved.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainference_client::{Chain, Client, EmbeddedChain, Keypair, Signer};
use chainference_gateway::{Gateway, GatewayConfig};
use chainference_server::candle::{CandleBackend, ModelSource};
use chainference_server::runtime::Server;
use common::{requests_of, serve};
use futures::StreamExt;
use serde_json::{Value, json};

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
/// Longest a malformed body may take to be refused, and a valid one to be answered.
const REFUSE_WITHIN: Duration = Duration::from_secs(3);
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

fn base() -> Value {
    json!({ "model": MODEL, "messages": [{ "role": "user", "content": "Say hi" }], "max_tokens": 3, "temperature": 0 })
}

/// One body to send: raw bytes and a content type.
struct Case {
    name: String,
    body: Vec<u8>,
    content_type: &'static str,
}

fn json_case(name: impl Into<String>, value: &Value) -> Case {
    Case { name: name.into(), body: value.to_string().into_bytes(), content_type: "application/json" }
}

fn cases() -> Vec<Case> {
    let odd_values = || {
        vec![
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(""),
            json!("x"),
            json!([]),
            json!({}),
            json!([1, 2]),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!("a".repeat(70_000)),
        ]
    };
    let mut cases = Vec::new();
    // Every field, every odd value.
    for field in [
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "seed",
        "stream",
        "stream_options",
        "user",
        "top_p",
    ] {
        for value in odd_values() {
            let mut body = base();
            body[field] = value.clone();
            cases.push(json_case(format!("{field} = {}", short(&value)), &body));
        }
    }
    // Messages and their parts.
    let messages = [
        json!([]),
        json!([{}]),
        json!([{ "role": "user" }]),
        json!([{ "content": "hi" }]),
        json!([{ "role": 1, "content": "hi" }]),
        json!([{ "role": "tool", "content": "hi" }]),
        json!([{ "role": "robot", "content": "hi" }]),
        json!([{ "role": "user", "content": null }]),
        json!([{ "role": "user", "content": 7 }]),
        json!([{ "role": "user", "content": {} }]),
        json!([{ "role": "user", "content": [] }]),
        json!([{ "role": "user", "content": [{}] }]),
        json!([{ "role": "user", "content": [{ "type": "text" }] }]),
        json!([{ "role": "user", "content": [{ "type": "text", "text": 1 }] }]),
        json!([{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "http://x/y.png" } }] }]),
        json!([{ "role": "user", "content": [{ "type": "input_audio", "input_audio": {} }] }]),
        json!([{ "role": "user", "content": [{ "type": "file" }] }]),
        json!([{ "role": "user", "content": [{ "type": "video" }] }]),
        json!([{ "role": "user", "content": "" }]),
        json!([{ "role": "user", "content": " \n\t " }]),
        json!([{ "role": "system", "content": "" }, { "role": "user", "content": "" }]),
        json!("not a list"),
        json!([[{ "role": "user", "content": "hi" }]]),
        json!([{ "role": "user", "content": "hi", "name": "x", "extra": [1, 2] }]),
        json!([{ "role": "user", "content": [{ "type": "text", "text": "hi", "cache_control": {} }] }]),
        json!([{ "role": "assistant", "content": [{ "type": "refusal", "refusal": "no" }] }, { "role": "user", "content": "hi" }]),
        json!([{ "role": "developer", "content": "Be brief." }, { "role": "user", "content": "hi" }]),
    ];
    for (i, value) in messages.iter().enumerate() {
        let mut body = base();
        body["messages"] = value.clone();
        cases.push(json_case(format!("messages variant {i}"), &body));
    }
    // Unicode edge cases in the content.
    for text in ["\u{0}", "\u{202e}abc", "👍🏽🇫🇷", "\u{feff}hi", "é\u{301}", "\u{10ffff}", "日本語", "a\u{0}b"]
    {
        let mut body = base();
        body["messages"][0]["content"] = json!(text);
        cases.push(json_case(format!("unicode {text:?}"), &body));
    }
    // Unknown fields, n, tools and friends: ignored or refused, never a hang.
    for (field, value) in [
        ("n", json!(2)),
        ("tools", json!([{ "type": "function", "function": { "name": "f" } }])),
        ("response_format", json!({ "type": "json_object" })),
        ("logprobs", json!(true)),
        ("frobnicate", json!({ "deep": [1, { "x": null }] })),
    ] {
        let mut body = base();
        body[field] = value;
        cases.push(json_case(format!("extra {field}"), &body));
    }
    // Raw bytes: not JSON, truncated, duplicate keys, lone surrogates, wrong types at the top.
    let valid = base().to_string();
    for cut in [0, 1, 2, valid.len() / 3, valid.len() / 2, valid.len() - 1] {
        cases.push(Case {
            name: format!("truncated at {cut}"),
            body: valid.as_bytes()[..cut].to_vec(),
            content_type: "application/json",
        });
    }
    for (name, raw) in [
        (
            "duplicate model",
            format!(
                r#"{{"model":"x/y","model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":3}}"#
            ),
        ),
        (
            "duplicate messages",
            format!(
                r#"{{"model":"{MODEL}","messages":[],"messages":[{{"role":"user","content":"hi"}}],"max_tokens":3}}"#
            ),
        ),
        ("lone surrogate", format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"\ud800"}}]}}"#)),
        ("array", "[1,2,3]".to_string()),
        ("string", "\"hello\"".to_string()),
        ("number", "42".to_string()),
        ("null", "null".to_string()),
        ("garbage", "{{{{".to_string()),
        ("nul bytes", "\u{0}\u{0}".to_string()),
    ] {
        cases.push(Case { name: name.into(), body: raw.into_bytes(), content_type: "application/json" });
    }
    cases.push(Case { name: "invalid utf-8".into(), body: vec![0xff, 0xfe, b'{'], content_type: "application/json" });
    cases.push(Case { name: "too large".into(), body: vec![b' '; 300 * 1024], content_type: "application/json" });
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""] {
        cases.push(Case {
            name: format!("content type {content_type:?}"),
            body: valid.clone().into_bytes(),
            content_type,
        });
    }
    cases
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 24 { format!("{}… ({} bytes)", &text[..20], text.len()) } else { text }
}

/// Sends one case; returns the status and whether the body was an answer (vs an error object).
async fn send(http: &reqwest::Client, url: &str, case: &Case) -> (u16, Result<bool, String>) {
    let mut request = http.post(url).body(case.body.clone());
    if !case.content_type.is_empty() {
        request = request.header("content-type", case.content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let streamed = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    if streamed {
        let mut events = response.bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = events.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        let done = text.contains("data: [DONE]");
        let errored = text.contains("\"error\"");
        return (status, if done && !errored { Ok(true) } else { Err(format!("stream ended badly: {text}")) });
    }
    let value: Value = response.json().await.unwrap_or(Value::Null);
    let verdict = if status == 200 {
        if value["choices"][0]["message"]["content"].is_string() {
            Ok(true)
        } else {
            Err(format!("200 without an answer: {value}"))
        }
    } else if value["error"]["message"].is_string() && value["error"]["type"].is_string() {
        Ok(false)
    } else {
        Err(format!("{status} without an OpenAI error object: {value}"))
    };
    (status, verdict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_or_odd_body_gets_a_prompt_answer_and_nothing_is_stranded() {
    let chain = Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"));
    let model = Arc::new(CandleBackend::load(&ModelSource::default_model()).expect("the model (`cargo xtask setup`)"));
    let operator = Keypair::new();
    chain.airdrop(&operator.pubkey(), 10_000_000_000).await.unwrap();
    let server = Server::builder(Arc::clone(&chain), operator, Arc::clone(&model))
        .program(*chain.program())
        .price(2_000_000)
        .max_concurrent(2)
        .start()
        .await
        .unwrap();
    let wallet = Keypair::new();
    let payer = wallet.pubkey();
    chain.airdrop(&payer, 10_000_000_000).await.unwrap();
    let program = *chain.program();
    let shared: Arc<dyn Chain> = Arc::clone(&chain) as Arc<dyn Chain>;
    let gateway =
        Gateway::new(Client::with_program(shared, wallet, program), GatewayConfig::new().request_timeout_secs(60))
            .token_counter(model);
    let url = format!("{}/chat/completions", serve(gateway).await);
    let (total_before, fees_before) = (chain.total_lamports(), chain.fees_charged());

    let cases = cases();
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let http = reqwest::Client::new();
    let (mut refused, mut answered, mut slowest_refusal) = (0usize, 0usize, Duration::ZERO);
    let outcomes = futures::stream::iter(cases.iter().map(|case| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(ANSWER_WITHIN, send(&http, &url, case)).await;
            (case, outcome, started.elapsed())
        }
    }))
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    for (case, outcome, took) in outcomes {
        let Ok((status, verdict)) = outcome else { panic!("{}: no answer within {ANSWER_WITHIN:?}", case.name) };
        assert!(status < 500, "{}: {status} {verdict:?}", case.name);
        match verdict {
            Ok(true) => answered += 1,
            Ok(false) => {
                assert!((400..500).contains(&status), "{}: {status}", case.name);
                assert!(took < REFUSE_WITHIN, "{}: refused after {took:?}", case.name);
                slowest_refusal = slowest_refusal.max(took);
                refused += 1;
            }
            Err(problem) => panic!("{}: {problem}", case.name),
        }
    }
    println!(
        "gateway sweep: {} bodies sent, {refused} refused (4xx, slowest {slowest_refusal:?}), {answered} answered, none hung",
        cases.len()
    );
    assert!(answered > 0 && refused > 0);

    // Every request settles and closes in the background; lamports are conserved.
    let started = Instant::now();
    loop {
        let left = requests_of(&chain, &payer).await;
        if left == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{left} request accounts left");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(server);
    assert_eq!(total_before - chain.total_lamports(), chain.fees_charged() - fees_before, "lamports conserved");
}
