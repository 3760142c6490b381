//! Host-side instruction builders: each returns a ready [`BuiltInstruction`] (program id,
//! account metas in the order the instruction's doc lists, encoded data), free of any Solana SDK
//! type so the Rust SDKs, the wasm bindings and tests can all convert it to their own.
//!
//! ```
//! use chainference_core::builders::{self, Program};
//! let program = Program::default();
//! let ix = builders::cancel_request(&program, &[1; 32], &[2; 32]);
//! assert_eq!(ix.data, vec![9]);
//! assert!(ix.accounts[0].is_signer && ix.accounts[0].is_writable);
//! ```

use alloc::vec;
use alloc::vec::Vec;

use crate::Address;
use crate::error::Result;
use crate::instruction::{Instruction, OpenRequestArgs, ServerArgs};
use crate::pda;
use crate::state::{ConfigParams, Offers};
use crate::wire::Reader;

/// One account reference of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountMeta {
    /// The account's address.
    pub pubkey: Address,
    /// Whether it must sign.
    pub is_signer: bool,
    /// Whether it is writable.
    pub is_writable: bool,
}

impl AccountMeta {
    /// A writable account.
    pub const fn writable(pubkey: Address, is_signer: bool) -> Self {
        AccountMeta { pubkey, is_signer, is_writable: true }
    }
    /// A read-only account.
    pub const fn readonly(pubkey: Address, is_signer: bool) -> Self {
        AccountMeta { pubkey, is_signer, is_writable: false }
    }
}

/// A ready instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltInstruction {
    /// The program to invoke.
    pub program_id: Address,
    /// Accounts, in the documented order.
    pub accounts: Vec<AccountMeta>,
    /// Tag byte and fields.
    pub data: Vec<u8>,
}

/// The deployment the builders target: its program id and the PDAs derived from it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// The program id.
    pub id: Address,
    /// The config PDA.
    pub config: Address,
    /// The treasury PDA.
    pub treasury: Address,
}

impl Default for Program {
    fn default() -> Self {
        Program::new(pda::PROGRAM_ID)
    }
}

impl Program {
    /// A deployment at `id`.
    pub fn new(id: Address) -> Self {
        Program { id, config: pda::config_address(&id).0, treasury: pda::treasury_address(&id).0 }
    }

    /// The server PDA of `authority`.
    pub fn server(&self, authority: &Address) -> Address {
        pda::server_address(&self.id, authority).0
    }

    /// The request PDA and bump of `client`'s `nonce`.
    pub fn request(&self, client: &Address, nonce: u64) -> (Address, u8) {
        pda::request_address(&self.id, client, nonce)
    }

    /// The response PDA and bump of `request`.
    pub fn response(&self, request: &Address) -> (Address, u8) {
        pda::response_address(&self.id, request)
    }

    /// The first nonce at or after `from` that `client` may open a request with (its request
    /// and response PDAs both canonical at bump 255; see [`pda::nonce_is_usable`]).
    pub fn usable_nonce(&self, client: &Address, from: u64) -> u64 {
        pda::usable_nonce(&self.id, client, from)
    }

    fn build(&self, ix: &Instruction<'_>, accounts: Vec<AccountMeta>) -> Result<BuiltInstruction> {
        Ok(BuiltInstruction { program_id: self.id, accounts, data: ix.encode()? })
    }

    fn build_infallible(&self, ix: &Instruction<'_>, accounts: Vec<AccountMeta>) -> BuiltInstruction {
        // Fixed-size instructions always encode.
        let data = ix.encode().unwrap_or_default();
        BuiltInstruction { program_id: self.id, accounts, data }
    }
}

use AccountMeta as M;

/// [`Instruction::InitConfig`].
pub fn init_config(p: &Program, admin: &Address, params: ConfigParams) -> BuiltInstruction {
    let program_data = pda::program_data_address(&p.id).0;
    p.build_infallible(
        &Instruction::InitConfig { params },
        vec![
            M::writable(*admin, true),
            M::writable(p.config, false),
            M::writable(p.treasury, false),
            M::readonly(program_data, false),
            M::readonly(pda::SYSTEM_PROGRAM_ID, false),
        ],
    )
}

/// [`Instruction::UpdateConfig`].
pub fn update_config(p: &Program, admin: &Address, params: ConfigParams, new_admin: &Address) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::UpdateConfig { params, new_admin },
        vec![M::readonly(*admin, true), M::writable(p.config, false)],
    )
}

/// [`Instruction::WithdrawFees`].
pub fn withdraw_fees(p: &Program, admin: &Address, destination: &Address, amount: u64) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::WithdrawFees { amount },
        vec![
            M::readonly(*admin, true),
            M::readonly(p.config, false),
            M::writable(p.treasury, false),
            M::writable(*destination, false),
        ],
    )
}

