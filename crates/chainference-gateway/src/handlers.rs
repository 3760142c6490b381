//! The routes: the model list, chat completions (whole or streamed), and settlement in the
//! background.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chainference_client::core::model::ModelId;
use chainference_client::core::state::RequestStatus;
use chainference_client::{
    AnswerEvent, Ask, Chain, ChatMessage, ClientError, PendingRequest, Policy, Receipt, Role, ServerQuery,
};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{ApiError, Gateway, MAX_BODY};

impl Gateway {
    /// Checks `Authorization: Bearer <key>` when the gateway has a key.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if self.config.authorizes(given) { Ok(()) } else { Err(ApiError::invalid_api_key()) }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `/v1/completions` (standalone only): not served (see [`ApiError::legacy_completions`]), said
/// in OpenAI's shape so its clients raise a `NotFoundError` that names the alternative.
pub(crate) async fn legacy_completions() -> ApiError {
    ApiError::legacy_completions()
}

/// Any other path (standalone [`Gateway::serve`] only): OpenAI's "Invalid URL" 404.
pub(crate) async fn unknown_url(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::unknown_url(StatusCode::NOT_FOUND, method.as_str(), uri.path())
}

/// A served path with another method (standalone only): a 405 in the same shape.
pub(crate) async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::unknown_url(StatusCode::METHOD_NOT_ALLOWED, method.as_str(), uri.path())
}

/// `GET /v1/models`: each model an active server offers, once, sorted.
pub(crate) async fn models(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    gateway.authorize(&headers)?;
    let discovery = gateway.client.servers(&ServerQuery::any_model()).await?;
    let mut offered: Vec<&str> = discovery
        .eligible
        .iter()
        .flat_map(|server| server.offers.iter().map(|(model, _price)| model.as_str()))
        .collect();
    offered.sort_unstable();
    offered.dedup();
    let data: Vec<Value> = offered
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "chainference" }))
        .collect();
    Ok(axum::Json(json!({ "object": "list", "data": data })))
}

/// A parsed chat completion request.
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    max_tokens: u32,
    temperature: f32,
    seed: Option<u64>,
    /// Texts that end the answer (OpenAI's `stop`).
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    /// The billable budget: `max_tokens` plus the gateway's prompt allowance.
    budget: u32,
}

fn parse_request(body: &[u8], default_max_tokens: u32) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::invalid_request(format!("We could not parse the JSON body of your request: {err}"), None)
    })?;
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid_request("you must provide a model parameter", Some("model")))?
        .to_string();
    let raw = value
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid_request("'messages' must be a non-empty array", Some("messages")))?;
    refuse_unsupported(&value)?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, message) in raw.iter().enumerate() {
        let role = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(ApiError::invalid_request(
                    format!("messages[{i}].role: unsupported role {other:?}"),
                    Some("messages"),
                ));
            }
        };
        let content = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => text_of_parts(i, parts)?,
            _ => {
                return Err(ApiError::invalid_request(
                    format!("messages[{i}].content must be a string or an array of text content parts"),
                    Some("messages"),
                ));
            }
        };
        messages.push(ChatMessage::new(role, content));
    }
    // The gateway's policy: a prompt with no text at all has nothing to answer, so it is refused
    // here, before the caller pays for a request (OpenAI would answer it; an empty user message
    // beside a system message still goes through).
    if messages.iter().all(|m| m.content.trim().is_empty()) {
        return Err(ApiError::invalid_request(
            "the messages hold no text: at least one message needs non-empty content",
            Some("messages"),
        ));
    }
    let max_tokens =
        match value.get("max_completion_tokens").or_else(|| value.get("max_tokens")) {
            None | Some(Value::Null) => default_max_tokens,
            Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid_request("max_tokens must be a positive integer", Some("max_tokens"))
            })?,
        };
    let temperature = match value.get("temperature") {
        None | Some(Value::Null) => 1.0,
        Some(v) => {
            let t = v.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or_else(|| {
                ApiError::invalid_request("temperature must be a number between 0 and 2", Some("temperature"))
            })?;
            #[allow(clippy::cast_possible_truncation)] // in 0..=2
            let t = t as f32;
            t
        }
    };
    let seed = match value.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ApiError::invalid_request("seed must be an integer", Some("seed")))?),
    };
    let stop = parse_stop(value.get("stop"))?;
    let stream = value.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = value.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    Ok(ChatRequest { model, messages, max_tokens, temperature, seed, stop, stream, include_usage, budget: max_tokens })
}

