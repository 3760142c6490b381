//! # chainference-gateway
//!
//! The Chainference network behind OpenAI's chat completions API, as a library: an
//! [`axum::Router`] that any Rust app mounts in its own router, so existing apps and OpenAI SDKs
//! use the network without changing code.
//!
//! - `GET /v1/models` lists the models active servers offer on chain
//!   ([`Client::servers`](chainference_client::Client::servers) with
//!   [`ServerQuery::any_model`](chainference_client::ServerQuery::any_model)).
//! - `POST /v1/chat/completions` (streaming or not) becomes a sealed request, paid from the
//!   gateway's wallet; the answer comes back decrypted, with `usage` from the billed tokens and
//!   the on-chain settlement under `chainference`. Settled requests are closed (and unanswered
//!   ones reclaimed) in the background, even when the caller hangs up.
//! - Served standalone ([`Gateway::serve`], as `chainference gateway` does), `/v1/completions`
//!   (the legacy text API) is a 404 that names chat completions instead (the network's sealed
//!   prompts are chat messages), and other paths and methods get OpenAI-shaped 404s and 405s.
//! - Errors use OpenAI's JSON shape and status codes ([`ApiError`]).
//!
//! The gateway runs over any [`Chain`]: the app picks the transport (`EmbeddedChain`, or
//! `RpcChain` for a real cluster) and the wallet that pays.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::routing::get;
//! use chainference_client::{Chain, Client, Keypair};
//! use chainference_gateway::{Gateway, GatewayConfig};
//!
//! /// The app's own routes, with the gateway under `/openai`: OpenAI SDKs use
//! /// `base_url = "http://127.0.0.1:8080/openai/v1"`.
//! async fn serve(chain: Arc<dyn Chain>, wallet: Keypair) -> std::io::Result<()> {
//!     let gateway = Gateway::new(Client::new(chain, wallet), GatewayConfig::default().api_key("sk-local"));
//!     let app: Router = Router::new()
//!         .route("/health", get(|| async { "ok" }))
//!         .nest("/openai", gateway.router());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await
//! }
//! ```
//!
//! [`Gateway::serve`] serves the gateway alone on a listener until a shutdown signal.

#![deny(unsafe_code)]

mod error;
mod handlers;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use chainference_client::{Chain, Client};
use chainference_server::InferenceBackend;
use zeroize::Zeroizing;

pub use error::ApiError;

/// The largest request body the gateway accepts, in bytes; larger ones get a 413 in OpenAI's
/// error shape (`request_too_large`).
pub const MAX_BODY: usize = 256 * 1024;

/// The key callers must present (`Authorization: Bearer <key>`): a secret, so it is zeroized
/// when dropped, compared in constant time, never printed and never cloned.
struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Whether `given` is the key, in time that depends on the key's length only. An empty key
    /// matches nothing (a gateway configured with one refuses every caller rather than none).
    fn matches(&self, given: &str) -> bool {
        let (key, given) = (self.0.as_bytes(), given.as_bytes());
        let mut difference = u8::from(key.len() != given.len() || key.is_empty());
        for (i, byte) in key.iter().enumerate() {
            difference |= byte ^ given.get(i).copied().unwrap_or(0);
            // Keep the loop whole: no early exit the optimizer could introduce.
            difference = std::hint::black_box(difference);
        }
        difference == 0
    }
}

/// How a [`Gateway`] treats requests.
///
/// ```
/// use chainference_gateway::GatewayConfig;
/// let config = GatewayConfig::default().api_key("sk-local").default_max_tokens(256);
/// assert_eq!(config.prompt_allowance, 1024);
/// assert!(config.requires_api_key());
/// ```
#[non_exhaustive]
pub struct GatewayConfig {
    /// When set, every route requires `Authorization: Bearer <key>` (default: none).
    api_key: Option<ApiKey>,
    /// Tokens allowed for the prompt on top of `max_tokens` in a request's billable budget
    /// (default 1024).
    pub prompt_allowance: u32,
    /// Completion tokens when a request names none (default 512).
    pub default_max_tokens: u32,
    /// The on-chain timeout of each request, in seconds: how long servers have to take and
    /// finish it, and so the ceiling on every wait. Past it the caller gets a 504 saying whether
    /// any server took the request, and the stake is reclaimed in the background. 0 (the
    /// default) uses the deployment's default (300 s on the defaults); other values must lie in
    /// the deployment's timeout range (10 to 3,600 s on the defaults), and should leave a server
    /// the time to generate `max_tokens`.
    pub request_timeout_secs: u32,
}

/// The default of [`GatewayConfig::request_timeout_secs`]: the deployment's own default.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u32 = 0;
/// The default of [`GatewayConfig::prompt_allowance`].
pub const DEFAULT_PROMPT_ALLOWANCE: u32 = 1024;
/// The default of [`GatewayConfig::default_max_tokens`].
pub const DEFAULT_MAX_TOKENS: u32 = 512;

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            api_key: None,
            prompt_allowance: DEFAULT_PROMPT_ALLOWANCE,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
        }
    }
}

