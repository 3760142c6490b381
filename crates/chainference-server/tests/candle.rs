//! The Candle backend on the real SmolLM2 GGUF (fetched by `cargo xtask setup`).

#![cfg(feature = "candle")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chainference_core::prompt::{ChatMessage, Role};
use chainference_server::candle::{CandleBackend, ModelSource};
use chainference_server::{FinishReason, Generation, GenerationEvent, InferenceBackend, InferenceBackendExt};
use futures::StreamExt;

/// The France question with a plain system prompt. (Without one, the GGUF's template adds its
/// default system prompt, with which this 135M model rambles in French: a property of the model.)
fn france(max_tokens: u32) -> Generation {
    Generation {
        messages: vec![
            ChatMessage::new(Role::System, "You are a helpful assistant."),
            ChatMessage::new(Role::User, "What is the capital of France?"),
        ],
        ..Generation::user("", max_tokens)
    }
}

fn model() -> CandleBackend {
    CandleBackend::load(&ModelSource::default_model()).expect("the model (run `cargo xtask setup`)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_runs_greedy_and_to_the_contract() {
    let model = model();
    // Tokenizer: TOOLCHAIN.md's known-good ids.
    let ids =
        model.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n").unwrap();
    assert_eq!(ids, [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]);
    for sample in ["Digits 1234567890 split, ünïcödé ✓ 日本語, tabs\tand\nnewlines  spaced", "  leading", "x=3.14159;"]
    {
        let ids = model.encode(sample).unwrap();
        assert_eq!(model.decode(&ids).unwrap(), sample);
    }
    assert_eq!(model.encode("2024").unwrap().len(), 4, "digits are split one by one");

    let (text, usage) = model.complete(france(256)).await.unwrap();
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!(usage.finish, FinishReason::Stop);
    assert_eq!(usage.prompt_tokens, model.prompt_tokens(&france(0).messages).await.unwrap());
    let (again, _) = model.complete(france(256)).await.unwrap();
    assert_eq!(again, text, "greedy is deterministic");

    // Budget: prompt + completion never exceed max_tokens; the stream keeps the event order.
    let counting = Generation::user("Count from one to one hundred.", 0);
    let budget = model.prompt_tokens(&counting.messages).await.unwrap() + 5;
    let mut stream = model.generate(Generation { max_tokens: budget, ..counting }).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap());
    }
    assert!(matches!(events.first(), Some(GenerationEvent::Prompt { .. })));
    let Some(GenerationEvent::Done(limited)) = events.last() else { panic!("no Done: {events:?}") };
    let text_tokens: u32 =
        events.iter().map(|e| if let GenerationEvent::Text { tokens, .. } = e { *tokens } else { 0 }).sum();
    assert_eq!(text_tokens, limited.completion_tokens);
    assert!(limited.billed_tokens() <= u64::from(budget));
    assert_eq!(limited.finish, FinishReason::Length);
    let too_small = model.generate(france(3)).await;
    assert!(too_small.is_err());

    // Seeded sampling repeats itself.
    let mut hot = Generation::user("Write a word.", 64);
    hot.sampling.temperature = 0.9;
    hot.sampling.seed = 7;
    let (a, _) = model.complete(hot.clone()).await.unwrap();
    let (b, _) = model.complete(hot).await.unwrap();
    assert_eq!(a, b);
    println!("weights: {}; answer: {text}", model.weight_format);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_candle_backend_conforms() {
    let model = std::sync::Arc::new(model());
    let report =
        chainference_server::conformance::run(&model, &chainference_server::conformance::Prompts::default()).await;
    println!("{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.passed.len(), 6);
}

/// The hub source, from a local hub cache only (nothing downloads here): the cache layout the
/// `huggingface_hub` tools write (`models--owner--name/refs/<revision>` naming a snapshot).
#[cfg(feature = "hub")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_source_loads_from_the_local_hub_cache() {
    let ModelSource::Path(local) = ModelSource::default_model() else { panic!("the default model is a path") };
    let cache = std::env::temp_dir().join(format!("chainference-hub-{}", std::process::id()));
    let repo_dir = cache.join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF");
    let snapshot = repo_dir.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "0123456789abcdef").unwrap();
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let _ = std::fs::remove_file(snapshot.join(file));
    std::os::unix::fs::symlink(&local, snapshot.join(file)).unwrap();

    let source = ModelSource::Hub {
        repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(),
        file: file.into(),
        revision: "main".into(),
        cache_dir: Some(cache.clone()),
    };
    let fetched = source.fetch().await.unwrap();
    assert_eq!(fetched, ModelSource::Path(snapshot.join(file)));
    let model = CandleBackend::load(&source).unwrap();
    let (text, _) = model.complete(france(64)).await.unwrap();
    assert_eq!(text, "The capital of France is Paris.");

    // A file the cache lacks is a clear error from `load` (which never downloads).
    let missing = ModelSource::Hub {
        repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(),
        file: "absent.gguf".into(),
        revision: "main".into(),
        cache_dir: Some(cache.clone()),
    };
    let Err(err) = CandleBackend::load(&missing) else { panic!("loaded a file that is not there") };
    assert!(err.to_string().contains("not in the hub cache"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
}