/// What a server publishes: its HPKE key, optional endpoint, and offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerProfile<'a> {
    /// The X25519 HPKE public key.
    pub hpke_key: &'a [u8; 32],
    /// Off-chain endpoint URL, empty for none.
    pub endpoint: &'a str,
    /// `(canonical model id, lamports per million tokens)`.
    pub offers: &'a [(&'a str, u64)],
}

fn server_ix(p: &Program, authority: &Address, profile: &ServerProfile<'_>, update: bool) -> Result<BuiltInstruction> {
    let offer_bytes = crate::instruction::encode_offers(profile.offers)?;
    let offers = Offers::read(&mut Reader::new(&offer_bytes))?;
    let args = ServerArgs { hpke_key: profile.hpke_key, endpoint: profile.endpoint, offers };
    let ix = if update { Instruction::UpdateServer(args) } else { Instruction::RegisterServer(args) };
    p.build(
        &ix,
        vec![
            M::writable(*authority, true),
            M::writable(p.server(authority), false),
            M::readonly(pda::SYSTEM_PROGRAM_ID, false),
        ],
    )
}

/// [`Instruction::RegisterServer`].
pub fn register_server(p: &Program, authority: &Address, profile: &ServerProfile<'_>) -> Result<BuiltInstruction> {
    server_ix(p, authority, profile, false)
}

/// [`Instruction::UpdateServer`].
pub fn update_server(p: &Program, authority: &Address, profile: &ServerProfile<'_>) -> Result<BuiltInstruction> {
    server_ix(p, authority, profile, true)
}

/// [`Instruction::SetServerActive`].
pub fn set_server_active(p: &Program, authority: &Address, active: bool) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::SetServerActive { active },
        vec![M::readonly(*authority, true), M::writable(p.server(authority), false)],
    )
}

/// [`Instruction::CloseServer`].
pub fn close_server(p: &Program, authority: &Address) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::CloseServer,
        vec![M::writable(*authority, true), M::writable(p.server(authority), false)],
    )
}

/// [`Instruction::OpenRequest`]. The request address is derived from `client` and
/// `args.nonce`, which must be usable ([`Program::usable_nonce`]); `args.bump` must be 255.
pub fn open_request(p: &Program, client: &Address, args: &OpenRequestArgs<'_>) -> Result<BuiltInstruction> {
    let (request, _) = p.request(client, args.nonce);
    p.build(
        &Instruction::OpenRequest(*args),
        vec![
            M::writable(*client, true),
            M::writable(request, false),
            M::readonly(p.config, false),
            M::readonly(pda::SYSTEM_PROGRAM_ID, false),
        ],
    )
}

/// Largest Solana transaction, in bytes.
pub const MAX_TRANSACTION_LEN: usize = 1232;

/// The largest first prompt chunk an [`Instruction::OpenRequest`] can carry and still fit a
/// transaction alone (one signer, its five accounts), for a model id of `model_len` bytes and
/// `allowed` servers. Leave room for other instructions (a compute budget) with `reserve`.
pub const fn open_request_first_chunk_max(model_len: usize, allowed: usize, reserve: usize) -> usize {
    // signature (1 + 64), header 3, 5 keys (1 + 160), blockhash 32, one instruction:
    // count 1, program index 1, accounts (1 + 4), data length 2.
    const TX_OVERHEAD: usize = 65 + 3 + 161 + 32 + 1 + 1 + 5 + 2;
    // tag 1, nonce 8, bump 1, stake 8, price cap 8, max_tokens 4, timeout 4, min_completed 8,
    // min_success_bps 2, keys 64, model prefix 4, allowed prefix 4, prompt_len 4, chunk prefix 4.
    const DATA_FIXED: usize = 1 + 8 + 1 + 8 + 8 + 4 + 4 + 8 + 2 + 64 + 4 + 4 + 4 + 4;
    MAX_TRANSACTION_LEN
        .saturating_sub(TX_OVERHEAD + DATA_FIXED)
        .saturating_sub(model_len)
        .saturating_sub(allowed.saturating_mul(32))
        .saturating_sub(reserve)
}

/// The largest [`Instruction::WritePrompt`] chunk that fits a transaction alone.
pub const WRITE_PROMPT_CHUNK_MAX: usize = MAX_TRANSACTION_LEN - (65 + 3 + 97 + 32 + 1 + 1 + 3 + 2) - (1 + 4 + 4);

/// Bytes every transaction of a prompt upload leaves free by default, for instructions the
/// sender or its wallet adds (a compute-budget price: 1 + 9 data bytes plus a 32-byte program key
/// and its instruction header, about 45 bytes).
pub const TRANSACTION_RESERVE: usize = 64;

