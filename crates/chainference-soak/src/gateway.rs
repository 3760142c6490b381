//! The gateway under load: concurrent OpenAI-API calls, streamed and not, some callers hanging
//! up mid-stream; afterwards none of its requests may be left on chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use serde_json::json;

use crate::load::MODEL;

/// What the gateway's callers saw.
#[derive(Clone, Debug, Default)]
pub struct GatewayLoad {
    /// Calls made.
    pub calls: usize,
    /// Streamed calls.
    pub streamed: usize,
    /// Callers that hung up after the first chunk.
    pub hung_up: usize,
    /// Calls answered 200 with an answer (or a first chunk, for those that hung up).
    pub answered: usize,
    /// Calls the gateway ended without an answer, as its API says it does: 504 when the
    /// request's on-chain timeout passed (reclaimed), 503 when every server declined
    /// (cancelled). Settled, not failed; the chain is checked for what they left.
    pub unanswered: Vec<String>,
    /// Other outcomes: status and body, or the transport error.
    pub failures: Vec<String>,
    /// How long the whole burst took.
    pub elapsed: Duration,
}

/// Waits until the gateway at `base` answers `/v1/models`.
pub async fn wait_ready(http: &reqwest::Client, base: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(response) = http.get(format!("{base}/v1/models")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            anyhow::bail!("the gateway at {base} did not answer within {:.0} s", limit.as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `calls` concurrent chat completions; every other one streamed; every eighth streamed caller
/// hangs up after its first chunk.
pub async fn burst(http: &reqwest::Client, base: &str, calls: usize) -> GatewayLoad {
    let start = Instant::now();
    let url = Arc::new(format!("{base}/v1/chat/completions"));
    let mut tasks = Vec::new();
    for i in 0..calls {
        let (http, url) = (http.clone(), Arc::clone(&url));
        let stream = i % 2 == 0;
        let hang_up = stream && i % 8 == 0;
        tasks.push(tokio::spawn(async move {
            let body = json!({
                "model": MODEL,
                "messages": [{ "role": "user", "content": format!("Name one color of the rainbow ({i}).") }],
                "max_tokens": 24,
                "stream": stream,
            });
            let response = match http.post(url.as_str()).json(&body).send().await {
                Ok(response) => response,
                Err(err) => return (stream, hang_up, Err(format!("call {i}: {}", chain_of(&err)))),
            };
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                let settled = matches!(status.as_u16(), 503 | 504);
                return (
                    stream,
                    hang_up,
                    Err(format!("{}call {i}: {status} {text}", if settled { "settled " } else { "" })),
                );
            }
            if !stream {
                let ok = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["choices"][0]["message"]["content"].as_str().map(|c| !c.is_empty()));
                return (stream, hang_up, if ok == Some(true) { Ok(()) } else { Err(format!("call {i}: no answer")) });
            }
            let mut chunks = response.bytes_stream();
            let mut text = String::new();
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                    Err(err) => return (stream, hang_up, Err(format!("call {i}: stream: {}", chain_of(&err)))),
                }
                if hang_up && text.contains("data: ") {
                    return (stream, hang_up, Ok(())); // dropping the body hangs up
                }
            }
            let done = text.contains("data: [DONE]");
            (stream, hang_up, if done { Ok(()) } else { Err(format!("call {i}: stream ended without [DONE]")) })
        }));
    }
    let mut load = GatewayLoad { calls, ..GatewayLoad::default() };
    for task in tasks {
        match task.await {
            Ok((stream, hang_up, result)) => {
                load.streamed += usize::from(stream);
                load.hung_up += usize::from(hang_up);
                match result {
                    Ok(()) => load.answered += 1,
                    Err(err) => match err.strip_prefix("settled ") {
                        Some(settled) => load.unanswered.push(settled.to_string()),
                        None => load.failures.push(err),
                    },
                }
            }
            Err(err) => load.failures.push(format!("task: {err}")),
        }
    }
    load.elapsed = start.elapsed();
    load
}

/// An error with its sources, so a timeout or a reset says so.
fn chain_of(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
