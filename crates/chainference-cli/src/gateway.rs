//! `chainference gateway`: the network behind OpenAI's chat completions API, so existing apps
//! and SDKs use it without changing code. `GET /v1/models` lists the models servers offer on
//! chain; `POST /v1/chat/completions` (streaming or not) becomes a sealed request, paid from the
//! gateway's wallet, and the answer comes back decrypted with `usage` from the billed tokens.
//! Errors use OpenAI's JSON shape and status codes. `--demo` runs it all in one process on the
//! embedded chain with two local servers and the real model.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chainference_chain::{AccountFilter, Chain, EmbeddedChain, Keypair, Signer, address};
use chainference_client::{AnswerEvent, Ask, ChatMessage, Client, ClientError, Policy, Role};
use chainference_core::builders::Program;
use chainference_core::state::{AccountKind, ServerAccount};
use chainference_server::InferenceBackend;
use chainference_server::candle::CandleBackend;
use chainference_server::runtime::{Server, ServerHandle};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::Cli;
use crate::output::load_model;

/// `chainference gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Run on the embedded chain with two local servers and the real model (no cluster).
    #[arg(long)]
    pub demo: bool,
    /// Require `Authorization: Bearer <key>`.
    #[arg(long, env = "CHAINFERENCE_GATEWAY_KEY")]
    pub api_key: Option<String>,
    /// Tokens allowed for the prompt on top of `max_tokens` in a request's billable budget.
    #[arg(long, default_value_t = 1024)]
    pub prompt_allowance: u32,
    /// Completion tokens when a request names none.
    #[arg(long, default_value_t = 512)]
    pub default_max_tokens: u32,
}

/// Largest request body accepted.
const MAX_BODY: usize = 256 * 1024;

struct Gateway {
    client: Client<Arc<dyn Chain>>,
    chain: Arc<dyn Chain>,
    program: Program,
    api_key: Option<String>,
    prompt_allowance: u32,
    default_max_tokens: u32,
    /// The model's tokenizer when the gateway runs one (demo): splits billed tokens into
    /// prompt and completion for `usage`.
    tokenizer: Option<Arc<CandleBackend>>,
    /// Local servers (demo); kept running while the gateway serves.
    _servers: Vec<ServerHandle>,
}

/// Runs the gateway until Ctrl-C.
pub async fn run(cli: &Cli, args: &GatewayArgs) -> Result<()> {
    let gateway = if args.demo { demo_gateway(args).await? } else { cluster_gateway(cli, args)? };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!("OpenAI-compatible gateway on http://{local}/v1 (wallet {})", gateway.client.address());
    // Scripts (and the tests) read this line to find the port when --listen asked for port 0.
    println!("{}", json!({ "listening": format!("http://{local}/v1") }));
    let app = router(Arc::new(gateway));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving HTTP")
}

fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(gateway)
}

fn cluster_gateway(cli: &Cli, args: &GatewayArgs) -> Result<Gateway> {
    let chain: Arc<dyn Chain> = crate::commands::rpc_chain(cli);
    let wallet =
        crate::commands::read_keypair(&cli.keypair.clone().unwrap_or_else(crate::commands::default_keypair_path))?;
    Ok(Gateway::new(chain, wallet, Program::default(), args, None))
}

async fn demo_gateway(args: &GatewayArgs) -> Result<Gateway> {
    let embedded = Arc::new(
        EmbeddedChain::start().context("starting the embedded chain (build the .so: `cargo xtask build-sbf`)")?,
    );
    let model = Arc::new(load_model(None)?);
    let mut servers = Vec::new();
    for price in [2_000_000, 3_000_000] {
        let wallet = Keypair::new();
        embedded.airdrop(&wallet.pubkey(), 10_000_000_000).await?;
        let handle = Server::builder(Arc::clone(&embedded), wallet, Arc::clone(&model))
            .program(*embedded.program())
            .price(price)
            .max_concurrent(2)
            .start()
            .await?;
        servers.push(handle);
    }
    let wallet = Keypair::new();
    embedded.airdrop(&wallet.pubkey(), 100_000_000_000).await?;
    let program = *embedded.program();
    Ok(Gateway::new(embedded, wallet, program, args, Some((model, servers))))
}

