//! The instruction set: the spec of the program.
//!
//! Data is one tag byte (the variant's number, never reused) followed by the variant's fields in
//! borsh encoding. [`Instruction::decode`] parses without allocating, borrowing strings and byte
//! chunks from the data, so the program and the host share one parser. With feature `builders`,
//! [`crate::builders`] returns ready instructions (program id, account metas, data).

use crate::Address;
use crate::error::{Error, Result};
use crate::model::MAX_MODEL_ID_LEN;
use crate::state::{ConfigParams, MAX_ALLOWED_SERVERS, MAX_ENDPOINT_LEN, MAX_PROMPT_LEN, MAX_RESPONSE_LEN, Offers};
use crate::wire::Reader;

/// Arguments of [`Instruction::OpenRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenRequestArgs<'a> {
    /// The client's nonce (a seed of the request PDA).
    pub nonce: u64,
    /// The request PDA's bump: must be [`crate::state::REQUEST_BUMP`] (255, canonical).
    pub bump: u8,
    /// Lamports to escrow: the most the client pays.
    pub stake: u64,
    /// The highest price per million tokens the client accepts (lock refuses a dearer server).
    pub max_price_per_mtok: u64,
    /// Most billable tokens.
    pub max_tokens: u32,
    /// Timeout in seconds (0 = the config's default).
    pub timeout: u32,
    /// Filter: least counted completions a server needs.
    pub min_completed: u64,
    /// Filter: least success ratio (bps) a server needs.
    pub min_success_bps: u16,
    /// The client's X25519 public key for this request's response.
    pub response_key: &'a [u8; 32],
    /// The comparison commitment.
    pub commitment: &'a [u8; 32],
    /// The canonical model id.
    pub model: &'a str,
    /// Allowed server authorities (1..=8).
    pub allowed: &'a [[u8; 32]],
    /// Total size of the prompt envelope.
    pub prompt_len: u32,
    /// Its first bytes (all of it when it fits one transaction).
    pub prompt_chunk: &'a [u8],
}

/// Arguments of [`Instruction::RegisterServer`] and [`Instruction::UpdateServer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerArgs<'a> {
    /// The server's X25519 HPKE public key.
    pub hpke_key: &'a [u8; 32],
    /// Optional off-chain endpoint (empty for none).
    pub endpoint: &'a str,
    /// The model offers.
    pub offers: Offers<'a>,
}

