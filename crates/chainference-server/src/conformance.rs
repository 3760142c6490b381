//! The conformance suite every [`InferenceBackend`] must pass (exported, so third-party
//! backends can run it in their own tests).
//!
//! ```no_run
//! # async fn run(backend: impl chainference_server::InferenceBackend) {
//! use chainference_server::conformance;
//! let report = conformance::run(&backend, &conformance::Prompts::default()).await;
//! assert!(report.failures.is_empty(), "{report:?}");
//! # }
//! ```

// A test suite over small counts it has just produced.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use chainference_core::prompt::{ChatMessage, Role};
use futures::StreamExt;

use crate::backend::{BackendError, FinishReason, Generation, GenerationEvent, InferenceBackend};

/// The prompts the suite uses.
#[derive(Clone, Debug)]
pub struct Prompts {
    /// A question the model answers briefly (it must stop on its own within 200 tokens).
    pub short: Vec<ChatMessage>,
    /// A request for a long answer (it must still be going after 8 tokens).
    pub long: Vec<ChatMessage>,
}

impl Default for Prompts {
    fn default() -> Self {
        Prompts {
            short: vec![
                ChatMessage::new(Role::System, "You are a helpful assistant."),
                ChatMessage::new(Role::User, "What is the capital of France?"),
            ],
            // A story: long under any numerics (llama.cpp on the Q4_1 file answers "count to one
            // hundred" with "One hundred.", Candle on its Q8_0 re-quantization counts).
            long: vec![
                ChatMessage::new(Role::System, "You are a helpful assistant."),
                ChatMessage::new(Role::User, "Write a long story about a lighthouse keeper and a storm."),
            ],
        }
    }
}

/// What the suite found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Checks passed.
    pub passed: Vec<&'static str>,
    /// Checks failed, with why.
    pub failures: Vec<(&'static str, String)>,
}

type Outcome = Result<(), String>;

async fn collect<B: InferenceBackend + ?Sized>(backend: &B, job: Generation) -> Result<Vec<GenerationEvent>, String> {
    let mut stream = backend.generate(job).await.map_err(|e| format!("generate: {e}"))?;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.map_err(|e| format!("stream: {e}"))?);
    }
    Ok(events)
}

fn job(messages: &[ChatMessage], max_tokens: u32) -> Generation {
    Generation { messages: messages.to_vec(), ..Generation::user("", max_tokens) }
}

/// Checks the event order and the token accounting; returns (text, prompt, completion, finish).
fn check_events(events: &[GenerationEvent]) -> Result<(String, u32, u32, FinishReason), String> {
    let Some(GenerationEvent::Prompt { tokens: prompt }) = events.first() else {
        return Err(format!("first event is not Prompt: {:?}", events.first()));
    };
    let Some(GenerationEvent::Done(usage)) = events.last() else {
        return Err(format!("last event is not Done: {:?}", events.last()));
    };
    let mut text = String::new();
    let mut tokens = 0u32;
    for event in &events[1..events.len() - 1] {
        match event {
            GenerationEvent::Text { text: more, tokens: n } => {
                text.push_str(more);
                tokens += n;
            }
            other => return Err(format!("unexpected {other:?} between Prompt and Done")),
        }
    }
    if usage.prompt_tokens != *prompt {
        return Err(format!("Prompt said {prompt} tokens, Done said {}", usage.prompt_tokens));
    }
    if tokens != usage.completion_tokens {
        return Err(format!("Text events carry {tokens} tokens, Done says {}", usage.completion_tokens));
    }
    Ok((text, *prompt, tokens, usage.finish))
}

async fn stops_on_its_own<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Outcome {
    let events = collect(backend, job(&prompts.short, 400)).await?;
    let (text, prompt, completion, finish) = check_events(&events)?;
    if finish != FinishReason::Stop {
        return Err(format!("finished by {finish:?} after {completion} tokens: {text:?}"));
    }
    if text.trim().is_empty() {
        return Err("empty answer".into());
    }
    let counted = backend.prompt_tokens(&prompts.short).await.map_err(|e| e.to_string())?;
    if counted != prompt {
        return Err(format!("prompt_tokens() says {counted}, the generation {prompt}"));
    }
    Ok(())
}

async fn greedy_is_deterministic<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Outcome {
    let a = check_events(&collect(backend, job(&prompts.short, 400)).await?)?;
    let b = check_events(&collect(backend, job(&prompts.short, 400)).await?)?;
    if a.0 != b.0 { Err(format!("{:?} then {:?}", a.0, b.0)) } else { Ok(()) }
}

async fn seeded_sampling_repeats<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Outcome {
    let mut hot = job(&prompts.long, 200);
    hot.max_completion_tokens = 24;
    hot.sampling.temperature = 0.9;
    hot.sampling.seed = 1234;
    let a = check_events(&collect(backend, hot.clone()).await?)?;
    let b = check_events(&collect(backend, hot).await?)?;
    if a.0 != b.0 { Err(format!("same seed, different text: {:?} / {:?}", a.0, b.0)) } else { Ok(()) }
}

async fn budget_and_max_completion_hold<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Outcome {
    let prompt = backend.prompt_tokens(&prompts.long).await.map_err(|e| e.to_string())?;
    let (_, p, completion, finish) = check_events(&collect(backend, job(&prompts.long, prompt + 6)).await?)?;
    if p + completion > prompt + 6 || finish != FinishReason::Length {
        return Err(format!("budget {}: prompt {p} + completion {completion}, {finish:?}", prompt + 6));
    }
    let mut capped = job(&prompts.long, 4_000);
    capped.max_completion_tokens = 8;
    let (_, _, completion, finish) = check_events(&collect(backend, capped).await?)?;
    if completion != 8 || finish != FinishReason::Length {
        return Err(format!("max_completion_tokens 8: got {completion}, {finish:?}"));
    }
    Ok(())
}

async fn a_prompt_over_budget_is_refused<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Outcome {
    match backend.generate(job(&prompts.short, 2)).await {
        Err(BackendError::PromptTooLong { max_tokens: 2, .. }) => Ok(()),
        Err(other) => Err(format!("expected PromptTooLong, got {other}")),
        Ok(_) => Err("a 2-token budget was accepted".into()),
    }
}

async fn dropping_the_stream_cancels<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Outcome {
    let started = std::time::Instant::now();
    let mut stream = backend.generate(job(&prompts.long, 4_000)).await.map_err(|e| e.to_string())?;
    let _ = stream.next().await;
    drop(stream);
    // The backend must be free for the next job at once.
    let events = collect(backend, job(&prompts.short, 400)).await?;
    check_events(&events)?;
    tracing::debug!(elapsed = ?started.elapsed(), "cancel then generate");
    Ok(())
}

/// Runs every check.
pub async fn run<B: InferenceBackend + ?Sized>(backend: &B, prompts: &Prompts) -> Report {
    let mut report = Report::default();
    macro_rules! check {
        ($name:literal, $body:expr) => {
            match $body.await {
                Ok(()) => report.passed.push($name),
                Err(detail) => report.failures.push(($name, detail)),
            }
        };
    }
    check!("stops_on_its_own", stops_on_its_own(backend, prompts));
    check!("greedy_is_deterministic", greedy_is_deterministic(backend, prompts));
    check!("seeded_sampling_repeats", seeded_sampling_repeats(backend, prompts));
    check!("budget_and_max_completion_hold", budget_and_max_completion_hold(backend, prompts));
    check!("a_prompt_over_budget_is_refused", a_prompt_over_budget_is_refused(backend, prompts));
    check!("dropping_the_stream_cancels", dropping_the_stream_cancels(backend, prompts));
    report
}
