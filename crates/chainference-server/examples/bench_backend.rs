//! Measures the Candle backend bare and through the embedded chain; prints one JSON line per
//! mode for `cargo xtask bench-backend`, which runs it per thread count (set with
//! `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`, read once by Candle) and puts it next to llama.cpp.
//!
//! `bench_backend bare` — prompt tokens/s (a long prompt), time to first token (the France
//! prompt), generation tokens/s (a story, 128 tokens); medians of 3 runs after a warm-up.
//! `bench_backend chain` — the same story through the server runtime and the client SDK on the
//! embedded chain: time from the request being published to the first decrypted text, and
//! generation tokens/s as the client sees it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainference_chain::{Chain, EmbeddedChain, Keypair, Signer};
use chainference_client::{AnswerEvent, Ask, Client};
use chainference_core::prompt::{ChatMessage, Role};
use chainference_server::candle::{CandleBackend, ModelSource};
use chainference_server::runtime::Server;
use chainference_server::{Generation, GenerationEvent, InferenceBackend};
use futures::StreamExt;

const GENERATED: u32 = 128;
const RUNS: usize = 3;

fn system(user: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new(Role::System, "You are a helpful assistant."), ChatMessage::new(Role::User, user)]
}

fn france() -> Vec<ChatMessage> {
    system("What is the capital of France?")
}

fn story() -> Vec<ChatMessage> {
    system("Write a long story about a lighthouse keeper and a storm.")
}

fn long_prompt() -> Vec<ChatMessage> {
    let passage = "The lighthouse stood on a rock at the edge of the bay, and every night its keeper climbed \
        the spiral stairs to light the lamp, wind the clockwork and polish the great lens. ";
    system(&format!("Summarize this passage in one sentence: {}", passage.repeat(6)))
}

struct Timing {
    prompt_tokens: u32,
    first_text: Duration,
    completion_tokens: u32,
    /// From the first text to the last.
    streaming: Duration,
}

async fn time_generation(backend: &CandleBackend, messages: Vec<ChatMessage>, completion: u32) -> Timing {
    let job = Generation { messages, max_completion_tokens: completion, ..Generation::user("", 4096) };
    let started = Instant::now();
    let mut stream = backend.generate(job).await.expect("generate");
    let (mut first, mut last) = (None, Duration::ZERO);
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    while let Some(event) = stream.next().await {
        match event.expect("generation") {
            GenerationEvent::Prompt { tokens } => prompt_tokens = tokens,
            GenerationEvent::Text { .. } => {
                first.get_or_insert(started.elapsed());
                last = started.elapsed();
            }
            GenerationEvent::Done(usage) => completion_tokens = usage.completion_tokens,
            _ => {}
        }
    }
    let first_text = first.unwrap_or(last);
    Timing { prompt_tokens, first_text, completion_tokens, streaming: last.saturating_sub(first_text) }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn per_second(tokens: u32, over: Duration) -> f64 {
    if over.is_zero() { 0.0 } else { f64::from(tokens) / over.as_secs_f64() }
}

async fn bare(backend: &CandleBackend) {
    let _ = time_generation(backend, france(), 8).await;
    let (mut prompt_tps, mut ttft, mut gen_tps, mut story_ttft) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let long = time_generation(backend, long_prompt(), 1).await;
        prompt_tps.push(per_second(long.prompt_tokens, long.first_text));
        let short = time_generation(backend, france(), 1).await;
        ttft.push(short.first_text.as_secs_f64() * 1000.0);
        let story = time_generation(backend, story(), GENERATED).await;
        gen_tps.push(per_second(story.completion_tokens.saturating_sub(1), story.streaming));
        story_ttft.push(story.first_text.as_secs_f64() * 1000.0);
    }
    let long_tokens = time_generation(backend, long_prompt(), 1).await.prompt_tokens;
    println!(
        "{{\"mode\":\"bare\",\"prompt_tokens\":{long_tokens},\"prompt_tps\":{:.1},\"ttft_ms\":{:.1},\"gen_tps\":{:.1},\"story_ttft_ms\":{:.1}}}",
        median(prompt_tps),
        median(ttft),
        median(gen_tps),
        median(story_ttft)
    );
}

async fn chain(backend: Arc<CandleBackend>) {
    let chain = Arc::new(EmbeddedChain::start().expect("embedded chain (cargo xtask build-sbf)"));
    let (server_wallet, client_wallet) = (Keypair::new(), Keypair::new());
    for wallet in [&server_wallet, &client_wallet] {
        chain.airdrop(&wallet.pubkey(), 100_000_000_000).await.expect("airdrop");
    }
    let story_prompt = backend.prompt_tokens(&story()).await.expect("prompt tokens");
    let server = Server::builder(Arc::clone(&chain), server_wallet, Arc::clone(&backend))
        .program(*chain.program())
        .price(1_000_000)
        .start()
        .await
        .expect("server");
    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let (mut ttft, mut gen_tps) = (Vec::new(), Vec::new());
    for run in 0..=RUNS {
        let ask = Ask::chat(backend.model_id(), story()).max_tokens(2048).max_completion_tokens(GENERATED);
        let request = client.ask(ask).await.expect("ask");
        let published = Instant::now();
        let mut events = request.events();
        let (mut first, mut first_text, mut last, mut tokens) = (None, String::new(), Duration::ZERO, 0u64);
        while let Some(event) = events.next().await {
            match event.expect("answer") {
                AnswerEvent::Text(text) => {
                    if first.is_none() {
                        first = Some(published.elapsed());
                        first_text = text;
                    }
                    last = published.elapsed();
                }
                AnswerEvent::Completed(receipt) => {
                    tokens = receipt.tokens;
                    break;
                }
                _ => {}
            }
        }
        request.close().await.expect("close");
        if run == 0 {
            continue; // warm-up
        }
        let first = first.unwrap_or(last);
        let completion = u32::try_from(tokens.saturating_sub(u64::from(story_prompt))).unwrap_or(0);
        ttft.push(first.as_secs_f64() * 1000.0);
        // The client sees text in flushes: the tokens after the first flush over the time from the
        // first flush to the last, as the bare figure counts the tokens after the first one.
        let in_first = u32::try_from(backend.encode(&first_text).map_or(1, |ids| ids.len())).unwrap_or(1);
        gen_tps.push(per_second(completion.saturating_sub(in_first), last.saturating_sub(first)));
    }
    drop(server.shutdown().await);
    println!("{{\"mode\":\"chain\",\"ttft_ms\":{:.1},\"gen_tps\":{:.1}}}", median(ttft), median(gen_tps));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "bare".into());
    let backend = Arc::new(CandleBackend::load(&ModelSource::default_model()).expect("the model (cargo xtask setup)"));
    match mode.as_str() {
        "bare" => bare(&backend).await,
        "chain" => chain(backend).await,
        other => {
            eprintln!("usage: bench_backend bare|chain (got {other})");
            std::process::exit(2);
        }
    }
}