/// Every instruction of the program. The doc of each variant is its contract: accounts in order
/// (`s` = signer, `w` = writable) and data after the tag byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instruction<'a> {
    /// **0** — Creates the config and treasury. Only the program's upgrade authority may call it.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` admin: the upgrade authority; pays rent
    /// 1. `[w]` config PDA `["config"]`
    /// 2. `[w]` treasury PDA `["treasury"]`
    /// 3. `[]` the program's ProgramData account (upgradeable loader)
    /// 4. `[]` system program
    ///
    /// Data expected: [`ConfigParams`] (36 bytes).
    InitConfig {
        /// Initial parameters.
        params: ConfigParams,
    },
    /// **1** — Replaces the parameters and (optionally the same) admin.
    ///
    /// Accounts expected:
    /// 0. `[s]` admin
    /// 1. `[w]` config
    ///
    /// Data expected: [`ConfigParams`], new admin `[u8; 32]`.
    UpdateConfig {
        /// New parameters.
        params: ConfigParams,
        /// New admin.
        new_admin: &'a Address,
    },
    /// **2** — Moves collected fees out of the treasury (it keeps its rent).
    ///
    /// Accounts expected:
    /// 0. `[s]` admin
    /// 1. `[]` config
    /// 2. `[w]` treasury
    /// 3. `[w]` destination
    ///
    /// Data expected: amount `u64`.
    WithdrawFees {
        /// Lamports to withdraw.
        amount: u64,
    },
    /// **3** — Registers a server: offers, HPKE key, endpoint. A retired server of the same
    /// authority is revived, keeping its reputation and first registration time.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` authority: pays rent
    /// 1. `[w]` server PDA `["server", authority]`
    /// 2. `[]` system program
    ///
    /// Data expected: hpke_key `[u8; 32]`, endpoint `string` (≤ 128), offers
    /// (`u32` count 1..=8, each model `string` canonical + price `u64`).
    RegisterServer(ServerArgs<'a>),
    /// **4** — Replaces a server's offers, key and endpoint (the account is resized; rent is
    /// paid or refunded by the authority).
    ///
    /// Accounts expected:
    /// 0. `[s, w]` authority
    /// 1. `[w]` server
    /// 2. `[]` system program
    ///
    /// Data expected: as [`Instruction::RegisterServer`].
    UpdateServer(ServerArgs<'a>),
    /// **5** — Activates or deactivates a server (inactive servers cannot lock).
    ///
    /// Accounts expected:
    /// 0. `[s]` authority
    /// 1. `[w]` server
    ///
    /// Data expected: active `bool`.
    SetServerActive {
        /// The new state.
        active: bool,
    },
    /// **6** — Retires a server holding no locked request: its offers and endpoint are dropped
    /// (that rent back to the authority) and its header, with the reputation, stays under the
    /// operator's wallet; [`Instruction::RegisterServer`] revives it with the history intact.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` authority
    /// 1. `[w]` server
    ///
    /// Data expected: nothing.
    CloseServer,
    /// **7** — Creates a request, escrows rent + stake, and writes the first prompt chunk. When
    /// the chunk is the whole envelope the request is published (Open) at once; otherwise it
    /// stays Draft until [`Instruction::WritePrompt`] writes the rest.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` client: pays rent and stake
    /// 1. `[w]` request PDA `["request", client, nonce_le]`
    /// 2. `[]` config
    /// 3. `[]` system program
    ///
    /// Data expected: nonce `u64`, bump `u8` (255), stake `u64`, max_price_per_mtok `u64`,
    /// max_tokens `u32`, timeout `u32`, min_completed `u64`, min_success_bps `u16`, response_key `[u8; 32]`,
    /// commitment `[u8; 32]`, model `string`, allowed (`u32` count 1..=8 × `[u8; 32]`),
    /// prompt_len `u32`, prompt_chunk `bytes`.
    OpenRequest(OpenRequestArgs<'a>),
    /// **8** — Writes the next prompt chunk of a Draft request; the last one publishes it.
    ///
    /// Accounts expected:
    /// 0. `[s]` client
    /// 1. `[w]` request
    ///
    /// Data expected: offset `u32` (must equal the bytes written so far), chunk `bytes`.
    WritePrompt {
        /// Where the chunk goes.
        offset: u32,
        /// The bytes.
        chunk: &'a [u8],
    },
    /// **9** — Cancels a Draft or Open request; the stake goes back (rent on close).
    ///
    /// Accounts expected:
    /// 0. `[s, w]` client
    /// 1. `[w]` request
    ///
    /// Data expected: nothing.
    CancelRequest,
    /// **10** — An allowed, active server that offers the model at or below the request's price
    /// cap, meets the filters and is not the client's own wallet locks an Open request before
    /// its deadline; its price and the config's fee are snapshot, and its lock window starts.
    ///
    /// Accounts expected:
    /// 0. `[s]` server authority
    /// 1. `[w]` server
    /// 2. `[w]` request
    /// 3. `[]` config (fee snapshot)
    ///
    /// Data expected: nothing.
    LockRequest,
    /// **11** — The locking server appends a sealed chunk; the response account is created on the
    /// first chunk and grows with each, its rent paid by the server.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` server authority: pays rent
    /// 1. `[w]` request (marks that a response exists)
    /// 2. `[w]` response PDA `["response", request]` (bump 255)
    /// 3. `[]` system program
    ///
    /// Data expected: final `bool`, chunk `bytes` (1..=64 KiB in total).
    AppendResponse {
        /// Whether this is the last chunk.
        is_final: bool,
        /// The sealed chunk.
        chunk: &'a [u8],
    },
    /// **12** — The locking server bills: cost by the snapshot price (tokens bounded by
    /// `max_tokens` and by the bytes of prompt and answer), the snapshot fee to the treasury out of
    /// its charge, the rest of the stake back to the client; the server's share stays held in
    /// the request until the flag window closes ([`Instruction::ClaimPayment`]).
    ///
    /// Accounts expected:
    /// 0. `[s, w]` server authority
    /// 1. `[w]` server
    /// 2. `[w]` request
    /// 3. `[]` response
    /// 4. `[]` config (what counts toward reputation)
    /// 5. `[w]` treasury
    /// 6. `[w]` client: receives the refund
    ///
    /// Data expected: tokens `u64` (billed; ≤ max_tokens).
    CompleteRequest {
        /// Billed tokens.
        tokens: u64,
    },
    /// **13** — Hands a Locked request back (Open) before the deadline: the locking server at any
    /// time, anyone once the lock window passed without a first chunk (lock squatting). The
    /// partial response is closed (rent back to the server), a release is counted against the
    /// server, and the deadline moves later by the time the lock held it.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` caller: the server authority (receives the response's rent), or anyone
    /// 1. `[w]` server of the locking authority
    /// 2. `[w]` request
    /// 3. `[w]` response PDA (may not exist yet)
    /// 4. `[]` config (lock window)
    ///
    /// Data expected: nothing.
    ReleaseRequest,
    /// **14** — After the deadline, anyone returns the whole stake of an Open or Locked request
    /// to its client; a locking server gets a timeout counted.
    ///
    /// Accounts expected:
    /// 0. `[w]` request
    /// 1. `[w]` client
    /// 2. `[w]` server of the locking authority (only when Locked)
    ///
    /// Data expected: nothing.
    ReclaimRequest,
    /// **15** — The client flags a completed answer, once, within the flag window, in one of two
    /// ways: a **flag** counts against the server's reputation (when the completion counted) and
    /// moves no lamport; a **dispute** (`refund`) takes a part of the server's held share back
    /// (config `flag_refund_bps`) and leaves the reputation alone. A flag that paid the flagger
    /// would make flagging every answer pay; so a client chooses: money back, or a mark.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` client: receives the flag refund
    /// 1. `[w]` request
    /// 2. `[w]` server that served it
    /// 3. `[]` config (flag window, refund share)
    ///
    /// Data expected: refund `bool` (true: a dispute).
    FlagResponse {
        /// Take a part of the held share back instead of marking the server's reputation.
        refund: bool,
    },
    /// **16** — The client compares two completed answers to the same prompt from different
    /// servers, revealing both commitments; both servers count a comparison, the winner a
    /// preference. Both completions must have counted (paid at least the config's
    /// `min_counted_fee` when they completed).
    ///
    /// Accounts expected:
    /// 0. `[s]` client
    /// 1. `[w]` request A
    /// 2. `[w]` request B
    /// 3. `[w]` server of A
    /// 4. `[w]` server of B
    ///
    /// Data expected: salt_a `[u8; 32]`, salt_b `[u8; 32]`, digest `[u8; 32]`, preferred `u8`
    /// (0 = A, 1 = B).
    CompareResponses {
        /// Salt of A's commitment.
        salt_a: &'a [u8; 32],
        /// Salt of B's commitment.
        salt_b: &'a [u8; 32],
        /// The prompt digest both commit to.
        digest: &'a [u8; 32],
        /// 0 for A, 1 for B.
        preferred: u8,
    },
    /// **17** — Closes a terminal request and its response: the server's held share and the
    /// response's rent to the server authority, the rest of the request's lamports to the
    /// client. The client may close at once (accepting the answer: no flag after); anyone may
    /// after the retention period.
    ///
    /// Accounts expected:
    /// 0. `[s]` caller
    /// 1. `[w]` request
    /// 2. `[w]` client
    /// 3. `[w]` response PDA (may not exist)
    /// 4. `[w]` the serving server's authority (any account when nothing is due and there is no response)
    /// 5. `[]` config (retention period)
    ///
    /// Data expected: nothing.
    CloseRequest,
    /// **18** — Once the flag window has closed, the server that completed a request takes its
    /// held share and closes its response account (rent back); the request stays for its
    /// client's history until closed.
    ///
    /// Accounts expected:
    /// 0. `[s, w]` server authority: receives the share and the response's rent
    /// 1. `[w]` request
    /// 2. `[w]` response PDA (may not exist)
    /// 3. `[]` config (flag window)
    ///
    /// Data expected: nothing.
    ClaimPayment,
    /// **19** — A server on an open request's allow-list declines it and says why: its slot's
    /// bit is set in the request's `declined` and the reasons are added to `decline_reasons`.
    /// Nothing moves; the client, seeing every allowed server decline, cancels instead of
    /// waiting for the deadline. A server that declined may still lock later.
    ///
    /// Accounts expected:
    /// 0. `[s]` server authority (on the allow-list)
    /// 1. `[w]` request (Open, before its deadline)
    ///
    /// Data expected: reasons `u8` ([`crate::state::DeclineReasons`] bits, at least one).
    DeclineRequest {
        /// Why.
        reasons: crate::state::DeclineReasons,
    },
}

/// Instruction tags, in order. Never renumber.
pub mod tag {
    #![allow(missing_docs)]
    pub const INIT_CONFIG: u8 = 0;
    pub const UPDATE_CONFIG: u8 = 1;
    pub const WITHDRAW_FEES: u8 = 2;
    pub const REGISTER_SERVER: u8 = 3;
    pub const UPDATE_SERVER: u8 = 4;
    pub const SET_SERVER_ACTIVE: u8 = 5;
    pub const CLOSE_SERVER: u8 = 6;
    pub const OPEN_REQUEST: u8 = 7;
    pub const WRITE_PROMPT: u8 = 8;
    pub const CANCEL_REQUEST: u8 = 9;
    pub const LOCK_REQUEST: u8 = 10;
    pub const APPEND_RESPONSE: u8 = 11;
    pub const COMPLETE_REQUEST: u8 = 12;
    pub const RELEASE_REQUEST: u8 = 13;
    pub const RECLAIM_REQUEST: u8 = 14;
    pub const FLAG_RESPONSE: u8 = 15;
    pub const COMPARE_RESPONSES: u8 = 16;
    pub const CLOSE_REQUEST: u8 = 17;
    pub const CLAIM_PAYMENT: u8 = 18;
    pub const DECLINE_REQUEST: u8 = 19;
}

fn read_server_args<'a>(r: &mut Reader<'a>) -> Result<ServerArgs<'a>> {
    let hpke_key = r.address()?;
    let endpoint = r.ascii(MAX_ENDPOINT_LEN, Error::InvalidEndpoint)?;
    crate::state::check_endpoint(endpoint)?;
    let offers = Offers::read(r)?;
    Ok(ServerArgs { hpke_key, endpoint, offers })
}