/// OpenAI's `stop`: null, one string, or an array of up to four strings; each non-empty and
/// within the protocol's length (core's rule, checked here so the caller hears it as a 400).
fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    use chainference_client::core::prompt::{MAX_STOP_LEN, MAX_STOP_SEQUENCES, check_stop_sequences};
    let invalid = || {
        ApiError::invalid_request(
            format!(
                "stop must be a string or an array of at most {MAX_STOP_SEQUENCES} strings, each 1 to \
                 {MAX_STOP_LEN} bytes"
            ),
            Some("stop"),
        )
    };
    let stop = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => {
            many.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(invalid)?
        }
        Some(_) => return Err(invalid()),
    };
    check_stop_sequences(&stop).map_err(|_| invalid())?;
    Ok(stop)
}

/// Features of OpenAI's API the network does not offer, refused by name rather than silently
/// ignored: several choices, tool calls, structured output.
fn refuse_unsupported(value: &Value) -> Result<(), ApiError> {
    let present = |field: &str| value.get(field).is_some_and(|v| !v.is_null());
    match value.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(ApiError::invalid_request(
                "n: only one choice per request is supported; send several requests for several answers",
                Some("n"),
            ));
        }
    }
    for field in ["tools", "tool_choice", "functions", "function_call"] {
        if present(field) {
            return Err(ApiError::invalid_request(
                format!("{field}: tool and function calling are not supported by the models on this network"),
                Some(field),
            ));
        }
    }
    if present("response_format") && value.pointer("/response_format/type").and_then(Value::as_str) != Some("text") {
        return Err(ApiError::invalid_request(
            "response_format: only {\"type\": \"text\"} is supported (no JSON mode or schemas)",
            Some("response_format"),
        ));
    }
    Ok(())
}

/// The text of `messages[i]`'s content parts, joined. The models on this network read text
/// only, so an image, audio or file part is refused by name rather than silently dropped.
fn text_of_parts(i: usize, parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text") {
                Some(Value::String(piece)) => text.push_str(piece),
                _ => {
                    return Err(ApiError::invalid_request(
                        format!("messages[{i}].content[{j}].text must be a string"),
                        Some("messages"),
                    ));
                }
            },
            // An assistant's earlier refusal is text the model wrote.
            Some("refusal") => {
                if let Some(piece) = part.get("refusal").and_then(Value::as_str) {
                    text.push_str(piece);
                }
            }
            Some(other) => {
                return Err(ApiError::invalid_request(
                    format!(
                        "messages[{i}].content[{j}].type: '{other}' content is not supported; the models on this \
                         network read text only"
                    ),
                    Some("messages"),
                ));
            }
            None => {
                return Err(ApiError::invalid_request(
                    format!("messages[{i}].content[{j}] must be an object with a 'type'"),
                    Some("messages"),
                ));
            }
        }
    }
    Ok(text)
}

/// `POST /v1/chat/completions`: one sealed request, answered whole or as server-sent events.
pub(crate) async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    gateway.authorize(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(MAX_BODY)
        } else {
            ApiError::invalid_request(rejection.body_text(), None)
        }
    })?;
    let mut request = parse_request(&body, gateway.config.default_max_tokens)?;
    request.budget = request.max_tokens.saturating_add(gateway.config.prompt_allowance);
    let budget = request.budget;
    let mut ask = Ask::chat(request.model.clone(), request.messages.clone())
        .max_tokens(budget)
        .max_completion_tokens(request.max_tokens)
        .temperature(request.temperature)
        .stop(request.stop.clone())
        .timeout_secs(gateway.config.request_timeout_secs)
        .best(1, Policy::MostReliable);
    if let Some(seed) = request.seed {
        ask = ask.seed(seed);
    }
    let pending = gateway.client.ask(ask).await?;
    let id = format!("chatcmpl-{}", pending.address());
    let created = now();
    if request.stream {
        return Ok(stream_response(gateway, pending, request, id, created).into_response());
    }
    // In its own task, so a caller who hangs up does not strand the request: it still settles
    // and closes.
    let chain = Arc::clone(gateway.client.chain());
    let waited = tokio::spawn(async move {
        let answer = match pending.wait().await {
            Ok(answer) => Ok(answer),
            Err(err) => Err(wait_failed(&pending, err).await),
        };
        settle_later(chain, pending);
        answer
    });
    let answer = waited
        .await
        .map_err(|err| ApiError::upstream(ClientError::Invalid(format!("the request task failed: {err}"))))??;
    let usage = usage(&gateway, &request.model, &request.messages, answer.receipt.tokens).await;
    let finish = finish_reason(&gateway, &request.model, usage, request.max_tokens, budget);
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": answer.text }, "finish_reason": finish }],
        "usage": usage_json(usage),
        "chainference": receipt_json(&answer.receipt),
    });
    Ok(axum::Json(body).into_response())
}

