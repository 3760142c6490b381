//! What the runtime reports: its errors, why it passed on or released a request, its events and counters.

use std::sync::atomic::{AtomicU64, Ordering};

use chainference_chain::{Address, ChainError};
use chainference_core::state::DeclineReasons;

use crate::backend::BackendError;

/// Why the runtime could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The chain refused or failed a transaction or a read.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// A rule of the protocol (an offer, an endpoint, a key).
    #[error("protocol: {0:?}")]
    Core(chainference_core::Error),
    /// The backend failed.
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    /// The wallet cannot pay for registering the server.
    #[error("the server wallet holds {available} lamports; registering needs about {needed} (fund {address})")]
    InsufficientFunds {
        /// About what registering costs (rent and fee).
        needed: u64,
        /// What the wallet holds.
        available: u64,
        /// The wallet.
        address: Address,
    },
    /// The account at the server's address is not a server account of this program.
    #[error("the account at {0} is not a Chainference server account")]
    NotAServer(Address),
    /// The runtime has stopped.
    #[error("the server has stopped")]
    Stopped,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl From<chainference_core::Error> for ServerError {
    fn from(err: chainference_core::Error) -> Self {
        ServerError::Core(err)
    }
}

/// Why the server passed on an open request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Not on the request's allow-list.
    NotAllowed,
    /// The request asks for a model this server does not run.
    OtherModel(String),
    /// The program would refuse the lock (inactive, filters, deadline).
    LockRefused(chainference_core::Error),
    /// Less than [`AcceptPolicy::min_time_left`] remains.
    TooLittleTime {
        /// Seconds left.
        seconds_left: i64,
    },
    /// The stake or `max_tokens` does not pay for [`AcceptPolicy::min_answer_tokens`].
    BudgetTooSmall {
        /// Tokens the request pays for at this server's price.
        affordable_tokens: u64,
    },
    /// The prompt is larger than [`AcceptPolicy::max_prompt_len`].
    PromptTooLarge,
    /// The client is excluded by the policy.
    ClientExcluded,
    /// The prompt does not open with this server's keys or does not decode.
    Unreadable(chainference_core::Error),
    /// The backend refused this prompt itself before anything was locked (longer than the
    /// model's context, not renderable by its chat template, not tokenizable): no retry helps.
    PromptRefused(String),
    /// The backend failed before anything was locked (unavailable, failing, shutting down): it
    /// may work on the next try, so the request is not declined.
    BackendRefused(String),
    /// The chain could not be reached to lock (nothing was locked).
    ChainUnavailable(String),
}

impl SkipReason {
    /// Why the backend refused a job: the prompt itself (declined), or the backend's state
    /// (passing).
    pub fn from_backend(error: &crate::BackendError) -> Self {
        use crate::BackendError;
        match error {
            BackendError::PromptTooLong { .. }
            | BackendError::Template(_)
            | BackendError::Tokenizer(_)
            | BackendError::UnknownModel(_) => SkipReason::PromptRefused(error.to_string()),
            _ => SkipReason::BackendRefused(error.to_string()),
        }
    }

    /// The backend's words, for a reason that came from it.
    pub(crate) fn message(&self) -> String {
        match self {
            SkipReason::PromptRefused(message) | SkipReason::BackendRefused(message) => message.clone(),
            other => format!("{other:?}"),
        }
    }

    /// What to tell the client on chain ([`chainference_core::state::DeclineReasons`]), or
    /// `None` when a decline would not help: the server is not on the allow-list, the request
    /// is already past its deadline or no longer open, or the chain was out of reach.
    pub fn decline_reasons(&self) -> Option<DeclineReasons> {
        use chainference_core::Error;
        Some(match self {
            SkipReason::NotAllowed | SkipReason::ChainUnavailable(_) => return None,
            SkipReason::OtherModel(_) => DeclineReasons::MODEL_NOT_SERVED,
            SkipReason::LockRefused(error) => match error {
                Error::PriceAboveCap
                | Error::MinCompletedNotMet
                | Error::MinSuccessNotMet
                | Error::ModelNotOffered
                | Error::ServerInactive
                | Error::SelfDealing => DeclineReasons::TERMS_NOT_MET,
                // A response PDA no server can create: nobody can ever answer it.
                Error::NonCanonicalBump => DeclineReasons::UNREADABLE,
                _ => return None,
            },
            SkipReason::TooLittleTime { .. } => DeclineReasons::TOO_LITTLE_TIME,
            SkipReason::BudgetTooSmall { .. } => DeclineReasons::BUDGET_TOO_SMALL,
            SkipReason::PromptTooLarge => DeclineReasons::PROMPT_TOO_LARGE,
            SkipReason::ClientExcluded => DeclineReasons::CLIENT_EXCLUDED,
            SkipReason::Unreadable(_) => DeclineReasons::UNREADABLE,
            SkipReason::PromptRefused(_) => DeclineReasons::MODEL_REFUSED,
            // Passing: the next poll, or another server, may well answer it.
            SkipReason::BackendRefused(_) => return None,
        })
    }
}