impl<'a> Instruction<'a> {
    /// The tag byte of this instruction.
    pub const fn tag(&self) -> u8 {
        match self {
            Self::InitConfig { .. } => tag::INIT_CONFIG,
            Self::UpdateConfig { .. } => tag::UPDATE_CONFIG,
            Self::WithdrawFees { .. } => tag::WITHDRAW_FEES,
            Self::RegisterServer(_) => tag::REGISTER_SERVER,
            Self::UpdateServer(_) => tag::UPDATE_SERVER,
            Self::SetServerActive { .. } => tag::SET_SERVER_ACTIVE,
            Self::CloseServer => tag::CLOSE_SERVER,
            Self::OpenRequest(_) => tag::OPEN_REQUEST,
            Self::WritePrompt { .. } => tag::WRITE_PROMPT,
            Self::CancelRequest => tag::CANCEL_REQUEST,
            Self::LockRequest => tag::LOCK_REQUEST,
            Self::AppendResponse { .. } => tag::APPEND_RESPONSE,
            Self::CompleteRequest { .. } => tag::COMPLETE_REQUEST,
            Self::ReleaseRequest => tag::RELEASE_REQUEST,
            Self::ReclaimRequest => tag::RECLAIM_REQUEST,
            Self::FlagResponse { .. } => tag::FLAG_RESPONSE,
            Self::CompareResponses { .. } => tag::COMPARE_RESPONSES,
            Self::CloseRequest => tag::CLOSE_REQUEST,
            Self::ClaimPayment => tag::CLAIM_PAYMENT,
            Self::DeclineRequest { .. } => tag::DECLINE_REQUEST,
        }
    }

