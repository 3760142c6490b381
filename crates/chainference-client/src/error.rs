//! What can go wrong for a client, in terms a user can act on.

use std::fmt;

use chainference_chain::{Address, ChainError};
use chainference_core::state::{DeclineReasons, RequestStatus};

use crate::discovery::Exclusion;

/// A client error. Program failures carry core's named error ([`chainference_core::Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The wallet cannot cover the stake, rent and fees.
    #[error("insufficient funds: need {needed} lamports, have {available} ({missing} missing)")]
    InsufficientFunds {
        /// What the request needs in all.
        needed: u64,
        /// The wallet's balance.
        available: u64,
        /// `needed - available`.
        missing: u64,
    },
    /// No registered server offers the model at all.
    #[error("no server offers {model}")]
    NoServerOffersModel {
        /// The canonical model id.
        model: String,
    },
    /// Servers offer the model but every one was excluded.
    #[error("every server offering {model} was excluded:\n{}", ExcludedList(.excluded))]
    AllServersExcluded {
        /// The canonical model id.
        model: String,
        /// Each excluded server and why.
        excluded: Vec<(Address, Vec<Exclusion>)>,
    },
    /// A server named explicitly cannot serve the request.
    #[error("server {server} cannot serve this request: {}", Reasons(.reasons))]
    ServerExcluded {
        /// The server's authority.
        server: Address,
        /// Why.
        reasons: Vec<Exclusion>,
    },
    /// The request's deadline passed before it completed (reclaim it for a refund).
    #[error("deadline passed at {deadline} (now {now}) before the request completed; reclaim it")]
    DeadlinePassed {
        /// The deadline (unix seconds).
        deadline: i64,
        /// The chain's time (unix seconds).
        now: i64,
    },
    /// A response chunk failed to open: altered, reordered, or sealed to another key.
    #[error("response chunk {index} from {server} failed to open: tampered or reordered")]
    TamperedChunk {
        /// The chunk's index.
        index: u32,
        /// The server that wrote it.
        server: Address,
    },
    /// The server answering released the request after writing part of its answer; that part
    /// is void and another server's answer follows from its start if one locks it.
    #[error("server {server} released the request mid-answer; the answer restarts")]
    Restarted {
        /// The server that gave up.
        server: Address,
    },
    /// The request ended without an answer.
    #[error("request {request} ended as {status:?} without an answer")]
    Ended {
        /// The request.
        request: Address,
        /// Its final status.
        status: RequestStatus,
    },
    /// Every server the request allows declined it on chain, so nobody would answer before
    /// its deadline. The SDK cancelled and closed it: the stake and the rent are back.
    #[error(
        "every server allowed to answer declined request {request}: {reasons}; it was cancelled and closed, the stake and rent are back"
    )]
    Refused {
        /// The request (closed).
        request: Address,
        /// The servers that declined it (its whole allow-list).
        servers: Vec<Address>,
        /// The union of the reasons they gave.
        reasons: DeclineReasons,
        /// Lamports that came back to the wallet: the stake and the rent the request held, net
        /// of the fee (0 when another handle of the request closed it first).
        refunded: u64,
    },
    /// The request is not in a state that allows this.
    #[error("request {request} is {status:?}: {hint}")]
    WrongState {
        /// The request.
        request: Address,
        /// Its status.
        status: RequestStatus,
        /// What would be possible.
        hint: &'static str,
    },
    /// No such request (never opened, or already closed).
    #[error("request {0} not found (never opened, or already closed)")]
    RequestNotFound(Address),
    /// The program refused an instruction.
    #[error("program refused instruction {instruction}: {error} (code {code})")]
    Program {
        /// Core's named error.
        error: chainference_core::Error,
        /// Its stable code.
        code: u32,
        /// Index of the instruction in its transaction.
        instruction: u8,
        /// The program logs, when the chain returned them.
        logs: Vec<String>,
    },
    /// Invalid input, caught before anything was sent.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A protocol rule in core refused the input (bad model id, prompt too long...).
    #[error(transparent)]
    Core(#[from] chainference_core::Error),
    /// The chain transport failed.
    #[error(transparent)]
    Chain(ChainError),
}

impl From<ChainError> for ClientError {
    fn from(err: ChainError) -> Self {
        if let Some((instruction, code)) = err.program_error()
            && let Some(error) = chainference_core::Error::from_code(code)
        {
            let logs = match err {
                ChainError::Transaction { logs, .. } => logs,
                _ => Vec::new(),
            };
            return ClientError::Program { error, code, instruction, logs };
        }
        ClientError::Chain(err)
    }
}

impl ClientError {
    /// Core's error when the program refused an instruction.
    pub fn program_error(&self) -> Option<chainference_core::Error> {
        match self {
            ClientError::Program { error, .. } => Some(*error),
            _ => None,
        }
    }
}

struct Reasons<'a>(&'a [Exclusion]);

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}

struct ExcludedList<'a>(&'a [(Address, Vec<Exclusion>)]);

impl fmt::Display for ExcludedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (server, reasons) in self.0 {
            writeln!(f, "  {server}: {}", Reasons(reasons))?;
        }
        Ok(())
    }
}