/// A prompt envelope and how to split it across transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptUpload<'a> {
    /// The whole sealed envelope.
    pub envelope: &'a [u8],
    /// Bytes the OpenRequest carries (see [`open_request_first_chunk_max`]).
    pub first_chunk: usize,
    /// Bytes per following WritePrompt (at most [`WRITE_PROMPT_CHUNK_MAX`]; at least 1).
    pub chunk: usize,
}

impl<'a> PromptUpload<'a> {
    /// `envelope` split so that **every** transaction of the upload (the OpenRequest and each
    /// WritePrompt) keeps `reserve` bytes free: the one sizing rule of the SDKs and the wasm
    /// bindings (pass [`TRANSACTION_RESERVE`] unless you know what the wallet adds).
    pub const fn with_reserve(envelope: &'a [u8], model_len: usize, allowed: usize, reserve: usize) -> Self {
        let chunk = WRITE_PROMPT_CHUNK_MAX.saturating_sub(reserve);
        PromptUpload {
            envelope,
            first_chunk: open_request_first_chunk_max(model_len, allowed, reserve),
            chunk: if chunk == 0 { 1 } else { chunk },
        }
    }
}

/// The instructions that open a request with `upload`'s envelope: OpenRequest with the first
/// chunk, then one WritePrompt per remaining chunk, each meant for its own transaction. The
/// `prompt_len` and `prompt_chunk` of `args` are replaced by the envelope's.
pub fn open_request_upload(
    p: &Program,
    client: &Address,
    args: &OpenRequestArgs<'_>,
    upload: &PromptUpload<'_>,
) -> Result<Vec<BuiltInstruction>> {
    let envelope = upload.envelope;
    let first = upload.first_chunk.min(envelope.len());
    let prompt_len = u32::try_from(envelope.len()).map_err(|_| crate::Error::InvalidPromptLength)?;
    let (head, mut rest) = envelope.split_at(first);
    let open = OpenRequestArgs { prompt_len, prompt_chunk: head, ..*args };
    let (request, _) = p.request(client, args.nonce);
    let mut ixs = vec![open_request(p, client, &open)?];
    let mut offset = first;
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(upload.chunk.max(1).min(rest.len()));
        let at = u32::try_from(offset).map_err(|_| crate::Error::InvalidPromptLength)?;
        ixs.push(write_prompt(p, client, &request, at, part)?);
        offset = offset.saturating_add(part.len());
        rest = tail;
    }
    Ok(ixs)
}

/// [`Instruction::WritePrompt`].
pub fn write_prompt(
    p: &Program,
    client: &Address,
    request: &Address,
    offset: u32,
    chunk: &[u8],
) -> Result<BuiltInstruction> {
    p.build(&Instruction::WritePrompt { offset, chunk }, vec![M::readonly(*client, true), M::writable(*request, false)])
}

/// [`Instruction::CancelRequest`].
pub fn cancel_request(p: &Program, client: &Address, request: &Address) -> BuiltInstruction {
    p.build_infallible(&Instruction::CancelRequest, vec![M::writable(*client, true), M::writable(*request, false)])
}

/// [`Instruction::LockRequest`].
pub fn lock_request(p: &Program, authority: &Address, request: &Address) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::LockRequest,
        vec![
            M::readonly(*authority, true),
            M::writable(p.server(authority), false),
            M::writable(*request, false),
            M::readonly(p.config, false),
        ],
    )
}

/// [`Instruction::AppendResponse`].
pub fn append_response(
    p: &Program,
    authority: &Address,
    refs: &RequestRefs,
    is_final: bool,
    chunk: &[u8],
) -> Result<BuiltInstruction> {
    p.build(
        &Instruction::AppendResponse { is_final, chunk },
        vec![
            M::writable(*authority, true),
            M::writable(refs.request, false),
            M::writable(refs.response, false),
            M::readonly(pda::SYSTEM_PROGRAM_ID, false),
        ],
    )
}

/// A system-program transfer (for example the server prefunding its response account's rent
/// growth before [`append_response`], which then needs no CPI).
pub fn system_transfer(from: &Address, to: &Address, lamports: u64) -> BuiltInstruction {
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    BuiltInstruction {
        program_id: pda::SYSTEM_PROGRAM_ID,
        accounts: vec![M::writable(*from, true), M::writable(*to, false)],
        data,
    }
}

/// The accounts of one request as a server sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRefs {
    /// The request account.
    pub request: Address,
    /// Its response PDA.
    pub response: Address,
    /// Its client.
    pub client: Address,
}

/// [`Instruction::CompleteRequest`].
pub fn complete_request(p: &Program, authority: &Address, refs: &RequestRefs, tokens: u64) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::CompleteRequest { tokens },
        vec![
            M::writable(*authority, true),
            M::writable(p.server(authority), false),
            M::writable(refs.request, false),
            M::readonly(refs.response, false),
            M::readonly(p.config, false),
            M::writable(p.treasury, false),
            M::writable(refs.client, false),
        ],
    )
}

