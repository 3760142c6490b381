//! The OpenAI-compatible backend against a real server running the same GGUF
//! (`llama-cpp-python[server]`, which `cargo xtask test` builds from PyPI's source, starts on a
//! free port and names in `CHAINFERENCE_OPENAI_URL`, model alias in `CHAINFERENCE_OPENAI_MODEL`).
//! Without the variable these tests say so and pass, unless `CHAINFERENCE_REQUIRE_OPENAI=1`.

#![cfg(all(feature = "openai", feature = "candle"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::Duration;

use chainference_chain::{Chain, EmbeddedChain, Keypair, Signer};
use chainference_client::{Ask, Client};
use chainference_core::prompt::{ChatMessage, Role};
use chainference_server::candle::{CandleBackend, DEFAULT_MODEL_ID, ModelSource};
use chainference_server::openai::{OpenAiBackend, OpenAiConfig};
use chainference_server::runtime::Server;
use chainference_server::{BackendError, Generation, InferenceBackend, InferenceBackendExt, conformance};

fn server_url() -> Option<(String, String)> {
    match std::env::var("CHAINFERENCE_OPENAI_URL") {
        Ok(url) => Some((url, std::env::var("CHAINFERENCE_OPENAI_MODEL").unwrap_or_else(|_| "smollm2".into()))),
        Err(_) => {
            assert!(
                std::env::var("CHAINFERENCE_REQUIRE_OPENAI").is_err(),
                "CHAINFERENCE_REQUIRE_OPENAI is set but CHAINFERENCE_OPENAI_URL is not"
            );
            eprintln!("skipped: no OpenAI-compatible server (CHAINFERENCE_OPENAI_URL); `cargo xtask test` starts one");
            None
        }
    }
}

fn backend(url: &str, alias: &str) -> OpenAiBackend {
    OpenAiBackend::new(OpenAiConfig::new(url, DEFAULT_MODEL_ID, alias)).unwrap()
}

fn france() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are a helpful assistant."),
        ChatMessage::new(Role::User, "What is the capital of France?"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_backend_passes_the_conformance_suite() {
    let Some((url, alias)) = server_url() else { return };
    let backend = backend(&url, &alias);
    let listed = backend.remote_models().await.unwrap();
    assert!(listed.contains(&alias), "{listed:?}");

    let report = conformance::run(&backend, &conformance::Prompts::default()).await;
    println!("conformance (llama.cpp over HTTP): {} passed {:?}", report.passed.len(), report.passed);
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    // Same GGUF, same tokenizer and template: the prompt counts agree with the Candle backend,
    // and so does the greedy answer.
    let candle = CandleBackend::load(&ModelSource::default_model()).expect("the model (run `cargo xtask setup`)");
    assert_eq!(backend.prompt_tokens(&france()).await.unwrap(), candle.prompt_tokens(&france()).await.unwrap());
    let job = Generation { messages: france(), ..Generation::user("", 256) };
    let (over_http, usage) = backend.complete(job.clone()).await.unwrap();
    let (local, local_usage) = candle.complete(job).await.unwrap();
    println!("llama.cpp: {over_http:?} {usage:?}\ncandle:    {local:?} {local_usage:?}");
    assert_eq!(over_http, "The capital of France is Paris.");
    assert_eq!(over_http, local);
    assert_eq!(usage, local_usage, "the same tokens, counted the same");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let backend = backend(&format!("http://127.0.0.1:{port}/v1"), "smollm2");
    let err = backend.complete(Generation::user("hi", 64)).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_sells_an_existing_llama_cpp_server() {
    let Some((url, alias)) = server_url() else { return };
    let chain = Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"));
    let (server_wallet, client_wallet) = (Keypair::new(), Keypair::new());
    for wallet in [&server_wallet, &client_wallet] {
        chain.airdrop(&wallet.pubkey(), 10_000_000_000).await.unwrap();
    }
    let start_total = chain.total_lamports();
    let server = Server::builder(Arc::clone(&chain), server_wallet, backend(&url, &alias))
        .program(*chain.program())
        .price(1_500_000)
        .flush_interval(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let request = client.ask(Ask::chat(DEFAULT_MODEL_ID, france()).max_tokens(300)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(120), request.wait()).await.unwrap().unwrap();
    assert!(answer.text.contains("Paris"), "{}", answer.text);
    assert_eq!(answer.receipt.server, server.authority());
    assert_eq!(answer.receipt.price_per_mtok, 1_500_000);
    request.close().await.unwrap();
    let counters = server.shutdown().await.unwrap();
    assert_eq!(counters.completed, 1);
    let fees = counters.fees_paid + request.transaction_fees();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}
