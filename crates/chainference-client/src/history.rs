//! A wallet's past requests, decrypted from chain data with nothing but the wallet.

use chainference_chain::{AccountFilter, Address, Chain, address};
use chainference_core::prompt::PromptPayload;
use chainference_core::state::{AccountKind, RequestAccount, RequestHeader, ResponseAccount};

use crate::request::RequestState;
use crate::{Client, ClientError};

/// One past request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The request account.
    pub address: Address,
    /// The canonical model id.
    pub model: String,
    /// When it was created (unix seconds).
    pub created_at: i64,
    /// Its state.
    pub state: RequestState,
    /// The decrypted prompt (`None` while the upload is incomplete, or if it does not open).
    pub prompt: Option<PromptPayload>,
    /// The decrypted answer so far (`None` before a server wrote anything).
    pub answer: Option<String>,
    /// Whether the answer holds its final chunk.
    pub answer_complete: bool,
    /// What could not be read, if anything.
    pub problem: Option<String>,
}

pub(crate) async fn load<C: Chain + 'static>(client: &Client<C>) -> Result<Vec<HistoryEntry>, ClientError> {
    let inner = &client.inner;
    let wallet = client.address();
    let filters = [
        AccountFilter::Memcmp { offset: 0, bytes: vec![AccountKind::Request as u8] },
        AccountFilter::Memcmp { offset: RequestHeader::CLIENT_OFFSET, bytes: wallet.to_bytes().to_vec() },
    ];
    let requests = inner.chain.program_accounts(&address(&inner.program.id), &filters).await?;
    let responses: Vec<Address> =
        requests.iter().map(|(request, _)| address(&inner.program.response(&request.to_bytes()).0)).collect();
    let response_accounts = inner.chain.accounts(&responses).await?;
    let mut entries = Vec::with_capacity(requests.len());
    for ((request, account), response) in requests.iter().zip(response_accounts) {
        let decoded = match RequestAccount::decode(&account.data) {
            Ok(decoded) => decoded,
            Err(err) => {
                tracing::warn!(%request, %err, "skipping an undecodable request account");
                continue;
            }
        };
        let header = decoded.header;
        let keys = inner.secret.request_keys(&request.to_bytes());
        let mut problems = Vec::new();
        let prompt = if header.prompt_written == header.prompt_len {
            match keys.open_own_prompt(decoded.prompt, &request.to_bytes()) {
                Ok(bytes) => match PromptPayload::decode(&bytes) {
                    Ok(payload) => Some(payload),
                    Err(err) => {
                        problems.push(format!("prompt: {err}"));
                        None
                    }
                },
                Err(err) => {
                    problems.push(format!("prompt: {err}"));
                    None
                }
            }
        } else {
            None
        };
        let mut answer = None;
        let mut answer_complete = false;
        if let Some(response) = response {
            match ResponseAccount::decode(&response.data) {
                Ok(stream) => {
                    let mut opener = keys.response_opener(&request.to_bytes(), &stream.header.server);
                    let mut bytes = Vec::new();
                    for (index, chunk) in stream.chunks().enumerate() {
                        match opener.open_chunk(chunk) {
                            Ok((text, _)) => bytes.extend_from_slice(&text),
                            Err(err) => {
                                problems.push(format!("answer chunk {index}: {err}"));
                                break;
                            }
                        }
                    }
                    answer_complete = opener.is_finished();
                    answer = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                Err(err) => problems.push(format!("response: {err}")),
            }
        }
        entries.push(HistoryEntry {
            address: *request,
            model: decoded.model.to_string(),
            created_at: header.created_at,
            state: RequestState::from_header(&header),
            prompt,
            answer,
            answer_complete,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        });
    }
    entries.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.address.cmp(&b.address)));
    Ok(entries)
}
