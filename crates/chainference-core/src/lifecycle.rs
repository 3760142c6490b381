//! The request lifecycle as one pure state machine.
//!
//! `(header, event, now) -> (header', effects)` or a precise [`Error`]; nothing else in the
//! project restates a rule. The program applies the [`Effects`] to real accounts, the SDKs call
//! the same functions to predict what the program will do (and why a server is excluded).
//!
//! ```text
//!   open(prompt fits) ─────────────────────────┐
//!   open(chunked) ──► Draft ──write_prompt*──► Open ──lock──► Locked ──complete──► Completed
//!                       │                     │  ▲            │  │                 │ flag, compare
//!                       └────cancel──► Cancelled  └──release───┘  │                 ▼
//!                                     ▲   │                       │              (close)
//!                      Open ──cancel──┘   │        Open|Locked ──reclaim (≥ deadline)──► Expired
//! ```
//! Times are unix seconds passed in by the caller. A request is lockable, appendable and
//! completable while `now < deadline`, and reclaimable once `now >= deadline`: the two never
//! overlap, so a server and a reclaiming client cannot both win.
//!
//! ```
//! use chainference_core::lifecycle::{NewRequest, ServerView, Event};
//! use chainference_core::pricing::ServerStats;
//! use chainference_core::state::{ConfigParams, RequestStatus};
//!
//! let params = ConfigParams::default();
//! let new = NewRequest { client: [1; 32], nonce: 0, bump: 255, stake: 1_000_000, max_price_per_mtok: 2_000_000,
//!     max_tokens: 400, timeout: 0, min_completed: 0, min_success_bps: 0, allowed_count: 1, prompt_len: 100 };
//! let mut req = new.create(&params, 1_000).unwrap();
//! req.apply(Event::PromptWritten { signer: &[1; 32], offset: 0, len: 100 }, 1_000).unwrap();
//! assert_eq!(req.status, RequestStatus::Open);
//!
//! let server = ServerView { authority: &[9; 32], active: true, stats: ServerStats::default(),
//!     price_for_model: Some(2_000_000) };
//! req.apply(Event::Lock { server, allowed: &[[9; 32]], fee_bps: params.fee_bps }, 1_010).unwrap();
//! let fx = req.apply(Event::Complete { server: &[9; 32], tokens: 300, response_finished: true,
//!     response_len: 900, min_counted_fee: params.min_counted_fee }, 1_020).unwrap();
//! // The fee and the refund move now; the server's 540 stay held until the flag window closes.
//! assert_eq!((fx.to_treasury, fx.to_server, fx.to_client, req.server_due), (60, 0, 999_400, 540));
//! let fx = req.apply(Event::Claim { signer: &[9; 32], flag_window: params.flag_window },
//!     1_020 + i64::from(params.flag_window)).unwrap();
//! assert_eq!(fx.to_server, 540);
//! ```

use crate::Address;
use crate::error::{Error, Result};
use crate::pricing::{BPS_DENOMINATOR, Rounding, mul_div};
use crate::pricing::{ServerStats, settle};
use crate::state::{
    ConfigParams, DeclineReasons, FLAG_COMPARED, FLAG_COUNTED, FLAG_FLAGGED, FLAG_HAS_RESPONSE, FLAG_PREFERRED,
    MAX_ALLOWED_SERVERS, MAX_PROMPT_LEN, REQUEST_BUMP, RequestHeader, RequestStatus,
};

/// What a new request asks for; [`NewRequest::create`] validates it into a Draft header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRequest {
    /// The client's wallet.
    pub client: Address,
    /// The client's nonce for this request.
    pub nonce: u64,
    /// The request PDA's bump: must be [`REQUEST_BUMP`].
    pub bump: u8,
    /// Lamports escrowed: the most the client pays.
    pub stake: u64,
    /// The client's price cap, lamports per million tokens.
    pub max_price_per_mtok: u64,
    /// Most billable tokens.
    pub max_tokens: u32,
    /// Timeout in seconds; 0 for the config's default.
    pub timeout: u32,
    /// Filter: least counted completions.
    pub min_completed: u64,
    /// Filter: least success ratio in bps.
    pub min_success_bps: u16,
    /// Allow-list length (the list itself is checked by [`check_allow_list`]).
    pub allowed_count: u8,
    /// Size of the prompt envelope.
    pub prompt_len: u32,
}