impl Gateway {
    /// A gateway paying from `wallet` on `chain`; `local` is the model and the local servers it
    /// runs itself (demo).
    fn new(
        chain: Arc<dyn Chain>,
        wallet: Keypair,
        program: Program,
        args: &GatewayArgs,
        local: Option<(Arc<CandleBackend>, Vec<ServerHandle>)>,
    ) -> Self {
        let (tokenizer, servers) = match local {
            Some((model, servers)) => (Some(model), servers),
            None => (None, Vec::new()),
        };
        Gateway {
            client: Client::with_program(Arc::clone(&chain), wallet, program),
            chain,
            program,
            api_key: args.api_key.clone(),
            prompt_allowance: args.prompt_allowance,
            default_max_tokens: args.default_max_tokens,
            tokenizer,
            _servers: servers,
        }
    }
}

/// An error in OpenAI's shape.
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        let message = err.to_string();
        let (status, kind, code) = match &err {
            ClientError::NoServerOffersModel { .. } => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found")
            }
            ClientError::InsufficientFunds { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient_quota", "insufficient_quota")
            }
            ClientError::AllServersExcluded { .. } | ClientError::ServerExcluded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", "no_eligible_server")
            }
            ClientError::DeadlinePassed { .. } => (StatusCode::GATEWAY_TIMEOUT, "server_error", "deadline_passed"),
            ClientError::Invalid(_) | ClientError::Core(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request")
            }
            _ => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
        };
        ApiError { status, message, kind, param: None, code: Some(code) }
    }
}

fn authorize(gateway: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &gateway.api_key else { return Ok(()) };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided.".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        })
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Result<axum::Json<Value>, ApiError> {
    authorize(&gateway, &headers)?;
    let filters = [AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Server as u8] }];
    let accounts = gateway
        .chain
        .program_accounts(&address(&gateway.program.id), &filters)
        .await
        .map_err(|err| ApiError::from(ClientError::Chain(err)))?;
    let mut offered: Vec<String> = Vec::new();
    for (_, account) in &accounts {
        let Ok(server) = ServerAccount::decode(&account.data) else { continue };
        if !server.header.active {
            continue;
        }
        for offer in server.offers.iter() {
            if !offered.iter().any(|m| m == offer.model) {
                offered.push(offer.model.to_string());
            }
        }
    }
    offered.sort();
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
    stream: bool,
    include_usage: bool,
    /// The billable budget: `max_tokens` plus the gateway's prompt allowance.
    budget: u32,
}

fn parse_request(body: &[u8], default_max_tokens: u32) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid(format!("We could not parse the JSON body of your request: {err}"), None))?;
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("you must provide a model parameter", Some("model")))?
        .to_string();
    let raw = value
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("'messages' must be a non-empty array", Some("messages")))?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, message) in raw.iter().enumerate() {
        let role = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role: unsupported role {other:?}"),
                    Some("messages"),
                ));
            }
        };
        let content = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            // Content parts: the text ones, joined.
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
            }
            _ => return Err(ApiError::invalid(format!("messages[{i}].content must be a string"), Some("messages"))),
        };
        messages.push(ChatMessage::new(role, content));
    }
    let max_tokens = match value.get("max_completion_tokens").or_else(|| value.get("max_tokens")) {
        None | Some(Value::Null) => default_max_tokens,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid("max_tokens must be a positive integer", Some("max_tokens")))?,
    };
    let temperature = match value.get("temperature") {
        None | Some(Value::Null) => 1.0,
        Some(v) => {
            let t = v.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or_else(|| {
                ApiError::invalid("temperature must be a number between 0 and 2", Some("temperature"))
            })?;
            #[allow(clippy::cast_possible_truncation)] // in 0..=2
            let t = t as f32;
            t
        }
    };
    let seed = match value.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ApiError::invalid("seed must be an integer", Some("seed")))?),
    };
    let stream = value.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = value.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    Ok(ChatRequest { model, messages, max_tokens, temperature, seed, stream, include_usage, budget: max_tokens })
}