/// The caller's error when waiting for an answer failed, streamed or not. A passed deadline
/// becomes a 504 saying what happened: no server took the request, or which one did and went
/// silent; the stake comes back by the reclaim in [`settle_later`].
async fn wait_failed(pending: &PendingRequest<Arc<dyn Chain>>, err: ClientError) -> ApiError {
    if !matches!(err, ClientError::DeadlinePassed { .. }) {
        return ApiError::upstream(err);
    }
    let what = match pending.state().await {
        Ok(state) if state.status == RequestStatus::Completed => {
            "the request was answered just as its deadline passed; send it again to read the answer".to_string()
        }
        Ok(state) => match state.locked_by {
            None => "no server took the request before its deadline".to_string(),
            Some(server) => format!("server {server} took the request and did not finish it before its deadline"),
        },
        Err(_) => "the request's deadline passed before it was answered".to_string(),
    };
    ApiError::upstream(err).with_message(format!("{what}; the stake will be reclaimed"))
}

/// `(prompt, completion, total)`: the billed total, split by the token counter when the
/// gateway has one for the request's model.
async fn usage(gateway: &Gateway, model: &str, messages: &[ChatMessage], billed: u64) -> (u64, u64, u64) {
    let prompt = match counter_for(gateway, model) {
        Some(counter) => counter.prompt_tokens(messages).await.map_or(0, u64::from).min(billed),
        None => 0,
    };
    (prompt, billed.saturating_sub(prompt), billed)
}

/// The token counter, when it runs the same model as the request (another model's tokenizer
/// would count wrong).
fn counter_for<'a>(gateway: &'a Gateway, model: &str) -> Option<&'a Arc<dyn chainference_server::InferenceBackend>> {
    let canonical = |id: &str| ModelId::parse(id).map(|id| id.canonical()).ok();
    gateway
        .token_counter
        .as_ref()
        .filter(|counter| canonical(counter.model_id()).is_some_and(|c| Some(c) == canonical(model)))
}

/// "length" when the answer used its whole allowance: the completion tokens when the gateway
/// can split the bill, else the whole budget.
fn finish_reason(
    gateway: &Gateway,
    model: &str,
    (_, completion, total): (u64, u64, u64),
    max_tokens: u32,
    budget: u32,
) -> &'static str {
    let used_up = if counter_for(gateway, model).is_some() {
        completion >= u64::from(max_tokens)
    } else {
        total >= u64::from(budget)
    };
    if used_up { "length" } else { "stop" }
}

fn usage_json((prompt, completion, total): (u64, u64, u64)) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total })
}

fn receipt_json(receipt: &Receipt) -> Value {
    json!({
        "request": receipt.request.to_string(),
        "server": receipt.server.to_string(),
        "billed_tokens": receipt.tokens,
        "price_per_mtok": receipt.price_per_mtok,
        "cost_lamports": receipt.cost,
        "fee_lamports": receipt.fee,
        "refund_lamports": receipt.refund,
    })
}

/// How long a settled request waits for the gateway's next open transaction to close it
/// (no signature of its own) before it is closed alone.
const CLOSE_FLUSH_DELAY: Duration = Duration::from_secs(3);

/// How long settling a request keeps trying through chain failures before it gives up (and
/// says so in the log): far past any deadline, so only a chain gone for good stops it.
const SETTLE_PATIENCE: Duration = Duration::from_secs(600);

/// Failures of one settling task, and when they began.
#[derive(Default)]
struct Patience {
    since: Option<tokio::time::Instant>,
}

impl Patience {
    /// Logs a failed step; `true` once steps have failed for [`SETTLE_PATIENCE`] (give up).
    /// The request moved on: the failures so far are over.
    fn recovered(&mut self) {
        self.since = None;
    }

    fn failed(&mut self, request: chainference_client::Address, what: &str, err: &dyn std::fmt::Display) -> bool {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        let give_up = since.elapsed() >= SETTLE_PATIENCE;
        if give_up {
            tracing::error!(%request, error = %err, "{what} kept failing; the request is left for `chainference history`");
        } else {
            tracing::warn!(%request, error = %err, "{what} failed; trying again");
        }
        give_up
    }
}