impl NewRequest {
    /// Validates the parameters and builds the Draft header (no prompt bytes written yet).
    pub fn create(&self, params: &ConfigParams, now: i64) -> Result<RequestHeader> {
        if self.bump != REQUEST_BUMP {
            return Err(Error::NonCanonicalBump);
        }
        if self.stake == 0 {
            return Err(Error::ZeroStake);
        }
        if self.allowed_count == 0 || self.allowed_count as usize > MAX_ALLOWED_SERVERS {
            return Err(Error::InvalidAllowList);
        }
        if self.prompt_len == 0 || self.prompt_len as usize > MAX_PROMPT_LEN {
            return Err(Error::InvalidPromptLength);
        }
        if self.min_success_bps > 10_000 {
            return Err(Error::InvalidFilter);
        }
        let timeout = params.effective_timeout(self.timeout)?;
        Ok(RequestHeader {
            kind: crate::state::AccountKind::Request as u8,
            version: crate::state::LAYOUT_VERSION,
            declined: 0,
            decline_reasons: 0,
            bump: self.bump,
            status: RequestStatus::Draft,
            flags: 0,
            allowed_count: self.allowed_count,
            fee_bps: 0,
            max_tokens: self.max_tokens,
            timeout,
            min_success_bps: self.min_success_bps,
            nonce: self.nonce,
            stake: self.stake,
            max_price_per_mtok: self.max_price_per_mtok,
            min_completed: self.min_completed,
            created_at: now,
            deadline: 0,
            locked_at: 0,
            price_per_mtok: 0,
            tokens: 0,
            cost: 0,
            fee: 0,
            server_due: 0,
            settled_at: 0,
            release_count: 0,
            prompt_len: self.prompt_len,
            prompt_written: 0,
            client: self.client,
            locked_by: [0; 32],
        })
    }
}

/// Checks an allow-list: 1..=8 entries, none twice, none all-zero.
pub fn check_allow_list(allowed: &[[u8; 32]]) -> Result<()> {
    if allowed.is_empty() || allowed.len() > MAX_ALLOWED_SERVERS {
        return Err(Error::InvalidAllowList);
    }
    for (i, a) in allowed.iter().enumerate() {
        if crate::same_address(a, &[0; 32]) {
            return Err(Error::InvalidAllowList);
        }
        if allowed.iter().take(i).any(|b| crate::same_address(b, a)) {
            return Err(Error::DuplicateAllowedServer);
        }
    }
    Ok(())
}

/// What the lifecycle needs to know about a server trying to lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerView<'a> {
    /// The server's authority (what allow-lists name).
    pub authority: &'a Address,
    /// Whether it is active.
    pub active: bool,
    /// Its reputation counters now.
    pub stats: ServerStats,
    /// Its price for the request's model, `None` if it does not offer it.
    pub price_for_model: Option<u64>,
}

/// What a request asks of the server that locks it (besides being on its allow-list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTerms<'a> {
    /// The request's client: its own server may not lock it.
    pub client: &'a Address,
    /// The price cap, lamports per million tokens.
    pub max_price_per_mtok: u64,
    /// Least counted completions.
    pub min_completed: u64,
    /// Least success ratio, bps.
    pub min_success_bps: u16,
}

impl RequestHeader {
    /// The terms a locking server must meet.
    pub const fn lock_terms(&self) -> LockTerms<'_> {
        LockTerms {
            client: &self.client,
            max_price_per_mtok: self.max_price_per_mtok,
            min_completed: self.min_completed,
            min_success_bps: self.min_success_bps,
        }
    }
}

impl ServerView<'_> {
    /// Every reason this server may not lock a request with these terms, in the order the lock
    /// checks them (`ServerInactive`, `ModelNotOffered`, `PriceAboveCap`, `SelfDealing`,
    /// `MinCompletedNotMet`, `MinSuccessNotMet`); all `None` when it may. Clients use the same
    /// rule to choose servers.
    pub fn refusals(&self, terms: &LockTerms<'_>) -> [Option<Error>; 6] {
        [
            (!self.active).then_some(Error::ServerInactive),
            self.price_for_model.is_none().then_some(Error::ModelNotOffered),
            self.price_for_model.is_some_and(|p| p > terms.max_price_per_mtok).then_some(Error::PriceAboveCap),
            (self.authority == terms.client).then_some(Error::SelfDealing),
            (self.stats.counted < terms.min_completed).then_some(Error::MinCompletedNotMet),
            (self.stats.success_bps() < terms.min_success_bps).then_some(Error::MinSuccessNotMet),
        ]
    }
}