/// Why the server released a request it had locked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseReason {
    /// The backend failed mid-answer.
    BackendFailed(String),
    /// The server restarted with the answer half sent.
    Restarted,
    /// Shutdown's grace period ran out.
    Shutdown,
    /// The chain refused an append (the answer cannot go on).
    ChainFailed(String),
}

/// What the runtime did, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The server account is registered or up to date.
    Registered {
        /// The server PDA.
        server: Address,
        /// Whether an account was created (else updated or already current).
        created: bool,
    },
    /// The server passed on a request (reported once per request and reason).
    Skipped {
        /// The request.
        request: Address,
        /// Why.
        reason: SkipReason,
    },
    /// The server declined the request on chain, so its client learns why without waiting
    /// for the deadline (sent once per request, with a [`ServerEvent::Skipped`]; only for
    /// reasons that hold until the deadline, never for a passing failure).
    Declined {
        /// The request.
        request: Address,
        /// What the decline told the client.
        reasons: DeclineReasons,
    },
    /// Another server locked the request first.
    LostRace {
        /// The request.
        request: Address,
    },
    /// The server locked a request and is answering it.
    Locked {
        /// The request.
        request: Address,
        /// The token budget the stake pays for.
        budget: u32,
    },
    /// A request is completed and paid.
    Completed {
        /// The request.
        request: Address,
        /// Tokens billed.
        tokens: u64,
        /// What the server received (cost less the protocol fee).
        earned: u64,
        /// Transactions the answer took (lock to complete).
        transactions: u32,
    },
    /// A locked request went back to the open pool.
    Released {
        /// The request.
        request: Address,
        /// Why.
        reason: ReleaseReason,
    },
    /// A request could not be finished nor released (for example the deadline passed): the
    /// client reclaims it.
    Failed {
        /// The request.
        request: Address,
        /// What went wrong.
        error: String,
    },
    /// The HPKE key was rotated.
    KeyRotated {
        /// The new public key.
        public_key: [u8; 32],
    },
    /// The runtime stopped.
    Stopped,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Requests completed.
    pub completed: u64,
    /// Requests released.
    pub released: u64,
    /// Locks lost to other servers.
    pub lost_races: u64,
    /// Requests declined on chain (each cost a transaction fee).
    pub declined: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Lamports earned (server shares of completed requests, held in each request until its
    /// flag window closes).
    pub earned: u64,
    /// Lamports claimed: held shares and response rent taken back after flag windows closed.
    pub claimed: u64,
    /// Lamports paid in transaction fees.
    pub fees_paid: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) claimed: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lost_races: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) earned: AtomicU64,
    pub(crate) fees_paid: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ServerCounters {
        ServerCounters {
            completed: self.completed.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            lost_races: self.lost_races.load(Ordering::Relaxed),
            declined: self.declined.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            earned: self.earned.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            fees_paid: self.fees_paid.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SkipReason;
    use crate::BackendError;
    use chainference_core::state::DeclineReasons;

    #[test]
    fn only_what_holds_until_the_deadline_is_declined() {
        let declined = |error: BackendError| SkipReason::from_backend(&error).decline_reasons();
        assert_eq!(
            declined(BackendError::PromptTooLong { prompt_tokens: 9, max_tokens: 4 }),
            Some(DeclineReasons::MODEL_REFUSED)
        );
        assert_eq!(declined(BackendError::Template("no".into())), Some(DeclineReasons::MODEL_REFUSED));
        for passing in [
            BackendError::Unavailable("down".into()),
            BackendError::Inference("oom".into()),
            BackendError::Load("missing".into()),
        ] {
            assert_eq!(declined(passing), None);
        }
        assert_eq!(SkipReason::BackendRefused("shut down".into()).decline_reasons(), None);
        assert_eq!(SkipReason::ChainUnavailable("rpc".into()).decline_reasons(), None);
    }
}