async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&gateway, &headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the request body is larger than {MAX_BODY} bytes"),
                kind: "invalid_request_error",
                param: None,
                code: Some("request_too_large"),
            }
        } else {
            ApiError::invalid(rejection.body_text(), None)
        }
    })?;
    let mut request = parse_request(&body, gateway.default_max_tokens)?;
    request.budget = request.max_tokens.saturating_add(gateway.prompt_allowance);
    let budget = request.budget;
    let mut ask = Ask::chat(request.model.clone(), request.messages.clone())
        .max_tokens(budget)
        .max_completion_tokens(request.max_tokens)
        .temperature(request.temperature)
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
    let chain = Arc::clone(&gateway.chain);
    let waited = tokio::spawn(async move {
        let answer = pending.wait().await;
        settle_later(chain, pending);
        answer
    });
    let answer = waited
        .await
        .map_err(|err| upstream(ClientError::Invalid(format!("the request task failed: {err}"))))?
        .map_err(upstream)?;
    let usage = usage(&gateway, &request.messages, answer.receipt.tokens).await;
    let finish = finish_reason(&gateway, usage, request.max_tokens, budget);
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

/// `(prompt, completion, total)`: the billed total, split by the model's tokenizer when the
/// gateway has one.
async fn usage(gateway: &Gateway, messages: &[ChatMessage], billed: u64) -> (u64, u64, u64) {
    let prompt = match &gateway.tokenizer {
        Some(model) => model.prompt_tokens(messages).await.map_or(0, u64::from).min(billed),
        None => 0,
    };
    (prompt, billed.saturating_sub(prompt), billed)
}

/// "length" when the answer used its whole allowance: the completion tokens when the gateway
/// can split the bill, else the whole budget.
fn finish_reason(
    gateway: &Gateway,
    (_, completion, total): (u64, u64, u64),
    max_tokens: u32,
    budget: u32,
) -> &'static str {
    let used_up =
        if gateway.tokenizer.is_some() { completion >= u64::from(max_tokens) } else { total >= u64::from(budget) };
    if used_up { "length" } else { "stop" }
}

/// A failure after the request was sent: the network's fault, not the caller's.
fn upstream(err: ClientError) -> ApiError {
    let (status, code) = match &err {
        ClientError::DeadlinePassed { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline_passed"),
        _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
    };
    ApiError { status, message: err.to_string(), kind: "server_error", param: None, code: Some(code) }
}

fn usage_json((prompt, completion, total): (u64, u64, u64)) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total })
}

fn receipt_json(receipt: &chainference_client::Receipt) -> Value {
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

/// The gateway's wallet is the client: once a request is settled, close it to get its rent
/// back; one nobody answered by its deadline is reclaimed first.
fn settle_later(chain: Arc<dyn Chain>, pending: chainference_client::PendingRequest<Arc<dyn Chain>>) {
    tokio::spawn(async move {
        loop {
            let Ok(state) = pending.state().await else { return };
            if state.status.is_terminal() {
                if let Err(err) = pending.close().await {
                    tracing::warn!(error = %err, "closing a settled request failed");
                }
                return;
            }
            let now = chain.clock().await.map_or(0, |clock| clock.unix_timestamp);
            if state.deadline > 0 && now >= state.deadline {
                if let Err(err) = pending.reclaim().await {
                    tracing::warn!(error = %err, "reclaiming an unanswered request failed");
                    return;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

fn stream_response(
    gateway: Arc<Gateway>,
    pending: chainference_client::PendingRequest<Arc<dyn Chain>>,
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
        let error_event =
            |error: ApiError| json!({ "error": { "message": error.message, "type": error.kind, "code": error.code } });
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
                    let error = upstream(ClientError::Invalid(
                        "the server released the request mid-answer; the text so far is void".into(),
                    ));
                    send(error_event(error));
                    break;
                }
                Ok(AnswerEvent::Completed(receipt)) => {
                    let usage = usage(&gateway, &request.messages, receipt.tokens).await;
                    let finish = finish_reason(&gateway, usage, request.max_tokens, request.budget);
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
                    send(error_event(upstream(err)));
                    break;
                }
            }
        }
        let _ = sender.send(Event::default().data("[DONE]"));
        drop(events);
        settle_later(Arc::clone(&gateway.chain), pending);
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