/// One step in a request's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The client uploaded `len` prompt bytes at `offset`; the last one publishes the request.
    PromptWritten {
        /// Who signed.
        signer: &'a Address,
        /// Where the chunk starts.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// The client withdraws a request no server holds.
    Cancel {
        /// Who signed.
        signer: &'a Address,
    },
    /// A server locks the request.
    Lock {
        /// The server.
        server: ServerView<'a>,
        /// The request's allow-list.
        allowed: &'a [[u8; 32]],
        /// The config's fee now, snapshot into the request.
        fee_bps: u16,
    },
    /// A server on the allow-list says it will not answer, and why, so the client need not
    /// wait for the deadline: once every allowed server declined, the client cancels.
    Decline {
        /// Who signed (a server authority).
        server: &'a Address,
        /// The request's allow-list.
        allowed: &'a [[u8; 32]],
        /// Why (at least one reason).
        reasons: DeclineReasons,
    },
    /// The locking server appends a response chunk.
    Append {
        /// Who signed.
        server: &'a Address,
        /// Whether the response already holds its final chunk.
        response_finished: bool,
    },
    /// The request goes back to Open before the deadline: released by its locking server, or
    /// by anyone once the lock window passed without a first chunk.
    Release {
        /// Who signed.
        signer: &'a Address,
        /// The config's lock window.
        lock_window: u32,
    },
    /// The locking server bills its answer.
    Complete {
        /// Who signed.
        server: &'a Address,
        /// Billed tokens.
        tokens: u64,
        /// Whether the response holds its final chunk.
        response_finished: bool,
        /// Bytes of the response's chunk data (bounds the billed tokens with the prompt's).
        response_len: u32,
        /// The config's least fee that counts toward reputation.
        min_counted_fee: u64,
    },
    /// Anyone reclaims the stake for the client after the deadline.
    Reclaim,
    /// The client flags a completed answer: a flag counts against the server when the
    /// completion counted; a dispute (`refund`) takes a part of the held share back instead.
    Flag {
        /// Who signed.
        signer: &'a Address,
        /// The config's flag window.
        flag_window: u32,
        /// The config's share of the held payment a dispute returns to the client.
        flag_refund_bps: u16,
        /// A dispute: money back, no mark on the server's reputation.
        refund: bool,
    },
    /// The serving server takes its held share and its response's rent after the flag window.
    Claim {
        /// Who signed.
        signer: &'a Address,
        /// The config's flag window.
        flag_window: u32,
    },
    /// The request's accounts are closed.
    Close {
        /// Who signed.
        signer: &'a Address,
        /// The config's retention period.
        retention: u32,
    },
}

/// A change to the counters of the server involved in a step (the request's `locked_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StatsDelta {
    /// +1 completed.
    pub completed: bool,
    /// +1 counted and `fees` added (the completion paid at least the counted fee).
    pub counted: bool,
    /// Protocol fee added to the server's `fees` (only with `counted`).
    pub fees: u64,
    /// +1 flagged.
    pub flagged: bool,
    /// +1 timed out.
    pub timed_out: bool,
    /// +1 released.
    pub released: bool,
    /// +1 (acquired) or -1 (let go) on `locked_count`; 0 for none.
    pub lock_change: i8,
}

impl StatsDelta {
    /// Whether anything changes.
    pub const fn is_empty(&self) -> bool {
        !self.completed && !self.counted && !self.flagged && !self.timed_out && !self.released && self.lock_change == 0
    }

