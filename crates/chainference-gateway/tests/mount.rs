//! The gateway as a library: mounted under a prefix in an app's own axum router (with the app's
//! own state and routes), served over real HTTP on the embedded chain, with servers run by the
//! server runtime on the real model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chainference_client::{Chain, Client, EmbeddedChain, Keypair, Signer};
use chainference_gateway::{Gateway, GatewayConfig};
use chainference_server::candle::{CandleBackend, CandleConfig, ModelSource};
use chainference_server::runtime::{Server, ServerHandle};
use serde_json::{Value, json};

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
const OTHER: &str = "org/other-model:Q8_0";

/// The app's own state, to show the gateway mounts in a router that has one.
#[derive(Clone)]
struct AppState {
    name: &'static str,
}

async fn health(State(state): State<AppState>) -> &'static str {
    state.name
}

/// The app's own text completions, next to the gateway's routes.
async fn own_completions() -> &'static str {
    "the app's own completions"
}

/// The app's own fallback.
async fn own_fallback() -> (StatusCode, &'static str) {
    (StatusCode::IM_A_TEAPOT, "the app's own fallback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_mounts_under_a_prefix_in_an_app_router() {
    let chain = Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"));
    // Three servers, two models (one offered twice), registered out of order: the real GGUF,
    // loaded once as MODEL and once under another id.
    let source = ModelSource::default_model();
    let model = Arc::new(CandleBackend::load(&source).expect("the model (`cargo xtask setup` fetches it)"));
    let other = Arc::new(
        CandleBackend::load_with(&source, &CandleConfig { model_id: OTHER.into(), ..CandleConfig::default() }).unwrap(),
    );
    let mut servers: Vec<ServerHandle> = Vec::new();
    for backend in [Arc::clone(&other), Arc::clone(&model), Arc::clone(&model)] {
        let wallet = Keypair::new();
        chain.airdrop(&wallet.pubkey(), 10_000_000_000).await.unwrap();
        let server = Server::builder(Arc::clone(&chain), wallet, backend)
            .program(*chain.program())
            .price(2_000_000)
            .start()
            .await
            .unwrap();
        servers.push(server);
    }
    let wallet = Keypair::new();
    chain.airdrop(&wallet.pubkey(), 10_000_000_000).await.unwrap();
    let program = *chain.program();
    let shared: Arc<dyn Chain> = chain;
    let gateway = Gateway::new(Client::with_program(shared, wallet, program), GatewayConfig::new().api_key("sk-test"))
        .token_counter(model);

    let app: Router = Router::new()
        .route("/health", get(health))
        .route("/openai/v1/completions", post(own_completions))
        .nest("/openai", gateway.router())
        .fallback(own_fallback)
        .with_state(AppState { name: "my-app" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();

    // The app's own route still works next to the gateway.
    let response = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "my-app");

    // The gateway's router adds only its two routes: the app's own paths and fallback stay its own
    // (the standalone server's 404s for /v1/completions and unknown paths are not imposed).
    let response = http.post(format!("{base}/openai/v1/completions")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "the app's own completions");
    let response = http.get(format!("{base}/openai/v1/embeddings")).send().await.unwrap();
    assert_eq!(response.status(), 418);

    // The model list, under the prefix: each model once, sorted, in OpenAI's shape.
    let response = http.get(format!("{base}/openai/v1/models")).bearer_auth("sk-test").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let models: Value = response.json().await.unwrap();
    let listed = |id: &str| json!({ "id": id, "object": "model", "created": 0, "owned_by": "chainference" });
    assert_eq!(models, json!({ "object": "list", "data": [listed(MODEL), listed(OTHER)] }));

    // Only under the prefix (elsewhere: the app's fallback).
    let response = http.get(format!("{base}/v1/models")).bearer_auth("sk-test").send().await.unwrap();
    assert_eq!(response.status(), 418);

    // The API key.
    let response = http.get(format!("{base}/openai/v1/models")).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");

    // Chat completions: a bad request and a model nobody serves, in OpenAI's error shape.
    let completions = format!("{base}/openai/v1/chat/completions");
    let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "max_tokens": -3 });
    let response = http.post(&completions).bearer_auth("sk-test").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "max_tokens", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    let body = json!({ "model": "nobody/serves-this:Q8_0", "messages": [{ "role": "user", "content": "hi" }] });
    let response = http.post(&completions).bearer_auth("sk-test").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found", "{error}");

    // A real answer through the mounted gateway, with usage split by the model's tokenizer.
    let body = json!({
        "model": MODEL,
        "messages": [
            { "role": "system", "content": "You are a helpful assistant." },
            { "role": "user", "content": "What is the capital of France?" }
        ],
        "max_tokens": 24,
        "temperature": 0
    });
    let response = http.post(&completions).bearer_auth("sk-test").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(text.contains("Paris"), "{answer}");
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{answer}");
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap(),
        "{answer}"
    );

    serving.abort();
    drop(servers);
}