    /// Parses instruction data. Truncated data, trailing bytes, unknown tags and out-of-bound
    /// lengths are precise errors; nothing allocates or panics.
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        let ix = match r.u8().map_err(|_| Error::UnknownInstruction)? {
            tag::INIT_CONFIG => Self::InitConfig { params: ConfigParams::read(&mut r)? },
            tag::UPDATE_CONFIG => Self::UpdateConfig { params: ConfigParams::read(&mut r)?, new_admin: r.address()? },
            tag::WITHDRAW_FEES => Self::WithdrawFees { amount: r.u64()? },
            tag::REGISTER_SERVER => Self::RegisterServer(read_server_args(&mut r)?),
            tag::UPDATE_SERVER => Self::UpdateServer(read_server_args(&mut r)?),
            tag::SET_SERVER_ACTIVE => Self::SetServerActive { active: r.bool()? },
            tag::CLOSE_SERVER => Self::CloseServer,
            tag::OPEN_REQUEST => {
                let nonce = r.u64()?;
                let bump = r.u8()?;
                let stake = r.u64()?;
                let max_price_per_mtok = r.u64()?;
                let max_tokens = r.u32()?;
                let timeout = r.u32()?;
                let min_completed = r.u64()?;
                let min_success_bps = r.u16()?;
                let response_key = r.address()?;
                let commitment = r.address()?;
                let model = r.ascii(MAX_MODEL_ID_LEN, Error::InvalidModelId)?;
                let count = r.u32()? as usize;
                if count == 0 || count > MAX_ALLOWED_SERVERS {
                    return Err(Error::InvalidAllowList);
                }
                let (allowed, _) = r.take(count.checked_mul(32).ok_or(Error::InvalidAllowList)?)?.as_chunks::<32>();
                let prompt_len = r.u32()?;
                let prompt_chunk = r.bytes(MAX_PROMPT_LEN)?;
                Self::OpenRequest(OpenRequestArgs {
                    nonce,
                    bump,
                    stake,
                    max_price_per_mtok,
                    max_tokens,
                    timeout,
                    min_completed,
                    min_success_bps,
                    response_key,
                    commitment,
                    model,
                    allowed,
                    prompt_len,
                    prompt_chunk,
                })
            }
            tag::WRITE_PROMPT => Self::WritePrompt { offset: r.u32()?, chunk: r.bytes(MAX_PROMPT_LEN)? },
            tag::CANCEL_REQUEST => Self::CancelRequest,
            tag::LOCK_REQUEST => Self::LockRequest,
            tag::APPEND_RESPONSE => Self::AppendResponse { is_final: r.bool()?, chunk: r.bytes(MAX_RESPONSE_LEN)? },
            tag::COMPLETE_REQUEST => Self::CompleteRequest { tokens: r.u64()? },
            tag::RELEASE_REQUEST => Self::ReleaseRequest,
            tag::RECLAIM_REQUEST => Self::ReclaimRequest,
            tag::FLAG_RESPONSE => Self::FlagResponse { refund: r.bool()? },
            tag::COMPARE_RESPONSES => Self::CompareResponses {
                salt_a: r.address()?,
                salt_b: r.address()?,
                digest: r.address()?,
                preferred: r.u8()?,
            },
            tag::CLOSE_REQUEST => Self::CloseRequest,
            tag::CLAIM_PAYMENT => Self::ClaimPayment,
            tag::DECLINE_REQUEST => Self::DeclineRequest { reasons: crate::state::DeclineReasons(r.u8()?) },
            _ => return Err(Error::UnknownInstruction),
        };
        r.finish()?;
        Ok(ix)
    }

    /// Encodes the instruction data (tag + fields), the inverse of [`Instruction::decode`].
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>> {
        use crate::wire::VecWriter;
        let mut w = VecWriter::default();
        w.u8(self.tag());
        match self {
            Self::InitConfig { params } => {
                w.put(&params.to_bytes()?);
            }
            Self::UpdateConfig { params, new_admin } => {
                w.put(&params.to_bytes()?).put(*new_admin);
            }
            Self::WithdrawFees { amount } => {
                w.u64(*amount);
            }
            Self::RegisterServer(a) | Self::UpdateServer(a) => {
                w.put(a.hpke_key);
                w.bytes(a.endpoint.as_bytes())?;
                w.put(a.offers.as_bytes());
            }
            Self::SetServerActive { active } => {
                w.bool(*active);
            }
            Self::OpenRequest(a) => {
                w.u64(a.nonce).u8(a.bump).u64(a.stake).u64(a.max_price_per_mtok).u32(a.max_tokens).u32(a.timeout);
                w.u64(a.min_completed).u16(a.min_success_bps).put(a.response_key).put(a.commitment);
                w.bytes(a.model.as_bytes())?;
                let count = u32::try_from(a.allowed.len()).map_err(|_| Error::InvalidAllowList)?;
                w.u32(count);
                for s in a.allowed {
                    w.put(s);
                }
                w.u32(a.prompt_len);
                w.bytes(a.prompt_chunk)?;
            }
            Self::WritePrompt { offset, chunk } => {
                w.u32(*offset);
                w.bytes(chunk)?;
            }
            Self::AppendResponse { is_final, chunk } => {
                w.bool(*is_final);
                w.bytes(chunk)?;
            }
            Self::CompleteRequest { tokens } => {
                w.u64(*tokens);
            }
            Self::FlagResponse { refund } => {
                w.bool(*refund);
            }
            Self::DeclineRequest { reasons } => {
                w.u8(reasons.0);
            }
            Self::CompareResponses { salt_a, salt_b, digest, preferred } => {
                w.put(*salt_a).put(*salt_b).put(*digest).u8(*preferred);
            }
            Self::CloseServer
            | Self::CancelRequest
            | Self::LockRequest
            | Self::ReleaseRequest
            | Self::ReclaimRequest
            | Self::CloseRequest
            | Self::ClaimPayment => {}
        }
        Ok(w.into_inner())
    }
}

/// Encodes an offer list (`u32` count, then model string + price per offer) for
/// [`Instruction::RegisterServer`] / [`Instruction::UpdateServer`]; validated by decoding it back.
#[cfg(feature = "alloc")]
pub fn encode_offers(offers: &[(&str, u64)]) -> Result<alloc::vec::Vec<u8>> {
    use crate::wire::VecWriter;
    let mut w = VecWriter::default();
    w.u32(u32::try_from(offers.len()).map_err(|_| Error::InvalidOfferCount)?);
    for (model, price) in offers {
        w.bytes(model.as_bytes())?;
        w.u64(*price);
    }
    let bytes = w.into_inner();
    let mut r = Reader::new(&bytes);
    Offers::read(&mut r)?;
    r.finish()?;
    Ok(bytes)
}