    /// Applies the delta to a server's counters and lock count, checked.
    pub fn apply(&self, stats: &mut ServerStats, locked_count: &mut u32) -> Result<()> {
        fn bump(v: &mut u64, yes: bool) -> Result<()> {
            if yes {
                *v = v.checked_add(1).ok_or(Error::ArithmeticOverflow)?;
            }
            Ok(())
        }
        bump(&mut stats.completed, self.completed)?;
        bump(&mut stats.counted, self.counted)?;
        if self.counted {
            stats.fees = stats.fees.checked_add(self.fees).ok_or(Error::ArithmeticOverflow)?;
        }
        bump(&mut stats.flagged, self.flagged)?;
        bump(&mut stats.timed_out, self.timed_out)?;
        bump(&mut stats.released, self.released)?;
        *locked_count = match self.lock_change {
            0 => *locked_count,
            1 => locked_count.checked_add(1).ok_or(Error::ArithmeticOverflow)?,
            -1 => locked_count.checked_sub(1).ok_or(Error::ArithmeticOverflow)?,
            _ => return Err(Error::ArithmeticOverflow),
        };
        Ok(())
    }
}

/// Everything a step does besides changing the header: lamports out of the request's escrow,
/// counters on the server involved, and account housekeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Effects {
    /// Lamports from the escrow to the client.
    pub to_client: u64,
    /// Lamports from the escrow to the server's authority (its held share, at claim or close).
    pub to_server: u64,
    /// Lamports from the escrow to the treasury.
    pub to_treasury: u64,
    /// Counter changes on the server involved.
    pub server: StatsDelta,
    /// Close the response account (rent back to the server that paid it).
    pub discard_response: bool,
    /// Close the request account (everything it holds back to the client) and its response.
    pub close: bool,
}

impl Effects {
    /// Total lamports leaving the escrow.
    pub fn escrow_out(&self) -> Result<u64> {
        self.to_client
            .checked_add(self.to_server)
            .and_then(|v| v.checked_add(self.to_treasury))
            .ok_or(Error::ArithmeticOverflow)
    }
}

impl RequestHeader {
    /// Applies one event at time `now`, returning its effects, or an error and the header
    /// unchanged: every branch of the step finishes all its checks and fallible arithmetic
    /// before it writes a field (property-tested), so no copy of the header is needed.
    pub fn apply(&mut self, event: Event<'_>, now: i64) -> Result<Effects> {
        self.step(event, now)
    }

    fn expect(&self, status: RequestStatus) -> Result<()> {
        if self.status == status { Ok(()) } else { Err(Error::WrongState) }
    }

    fn before_deadline(&self, now: i64) -> Result<()> {
        if now < self.deadline { Ok(()) } else { Err(Error::DeadlinePassed) }
    }

    /// The first instant the flag window no longer covers: flags need `now < end`, claims
    /// `now >= end`, so the two never overlap.
    fn flag_window_end(&self, flag_window: u32) -> Result<i64> {
        self.settled_at.checked_add(i64::from(flag_window)).ok_or(Error::ArithmeticOverflow)
    }

    fn locked_by_signer(&self, server: &Address) -> Result<()> {
        if self.locked_by == *server { Ok(()) } else { Err(Error::NotLockedByServer) }
    }

    /// [`Event::Flag`]'s rule, reachable on its own so the program's flag instruction (its
    /// smallest budget) runs it inlined, without the event dispatch; [`RequestHeader::apply`]
    /// runs the same code. Same contract: all checks before any write.
    #[inline(always)]
    pub fn flag(&mut self, signer: &Address, terms: FlagTerms, now: i64) -> Result<Effects> {
        let FlagTerms { flag_window, flag_refund_bps, refund } = terms;
        self.expect(RequestStatus::Completed)?;
        if !crate::same_address(&self.client, signer) {
            return Err(Error::NotClient);
        }
        if self.flagged() {
            return Err(Error::AlreadyFlagged);
        }
        if now >= self.flag_window_end(flag_window)? {
            return Err(Error::FlagWindowClosed);
        }
        let back = if refund {
            mul_div(self.server_due, flag_refund_bps as u64, BPS_DENOMINATOR, Rounding::Down)
                .filter(|r| *r <= self.server_due)
                .ok_or(Error::InvalidFeeBps)?
        } else {
            0
        };
        self.server_due = self.server_due.saturating_sub(back);
        self.flags |= FLAG_FLAGGED;
        let mut fx = Effects { to_client: back, ..Effects::default() };
        // A mark costs the flagger the refund it could have had; a dispute leaves none.
        fx.server.flagged = !refund && self.counted();
        Ok(fx)
    }