/// [`Instruction::ReleaseRequest`] sent by the locking server `authority` itself.
pub fn release_request(p: &Program, authority: &Address, request: &Address, response: &Address) -> BuiltInstruction {
    release_stalled_request(p, authority, authority, request, response)
}

/// [`Instruction::ReleaseRequest`] sent by `caller` for a request `locked_by` holds: anyone may
/// once the lock window passed without a first chunk.
pub fn release_stalled_request(
    p: &Program,
    caller: &Address,
    locked_by: &Address,
    request: &Address,
    response: &Address,
) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::ReleaseRequest,
        vec![
            M::writable(*caller, true),
            M::writable(p.server(locked_by), false),
            M::writable(*request, false),
            M::writable(*response, false),
            M::readonly(p.config, false),
        ],
    )
}

/// [`Instruction::ClaimPayment`]: the serving server takes its held share and its response's
/// rent once the flag window has closed.
pub fn claim_payment(p: &Program, authority: &Address, request: &Address, response: &Address) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::ClaimPayment,
        vec![
            M::writable(*authority, true),
            M::writable(*request, false),
            M::writable(*response, false),
            M::readonly(p.config, false),
        ],
    )
}

/// [`Instruction::DeclineRequest`]: a server on the allow-list declines an open request and
/// says why (`reasons` must not be empty, or the program refuses it with
/// [`crate::Error::NoDeclineReason`]).
pub fn decline_request(
    p: &Program,
    authority: &Address,
    request: &Address,
    reasons: crate::state::DeclineReasons,
) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::DeclineRequest { reasons },
        vec![M::readonly(*authority, true), M::writable(*request, false)],
    )
}

/// [`Instruction::ReclaimRequest`]. `locked_by` is the locking server's authority when the
/// request is Locked.
pub fn reclaim_request(
    p: &Program,
    request: &Address,
    client: &Address,
    locked_by: Option<&Address>,
) -> BuiltInstruction {
    let mut accounts = vec![M::writable(*request, false), M::writable(*client, false)];
    if let Some(authority) = locked_by {
        accounts.push(M::writable(p.server(authority), false));
    }
    p.build_infallible(&Instruction::ReclaimRequest, accounts)
}

/// [`Instruction::FlagResponse`] as a flag: a mark on the reputation of `served_by` (the
/// authority that completed the request), no lamport back.
pub fn flag_response(p: &Program, client: &Address, request: &Address, served_by: &Address) -> BuiltInstruction {
    flag_or_dispute(p, client, request, served_by, false)
}

/// [`Instruction::FlagResponse`] as a dispute: a part of the server's held share back to the
/// client, no mark on the server's reputation.
pub fn dispute_response(p: &Program, client: &Address, request: &Address, served_by: &Address) -> BuiltInstruction {
    flag_or_dispute(p, client, request, served_by, true)
}

fn flag_or_dispute(
    p: &Program,
    client: &Address,
    request: &Address,
    served_by: &Address,
    refund: bool,
) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::FlagResponse { refund },
        vec![
            M::writable(*client, true),
            M::writable(*request, false),
            M::writable(p.server(served_by), false),
            M::readonly(p.config, false),
        ],
    )
}

/// One side of a comparison: the request and the authority that served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareSide<'a> {
    /// The request account.
    pub request: &'a Address,
    /// The server authority that completed it.
    pub served_by: &'a Address,
    /// The request's commitment salt.
    pub salt: &'a [u8; 32],
}

/// [`Instruction::CompareResponses`].
pub fn compare_responses(
    p: &Program,
    client: &Address,
    sides: [CompareSide<'_>; 2],
    digest: &[u8; 32],
    preferred: u8,
) -> BuiltInstruction {
    let [a, b] = sides;
    p.build_infallible(
        &Instruction::CompareResponses { salt_a: a.salt, salt_b: b.salt, digest, preferred },
        vec![
            M::readonly(*client, true),
            M::writable(*a.request, false),
            M::writable(*b.request, false),
            M::writable(p.server(a.served_by), false),
            M::writable(p.server(b.served_by), false),
        ],
    )
}

/// [`Instruction::CloseRequest`]. `served_by` is the authority of the server that completed
/// the request (it receives its held share and its response's rent); any address when nothing
/// is due and there is no response (a cancelled or expired request: e.g. the client's).
pub fn close_request(p: &Program, caller: &Address, refs: &RequestRefs, served_by: &Address) -> BuiltInstruction {
    p.build_infallible(
        &Instruction::CloseRequest,
        vec![
            M::readonly(*caller, true),
            M::writable(refs.request, false),
            M::writable(refs.client, false),
            M::writable(refs.response, false),
            M::writable(*served_by, false),
            M::readonly(p.config, false),
        ],
    )
}
