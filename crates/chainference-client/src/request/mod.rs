//! Sending a request and following it: what to ask and of whom ([`ask`]: estimate, seal,
//! upload), then the sent request ([`pending`]: stream, wait, cancel, reclaim, close).

mod ask;
mod pending;

pub(crate) use ask::Prepared;
pub use ask::{Ask, Estimate, ServerChoice, Stake};
pub use pending::{Answer, AnswerEvent, PendingRequest, Receipt, RequestState};
pub(crate) use pending::{Finished, lock_queue, requeue};