    fn step(&mut self, event: Event<'_>, now: i64) -> Result<Effects> {
        let mut fx = Effects::default();
        match event {
            Event::PromptWritten { signer, offset, len } => {
                self.expect(RequestStatus::Draft)?;
                if self.client != *signer {
                    return Err(Error::NotClient);
                }
                let end = offset.checked_add(len).ok_or(Error::PromptChunkOutOfPlace)?;
                if offset != self.prompt_written || end > self.prompt_len || len == 0 {
                    return Err(Error::PromptChunkOutOfPlace);
                }
                let publish = end == self.prompt_len;
                let deadline = now.checked_add(i64::from(self.timeout)).ok_or(Error::ArithmeticOverflow)?;
                self.prompt_written = end;
                if publish {
                    // Published: the timeout runs from now, not from the first chunk.
                    self.status = RequestStatus::Open;
                    self.deadline = deadline;
                }
            }
            Event::Cancel { signer } => {
                if !matches!(self.status, RequestStatus::Draft | RequestStatus::Open) {
                    return Err(Error::WrongState);
                }
                if self.client != *signer {
                    return Err(Error::NotClient);
                }
                self.status = RequestStatus::Cancelled;
                self.settled_at = now;
                fx.to_client = self.stake;
            }
            Event::Lock { server, allowed, fee_bps } => {
                self.expect(RequestStatus::Open)?;
                self.before_deadline(now)?;
                if !allowed.iter().any(|a| a == server.authority) {
                    return Err(Error::ServerNotAllowed);
                }
                if let Some(refusal) = server.refusals(&self.lock_terms()).into_iter().flatten().next() {
                    return Err(refusal);
                }
                let price = server.price_for_model.ok_or(Error::ModelNotOffered)?;
                self.status = RequestStatus::Locked;
                self.locked_by = *server.authority;
                self.price_per_mtok = price;
                self.fee_bps = fee_bps;
                self.locked_at = now;
                fx.server.lock_change = 1;
            }
            Event::Decline { server, allowed, reasons } => {
                if reasons.is_empty() {
                    return Err(Error::NoDeclineReason);
                }
                self.expect(RequestStatus::Open)?;
                self.before_deadline(now)?;
                let slot = allowed.iter().position(|a| a == server).ok_or(Error::ServerNotAllowed)?;
                let bit = 1u8.checked_shl(u32::try_from(slot).map_err(|_| Error::ServerNotAllowed)?);
                let bit = bit.ok_or(Error::ServerNotAllowed)?;
                if self.declined & bit != 0 {
                    return Err(Error::AlreadyDeclined);
                }
                self.declined |= bit;
                self.decline_reasons |= reasons.0;
            }
            Event::Append { server, response_finished } => {
                self.expect(RequestStatus::Locked)?;
                self.locked_by_signer(server)?;
                self.before_deadline(now)?;
                if response_finished {
                    return Err(Error::ResponseFinished);
                }
                self.flags |= FLAG_HAS_RESPONSE;
            }
            Event::Release { signer, lock_window } => {
                self.expect(RequestStatus::Locked)?;
                if self.locked_by != *signer {
                    // Anyone may end a lock that showed no progress within the lock window.
                    if self.has_response() {
                        return Err(Error::NotLockedByServer);
                    }
                    let window_ends =
                        self.locked_at.checked_add(i64::from(lock_window)).ok_or(Error::ArithmeticOverflow)?;
                    if now < window_ends {
                        return Err(Error::LockWindowOpen);
                    }
                }
                self.before_deadline(now)?;
                let release_count = self.release_count.checked_add(1).ok_or(Error::ArithmeticOverflow)?;
                // A squatted lock ended by someone else gives the request back the time it held
                // it, up to one extra timeout in all (so repeated squats cannot keep the stake
                // forever). A server's own release does not: the client may cancel at once.
                let deadline = if self.locked_by == *signer {
                    self.deadline
                } else {
                    let held = now.checked_sub(self.locked_at).ok_or(Error::ArithmeticOverflow)?.max(0);
                    let cap = self
                        .created_at
                        .checked_add(i64::from(self.timeout).checked_mul(2).ok_or(Error::ArithmeticOverflow)?)
                        .ok_or(Error::ArithmeticOverflow)?;
                    self.deadline.checked_add(held).ok_or(Error::ArithmeticOverflow)?.min(cap).max(self.deadline)
                };
                self.status = RequestStatus::Open;
                self.locked_by = [0; 32];
                self.price_per_mtok = 0;
                self.fee_bps = 0;
                self.locked_at = 0;
                self.deadline = deadline;
                self.release_count = release_count;
                self.flags &= !FLAG_HAS_RESPONSE;
                fx.server.released = true;
                fx.server.lock_change = -1;
                fx.discard_response = true;
            }
            Event::Complete { server, tokens, response_finished, response_len, min_counted_fee } => {
                self.expect(RequestStatus::Locked)?;
                self.locked_by_signer(server)?;
                self.before_deadline(now)?;
                if tokens > u64::from(self.max_tokens) {
                    return Err(Error::TokensExceedMax);
                }
                if !response_finished {
                    return Err(Error::ResponseNotFinished);
                }
                // Token counts are self-reported; every token is at least one byte of the sealed
                // prompt or answer, so more tokens than bytes is a lie the chain can see.
                if tokens > u64::from(self.prompt_len).saturating_add(u64::from(response_len)) {
                    return Err(Error::TokensExceedBytes);
                }
                let s = settle(tokens, self.price_per_mtok, self.stake, self.fee_bps)?;
                self.status = RequestStatus::Completed;
                self.tokens = tokens;
                self.cost = s.cost;
                self.fee = s.fee;
                self.server_due = s.server;
                self.settled_at = now;
                if s.fee >= min_counted_fee {
                    self.flags |= FLAG_COUNTED;
                }
                fx.to_treasury = s.fee;
                fx.to_client = s.refund;
                fx.server.completed = true;
                fx.server.counted = s.fee >= min_counted_fee;
                fx.server.fees = s.fee;
                fx.server.lock_change = -1;
            }
            Event::Reclaim => {
                if !matches!(self.status, RequestStatus::Open | RequestStatus::Locked) {
                    return Err(Error::WrongState);
                }
                if now < self.deadline {
                    return Err(Error::DeadlineNotReached);
                }
                if self.status == RequestStatus::Locked {
                    fx.server.timed_out = true;
                    fx.server.lock_change = -1;
                }
                self.status = RequestStatus::Expired;
                self.settled_at = now;
                fx.to_client = self.stake;
            }
            Event::Flag { signer, flag_window, flag_refund_bps, refund } => {
                return self.flag(signer, FlagTerms { flag_window, flag_refund_bps, refund }, now);
            }
            Event::Claim { signer, flag_window } => {
                self.expect(RequestStatus::Completed)?;
                self.locked_by_signer(signer)?;
                if now < self.flag_window_end(flag_window)? {
                    return Err(Error::FlagWindowOpen);
                }
                if self.server_due == 0 && !self.has_response() {
                    return Err(Error::NothingToClaim);
                }
                fx.to_server = self.server_due;
                fx.discard_response = self.has_response();
                self.server_due = 0;
                self.flags &= !FLAG_HAS_RESPONSE;
            }
            Event::Close { signer, retention } => {
                if !self.status.is_terminal() {
                    return Err(Error::WrongState);
                }
                if self.client != *signer {
                    let open_to_all =
                        self.settled_at.checked_add(i64::from(retention)).ok_or(Error::ArithmeticOverflow)?;
                    if now < open_to_all {
                        return Err(Error::RetentionNotElapsed);
                    }
                }
                // What the server is still owed leaves with the close: a client closing inside
                // the flag window accepts the answer.
                fx.to_server = self.server_due;
                self.server_due = 0;
                fx.close = true;
                fx.discard_response = true;
            }
        }
        Ok(fx)
    }
}

