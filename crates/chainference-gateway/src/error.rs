//! Errors in OpenAI's JSON shape and status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chainference_client::ClientError;
use serde_json::{Value, json};

/// An error as OpenAI's API reports it: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`.
///
/// Client SDK errors before a request is sent map by meaning (`From<ClientError>`): an unknown
/// model is a 404 `model_not_found`, a wallet short of funds a 402 `insufficient_quota`, no
/// eligible server a 503, invalid input a 400, anything else a 502 `upstream_error`.
///
/// ```
/// use chainference_gateway::ApiError;
/// let error = ApiError::invalid_request("you must provide a model parameter", Some("model"));
/// assert_eq!(error.status().as_u16(), 400);
/// assert_eq!(error.to_json()["error"]["param"], "model");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about `param` (the request field at fault, if one is).
    pub fn invalid_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// A 401 `invalid_api_key`.
    pub(crate) fn invalid_api_key() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided.".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// A 413 `request_too_large`.
    pub(crate) fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// `status` (404, or 405 for a wrong method) for what this gateway does not serve, worded
    /// as OpenAI's API words it ("Invalid URL", no code).
    pub(crate) fn unknown_url(status: StatusCode, method: &str, path: &str) -> Self {
        ApiError {
            status,
            message: format!(
                "Invalid URL ({method} {path}); this gateway serves GET /v1/models and POST /v1/chat/completions"
            ),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// A 404 for the legacy text completions API, saying what to use instead.
    pub(crate) fn legacy_completions() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: "POST /v1/completions (OpenAI's legacy text completions) is not served: requests on this \
                      network carry chat messages, and the servers apply their model's chat template. Send the \
                      text as a user message to POST /v1/chat/completions instead."
                .into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("unsupported_endpoint"),
        }
    }

    /// A failure after the request was sent: the network's fault, not the caller's.
    pub(crate) fn upstream(err: ClientError) -> Self {
        let (status, code) = match &err {
            ClientError::DeadlinePassed { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline_passed"),
            ClientError::Refused { .. } => (StatusCode::SERVICE_UNAVAILABLE, "declined_by_servers"),
            _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
        };
        ApiError { status, message: err.to_string(), kind: "server_error", param: None, code: Some(code) }
    }

    /// The same error with another message.
    pub(crate) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// OpenAI's error `type` (`invalid_request_error`, `insufficient_quota`, `server_error`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The request field at fault, if one is.
    pub fn param(&self) -> Option<&'static str> {
        self.param
    }

    /// The machine-readable code (`model_not_found`, `invalid_api_key`, ...), if any.
    pub fn code(&self) -> Option<&'static str> {
        self.code
    }

    /// The JSON body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.to_json())).into_response()
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
            ClientError::Refused { .. } => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "declined_by_servers"),
            ClientError::Invalid(_) | ClientError::Core(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request")
            }
            _ => (StatusCode::BAD_GATEWAY, "server_error", "upstream_error"),
        };
        ApiError { status, message, kind, param: None, code: Some(code) }
    }
}