/// The gateway's wallet is the client: once a request is settled, close it to get its rent
/// back (inside the next request's open transaction under load, or alone after a short wait);
/// one nobody answered by its deadline is reclaimed first. A failing step (the RPC refusing for
/// a while, a request completed just as it was reclaimed) is tried again from a fresh read of
/// the request, never dropped: a caller who hung up has nobody else to settle their request.
fn settle_later(chain: Arc<dyn Chain>, pending: PendingRequest<Arc<dyn Chain>>) {
    tokio::spawn(async move {
        let request = pending.address();
        let mut patience = Patience::default();
        let mut last_status = None;
        loop {
            let state = match pending.state().await {
                Ok(state) => {
                    // A step that keeps failing on a request that does not move is not forgiven.
                    if last_status.replace(state.status) != Some(state.status) {
                        patience.recovered();
                    }
                    state
                }
                // Closed: by this task's close, by another task's batch that took this request
                // along, or (read once more after a pause, in case a restarting node answered
                // from an old bank) never to come back.
                Err(chainference_client::ClientError::RequestNotFound(_)) => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if matches!(pending.state().await, Err(chainference_client::ClientError::RequestNotFound(_))) {
                        return;
                    }
                    continue;
                }
                Err(err) => {
                    if patience.failed(request, "reading the request", &err) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            // Every allowed server declined and nobody follows it (a streaming caller hung up):
            // give it up now rather than at the deadline.
            if state.status == RequestStatus::Open && state.declined_by_all {
                if let Err(err) = pending.give_up_if_refused().await
                    && patience.failed(request, "giving up a declined request", &err)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            if state.status.is_terminal() {
                if let Err(err) = pending.close_later().await {
                    if patience.failed(request, "queueing a settled request to close", &err) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                tokio::time::sleep(CLOSE_FLUSH_DELAY).await;
                // Another task's batch may hold this request (close_finished takes the whole
                // queue): only its account being gone ends this task, at the top of the loop.
                match pending.client().close_finished().await {
                    Ok(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    // Still queued: the next open or the next try closes it.
                    Err(err) => {
                        if patience.failed(request, "closing settled requests", &err) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                }
            }
            match chain.clock().await {
                Ok(clock) if state.deadline > 0 && clock.unix_timestamp >= state.deadline => {
                    if let Err(err) = pending.reclaim().await
                        && patience.failed(request, "reclaiming an unanswered request", &err)
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    if patience.failed(request, "reading the clock", &err) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

fn stream_response(
    gateway: Arc<Gateway>,
    pending: PendingRequest<Arc<dyn Chain>>,
    request: ChatRequest,
    id: String,
    created: u64,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": request.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            })
        };
        let send = |value: Value| sender.send(Event::default().data(value.to_string())).is_ok();
        let error_event = |error: ApiError| json!({ "error": { "message": error.message(), "type": error.kind(), "code": error.code() } });
        // A caller who hangs up stops the forwarding, not the request: it settles below.
        let mut connected = send(chunk(json!({ "role": "assistant", "content": "" }), None));
        let mut sent_text = false;
        let mut events = pending.events();
        while connected {
            let Some(event) = events.next().await else { break };
            match event {
                Ok(AnswerEvent::Text(text)) => {
                    sent_text = true;
                    connected = send(chunk(json!({ "content": text }), None));
                }
                Ok(AnswerEvent::Restarted { .. }) if sent_text => {
                    // The text already streamed is void and cannot be taken back: say so and stop.
                    let error = ApiError::upstream(ClientError::Invalid(
                        "the server released the request mid-answer; the text so far is void".into(),
                    ));
                    send(error_event(error));
                    break;
                }
                Ok(AnswerEvent::Completed(receipt)) => {
                    let usage = usage(&gateway, &request.model, &request.messages, receipt.tokens).await;
                    let finish = finish_reason(&gateway, &request.model, usage, request.max_tokens, request.budget);
                    let mut last = chunk(json!({}), Some(finish));
                    if let Some(object) = last.as_object_mut() {
                        object.insert("chainference".into(), receipt_json(&receipt));
                    }
                    send(last);
                    if request.include_usage {
                        let mut usage_chunk = chunk(json!({}), None);
                        if let Some(object) = usage_chunk.as_object_mut() {
                            object.insert("choices".into(), json!([]));
                            object.insert("usage".into(), usage_json(usage));
                        }
                        send(usage_chunk);
                    }
                    break;
                }
                Ok(_) => {}
                Err(err) => {
                    send(error_event(wait_failed(&pending, err).await));
                    break;
                }
            }
        }
        let _ = sender.send(Event::default().data("[DONE]"));
        drop(events);
        settle_later(Arc::clone(gateway.client.chain()), pending);
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::parse_request;
    use serde_json::json;

    fn parse(messages: serde_json::Value) -> Result<Vec<String>, String> {
        let body = json!({ "model": "a/b", "messages": messages }).to_string();
        parse_request(body.as_bytes(), 16)
            .map(|r| r.messages.into_iter().map(|m| m.content).collect())
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn text_parts_are_joined_and_other_parts_named() {
        let parts = json!([{ "role": "user", "content": [
            { "type": "text", "text": "Hello, " },
            { "type": "text", "text": "world", "cache_control": { "type": "ephemeral" } }
        ] }]);
        assert_eq!(parse(parts), Ok(vec!["Hello, world".to_string()]));
        let refusal = json!([
            { "role": "user", "content": "Do it" },
            { "role": "assistant", "content": [{ "type": "refusal", "refusal": "I can't." }] },
            { "role": "user", "content": "Please" }
        ]);
        assert_eq!(parse(refusal), Ok(vec!["Do it".into(), "I can't.".into(), "Please".into()]));
        let image = json!([{ "role": "user", "content": [{ "type": "text", "text": "see" }, { "type": "image_url", "image_url": { "url": "x" } }] }]);
        assert!(parse(image).is_err_and(|e| e.contains("messages[0].content[1].type") && e.contains("image_url")));
        let untyped = json!([{ "role": "user", "content": [{ "text": "x" }] }]);
        assert!(parse(untyped).is_err_and(|e| e.contains("must be an object with a 'type'")));
        let bad_text = json!([{ "role": "user", "content": [{ "type": "text", "text": 3 }] }]);
        assert!(parse(bad_text).is_err_and(|e| e.contains("content[0].text must be a string")));
    }

    #[test]
    fn unsupported_features_are_refused_by_name() {
        let with = |field: &str, value: serde_json::Value| {
            let mut body = json!({ "model": "a/b", "messages": [{ "role": "user", "content": "hi" }] });
            body[field] = value;
            parse_request(body.to_string().as_bytes(), 16).map(|_| ()).map_err(|e| e.param())
        };
        assert_eq!(with("n", json!(1)), Ok(()));
        assert_eq!(with("n", json!(null)), Ok(()));
        assert_eq!(with("n", json!(2)), Err(Some("n")));
        assert_eq!(with("n", json!("1")), Err(Some("n")));
        assert_eq!(with("tools", json!([{ "type": "function" }])), Err(Some("tools")));
        assert_eq!(with("tool_choice", json!("auto")), Err(Some("tool_choice")));
        assert_eq!(with("functions", json!([])), Err(Some("functions")));
        assert_eq!(with("response_format", json!({ "type": "json_object" })), Err(Some("response_format")));
        assert_eq!(with("response_format", json!({ "type": "text" })), Ok(()));
        assert_eq!(with("tools", json!(null)), Ok(()));
    }

    #[test]
    fn stop_takes_a_string_or_up_to_four_and_refuses_the_rest_by_name() {
        let stop = |value: serde_json::Value| {
            let body = json!({ "model": "a/b", "messages": [{ "role": "user", "content": "hi" }], "stop": value });
            parse_request(body.to_string().as_bytes(), 16).map(|r| r.stop).map_err(|e| e.param())
        };
        assert_eq!(stop(json!(null)), Ok(vec![]));
        assert_eq!(stop(json!("\n")), Ok(vec!["\n".to_string()]));
        assert_eq!(stop(json!(["a", "bc"])), Ok(vec!["a".to_string(), "bc".to_string()]));
        assert_eq!(stop(json!([])), Ok(vec![]));
        for bad in [json!(""), json!([""]), json!(["a", "b", "c", "d", "e"]), json!([1]), json!(3), json!({ "a": 1 })] {
            assert_eq!(stop(bad.clone()), Err(Some("stop")), "{bad}");
        }
        assert_eq!(stop(json!("x".repeat(65))), Err(Some("stop")));
    }

    #[test]
    fn an_empty_user_message_beside_a_system_message_goes_through() {
        let messages = json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "" }]);
        assert_eq!(parse(messages), Ok(vec!["Be brief.".to_string(), String::new()]));
        assert!(parse(json!([{ "role": "user", "content": "  " }])).is_err_and(|e| e.contains("no text")));
    }
}