/// A flag's terms ([`Event::Flag`] less its signer), for [`RequestHeader::flag`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagTerms {
    /// The config's flag window.
    pub flag_window: u32,
    /// The config's share of the held payment a dispute returns to the client.
    pub flag_refund_bps: u16,
    /// A dispute: money back, no mark on the server's reputation.
    pub refund: bool,
}

/// What a client reveals to compare two answers (see [`crate::envelope`] for how it is made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareReveal<'a> {
    /// The first request's commitment salt.
    pub salt_a: &'a [u8; 32],
    /// The second request's commitment salt.
    pub salt_b: &'a [u8; 32],
    /// The keyed digest of the shared prompt.
    pub digest: &'a [u8; 32],
}

/// Domain separator of comparison commitments.
pub const COMMITMENT_DOMAIN: &[u8] = b"chainference/v1/commitment";

/// The three parts hashed (SHA-256, concatenated) into a commitment: domain, salt, digest.
/// The program hashes them with the `sol_sha256` syscall, hosts with the `sha2` crate.
pub const fn commitment_preimage<'a>(salt: &'a [u8; 32], digest: &'a [u8; 32]) -> [&'a [u8]; 3] {
    [COMMITMENT_DOMAIN, salt.as_slice(), digest.as_slice()]
}

/// The two requests of a comparison, with what the check needs of each.
#[derive(Debug, PartialEq, Eq)]
pub struct CompareSides<'a> {
    /// First request's header (updated in place).
    pub a: &'a mut RequestHeader,
    /// First request's model id (bytes).
    pub model_a: &'a [u8],
    /// First request's commitment.
    pub commitment_a: &'a [u8; 32],
    /// Second request's header (updated in place).
    pub b: &'a mut RequestHeader,
    /// Second request's model id (bytes).
    pub model_b: &'a [u8],
    /// Second request's commitment.
    pub commitment_b: &'a [u8; 32],
}