impl GatewayConfig {
    /// The defaults: no API key, a prompt allowance of 1024 tokens, 512 completion tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `Authorization: Bearer <key>` on every route.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey(Zeroizing::new(key.into())));
        self
    }

    /// Whether callers must present an API key.
    pub fn requires_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// Tokens allowed for the prompt on top of `max_tokens` in a request's billable budget.
    pub fn prompt_allowance(mut self, tokens: u32) -> Self {
        self.prompt_allowance = tokens;
        self
    }

    /// Completion tokens when a request names none.
    pub fn default_max_tokens(mut self, tokens: u32) -> Self {
        self.default_max_tokens = tokens;
        self
    }

    /// Seconds a request may wait for an answer before the caller gets a 504.
    pub fn request_timeout_secs(mut self, seconds: u32) -> Self {
        self.request_timeout_secs = seconds;
        self
    }

    /// Whether `authorization` (the header's value) presents the key; true when none is set.
    pub(crate) fn authorizes(&self, authorization: Option<&str>) -> bool {
        match &self.api_key {
            None => true,
            // The scheme name is case-insensitive (RFC 7235); the key is not.
            Some(key) => authorization
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .is_some_and(|(_, given)| key.matches(given.trim())),
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            // The key is a secret: say whether there is one, never what it is.
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("prompt_allowance", &self.prompt_allowance)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

/// An OpenAI-compatible gateway paying from one client's wallet.
///
/// Build it with [`Gateway::new`], then mount [`Gateway::router`] in an app or run
/// [`Gateway::serve`]. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    client: Client<Arc<dyn Chain>>,
    config: Arc<GatewayConfig>,
    /// Splits billed tokens into prompt and completion for `usage`.
    token_counter: Option<Arc<dyn InferenceBackend>>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("wallet", &self.client.address())
            .field("config", &self.config)
            .field("token_counter", &self.token_counter.as_ref().map(|counter| counter.model_id()))
            .finish()
    }
}

impl Gateway {
    /// A gateway sending requests with `client` (its chain, wallet and deployment): every
    /// request is paid from the client's wallet.
    pub fn new(client: Client<Arc<dyn Chain>>, config: GatewayConfig) -> Self {
        Gateway { client, config: Arc::new(config), token_counter: None }
    }

    /// Counts prompt tokens with `counter` (the model the servers run, e.g. a `CandleBackend`),
    /// so `usage` splits the billed tokens into `prompt_tokens` and `completion_tokens`, and
    /// `finish_reason` is `"length"` exactly when the completion used all of `max_tokens`.
    /// Without one, `prompt_tokens` is 0 and every billed token counts as completion.
    pub fn token_counter(mut self, counter: Arc<dyn InferenceBackend>) -> Self {
        self.token_counter = Some(counter);
        self
    }

    /// The client requests are sent with.
    pub fn client(&self) -> &Client<Arc<dyn Chain>> {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The routes `GET /v1/models` and `POST /v1/chat/completions` (bodies up to
    /// [`MAX_BODY`]), for any app state `S`: merge them into an app, or nest them under a
    /// prefix (`.nest("/openai", gateway.router())` serves `/openai/v1/models`). Nothing else,
    /// so the app's own routes and fallback stay in charge of every other path.
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/v1/models", get(handlers::models))
            .route("/v1/chat/completions", post(handlers::chat_completions))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(Arc::new(self))
    }

    /// Serves [`Gateway::router`] alone on `listener` until `shutdown` resolves, then finishes
    /// the requests in progress. Standing alone, it also answers what OpenAI's clients may try
    /// in OpenAI's JSON shape: `/v1/completions` (the legacy text API) is a 404 naming chat
    /// completions, any other path OpenAI's "Invalid URL" 404, a wrong method a 405. Requests
    /// already sent on chain still settle in the background while the runtime runs.
    pub async fn serve<F>(self, listener: tokio::net::TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let app = self
            .router::<()>()
            .route("/v1/completions", any(handlers::legacy_completions))
            .fallback(handlers::unknown_url)
            .method_not_allowed_fallback(handlers::method_not_allowed);
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::GatewayConfig;

    #[test]
    fn the_api_key_is_checked_exactly_and_never_shown() {
        let open = GatewayConfig::new();
        assert!(open.authorizes(None) && open.authorizes(Some("Bearer anything")));
        let locked = GatewayConfig::new().api_key("sk-secret");
        assert!(locked.authorizes(Some("Bearer sk-secret")));
        assert!(locked.authorizes(Some("bearer sk-secret")), "the scheme is case-insensitive");
        for wrong in [None, Some("sk-secret"), Some("Bearer sk-secre"), Some("Bearer sk-secret2"), Some("Bearer ")] {
            assert!(!locked.authorizes(wrong), "{wrong:?}");
        }
        let empty = GatewayConfig::new().api_key("");
        assert!(!empty.authorizes(Some("Bearer ")) && !empty.authorizes(None), "an empty key lets no one in");
        assert!(!format!("{locked:?}").contains("sk-secret"));
    }
}