/// Effects of a comparison: both servers get `comparisons + 1`, the winner `preferred + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareEffects {
    /// Authority of the first request's server.
    pub server_a: Address,
    /// Authority of the second request's server.
    pub server_b: Address,
    /// Whether the first server won (otherwise the second did).
    pub a_preferred: bool,
}

impl CompareEffects {
    /// Applies the comparison to one server's counters (`is_a`: it served the first request).
    pub fn apply(&self, stats: &mut ServerStats, is_a: bool) -> Result<()> {
        stats.comparisons = stats.comparisons.checked_add(1).ok_or(Error::ArithmeticOverflow)?;
        if is_a == self.a_preferred {
            stats.preferred = stats.preferred.checked_add(1).ok_or(Error::ArithmeticOverflow)?;
        }
        Ok(())
    }
}

/// Compares two completed requests of one client for the same prompt: checks the signer, the
/// status, model, servers, that both completions counted (paid at least the config's
/// `min_counted_fee` when they completed: a comparison only counts when it cost something) and
/// both commitments (`hash` is SHA-256 over the concatenated parts), then marks both compared.
/// `preferred`: 0 for the first, 1 for the second. On error neither header changes.
pub fn compare(
    sides: CompareSides<'_>,
    signer: &Address,
    reveal: &CompareReveal<'_>,
    preferred: u8,
    hash: impl Fn(&[&[u8]]) -> [u8; 32],
) -> Result<CompareEffects> {
    let CompareSides { a, model_a, commitment_a, b, model_b, commitment_b } = sides;
    if a.status != RequestStatus::Completed || b.status != RequestStatus::Completed {
        return Err(Error::WrongState);
    }
    if a.client != b.client {
        return Err(Error::ClientMismatch);
    }
    if a.client != *signer {
        return Err(Error::NotClient);
    }
    if model_a != model_b {
        return Err(Error::ModelMismatch);
    }
    if a.locked_by == b.locked_by {
        return Err(Error::SameServer);
    }
    if a.compared() || b.compared() {
        return Err(Error::AlreadyCompared);
    }
    if preferred > 1 {
        return Err(Error::InvalidPreference);
    }
    if !a.counted() || !b.counted() {
        return Err(Error::BelowCountedFee);
    }
    if hash(&commitment_preimage(reveal.salt_a, reveal.digest)) != *commitment_a
        || hash(&commitment_preimage(reveal.salt_b, reveal.digest)) != *commitment_b
    {
        return Err(Error::CommitmentMismatch);
    }
    a.flags |= FLAG_COMPARED;
    b.flags |= FLAG_COMPARED;
    if preferred == 0 {
        a.flags |= FLAG_PREFERRED;
    } else {
        b.flags |= FLAG_PREFERRED;
    }
    Ok(CompareEffects { server_a: a.locked_by, server_b: b.locked_by, a_preferred: preferred == 0 })
}
