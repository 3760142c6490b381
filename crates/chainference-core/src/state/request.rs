//! The request account: the escrow, the lifecycle's scalars at pinned offsets, the allow-list, the model id and the sealed prompt.

use crate::Address;
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

use super::MAX_ALLOWED_SERVERS;
use super::{AccountKind, fixed_head, read_prefix, write_prefix};

byte_enum! {
    /// Where a request is in its life. See [`crate::lifecycle`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum RequestStatus {
        /// Created; the prompt is still being uploaded. No server may lock it.
        Draft = 0,
        /// Published: allowed servers may lock it until the deadline.
        Open = 1,
        /// A server holds it and is streaming the answer.
        Locked = 2,
        /// Answered and settled.
        Completed = 3,
        /// Withdrawn by the client before any server locked it; stake refunded.
        Cancelled = 4,
        /// Reclaimed after the deadline; stake refunded.
        Expired = 5,
    }
}

impl RequestStatus {
    /// Whether no further transition but flag, compare and close can happen.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Expired)
    }
}

/// Bit of [`RequestHeader::flags`]: the client flagged the response.
pub const FLAG_FLAGGED: u8 = 1;
/// Bit of [`RequestHeader::flags`]: the request was part of a comparison.
pub const FLAG_COMPARED: u8 = 2;
/// Bit of [`RequestHeader::flags`]: a response account exists (set by the first append,
/// cleared when a release discards it), so the program can insist on it at release and close.
pub const FLAG_HAS_RESPONSE: u8 = 4;

/// The fixed header of a request account, seeds `["request", client, nonce_le]`: every scalar the
/// lifecycle reads or writes, at pinned offsets.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 3, version, bump | u8 ×3 |
/// | 3 | status | u8 ([`RequestStatus`]) |
/// | 4 | flags | u8 (1 = flagged, 2 = compared, 4 = has a response account) |
/// | 5 | allowed_count | u8 |
/// | 6 | response_bump | u8 |
/// | 7 | max_tokens | u32 |
/// | 11 | timeout | u32 |
/// | 15 | min_success_bps | u16 |
/// | 17 | nonce | u64 |
/// | 25 | stake | u64 |
/// | 33 | min_completed | u64 |
/// | 41 | created_at | i64 |
/// | 49 | deadline (0 while Draft) | i64 |
/// | 57 | price_per_mtok (snapshot at lock) | u64 |
/// | 65 | tokens (billed) | u64 |
/// | 73 | cost | u64 |
/// | 81 | fee | u64 |
/// | 89 | settled_at (when it became terminal) | i64 |
/// | 97 | release_count | u32 |
/// | 101 | prompt_len | u32 |
/// | 105 | prompt_written | u32 |
/// | 109 | client | [u8; 32] |
/// | 141 | locked_by (server authority; kept after completion) | [u8; 32] |
/// | 173 | response_key (client's X25519 key for this request) | [u8; 32] |
/// | 205 | commitment | [u8; 32] |
/// | 237 | allowed (8 slots, first `allowed_count` used) | [u8; 32] ×8 |
/// | 493 | tail: model id (string), prompt envelope (`prompt_len` bytes) | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Bump of the request PDA.
    pub bump: u8,
    /// Lifecycle status.
    pub status: RequestStatus,
    /// [`FLAG_FLAGGED`] | [`FLAG_COMPARED`].
    pub flags: u8,
    /// How many allow-list slots are used.
    pub allowed_count: u8,
    /// Bump of the response PDA servers must use (pins one response address per request).
    pub response_bump: u8,
    /// Most tokens the server may bill (prompt + completion, see docs/protocol.md).
    pub max_tokens: u32,
    /// The timeout in seconds, counted from publication.
    pub timeout: u32,
    /// Filter: least success ratio (bps) a server needs to lock.
    pub min_success_bps: u16,
    /// The client's nonce (a PDA seed).
    pub nonce: u64,
    /// The escrowed stake, the most the client pays.
    pub stake: u64,
    /// Filter: least completed requests a server needs to lock.
    pub min_completed: u64,
    /// When the request was created (unix seconds).
    pub created_at: i64,
    /// When it stops being lockable and becomes reclaimable; 0 while Draft.
    pub deadline: i64,
    /// The locking server's price, snapshot at lock.
    pub price_per_mtok: u64,
    /// Tokens billed at completion.
    pub tokens: u64,
    /// What the client paid.
    pub cost: u64,
    /// The protocol's share of the cost.
    pub fee: u64,
    /// When the request became terminal.
    pub settled_at: i64,
    /// How many times servers released it.
    pub release_count: u32,
    /// Size of the prompt envelope.
    pub prompt_len: u32,
    /// Bytes of the envelope uploaded so far.
    pub prompt_written: u32,
    /// The client's wallet.
    pub client: Address,
    /// The authority of the server that locked (and, once completed, served) it; zeros if none.
    pub locked_by: Address,
}

impl RequestHeader {
    /// Size of the scalar header (through `locked_by`).
    pub const LEN: usize = 173;
    /// Offset of `status` (a filter for open requests).
    pub const STATUS_OFFSET: usize = 3;
    /// Offset of `client` (a filter for one wallet's requests).
    pub const CLIENT_OFFSET: usize = 109;
    /// Offset of `locked_by` (a filter for one server's requests).
    pub const LOCKED_BY_OFFSET: usize = 141;
    /// Offset of the client's response key.
    pub const RESPONSE_KEY_OFFSET: usize = 173;
    /// Offset of the commitment.
    pub const COMMITMENT_OFFSET: usize = 205;
    /// Offset of the allow-list.
    pub const ALLOWED_OFFSET: usize = 237;
    /// Offset of the tail (model id, then prompt).
    pub const TAIL_OFFSET: usize = Self::ALLOWED_OFFSET + 32 * MAX_ALLOWED_SERVERS;

    /// Whether the client flagged the response.
    pub const fn flagged(&self) -> bool {
        self.flags & FLAG_FLAGGED != 0
    }

    /// Whether the request was compared.
    pub const fn compared(&self) -> bool {
        self.flags & FLAG_COMPARED != 0
    }

    /// Whether a response account exists for this request.
    pub const fn has_response(&self) -> bool {
        self.flags & FLAG_HAS_RESPONSE != 0
    }

    /// Decodes the scalar header from the start of the account data.
    pub fn decode(data: &[u8]) -> Result<Self> {
        // A fixed-size view first: with the length known, every read below is check-free.
        let mut r = Reader::new(fixed_head::<{ Self::LEN }>(data, AccountKind::Request)?);
        let bump = read_prefix(&mut r, AccountKind::Request)?;
        let h = RequestHeader {
            bump,
            status: RequestStatus::from_u8(r.u8()?).ok_or(Error::InvalidTag)?,
            flags: r.u8()?,
            allowed_count: r.u8()?,
            response_bump: r.u8()?,
            max_tokens: r.u32()?,
            timeout: r.u32()?,
            min_success_bps: r.u16()?,
            nonce: r.u64()?,
            stake: r.u64()?,
            min_completed: r.u64()?,
            created_at: r.i64()?,
            deadline: r.i64()?,
            price_per_mtok: r.u64()?,
            tokens: r.u64()?,
            cost: r.u64()?,
            fee: r.u64()?,
            settled_at: r.i64()?,
            release_count: r.u32()?,
            prompt_len: r.u32()?,
            prompt_written: r.u32()?,
            client: *r.address()?,
            locked_by: *r.address()?,
        };
        if h.flags & !(FLAG_FLAGGED | FLAG_COMPARED | FLAG_HAS_RESPONSE) != 0
            || h.allowed_count == 0
            || h.allowed_count as usize > MAX_ALLOWED_SERVERS
            || h.prompt_written > h.prompt_len
        {
            return Err(Error::InvalidTag);
        }
        Ok(h)
    }

    /// Encodes the scalar header into the first [`RequestHeader::LEN`] bytes of `out`.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        let head = out.first_chunk_mut::<{ Self::LEN }>().ok_or(Error::Truncated)?;
        let mut w = Writer::new(head);
        write_prefix(&mut w, AccountKind::Request, self.bump)?;
        w.u8(self.status as u8)?;
        w.u8(self.flags)?;
        w.u8(self.allowed_count)?;
        w.u8(self.response_bump)?;
        w.u32(self.max_tokens)?;
        w.u32(self.timeout)?;
        w.u16(self.min_success_bps)?;
        w.u64(self.nonce)?;
        w.u64(self.stake)?;
        w.u64(self.min_completed)?;
        w.i64(self.created_at)?;
        w.i64(self.deadline)?;
        w.u64(self.price_per_mtok)?;
        w.u64(self.tokens)?;
        w.u64(self.cost)?;
        w.u64(self.fee)?;
        w.i64(self.settled_at)?;
        w.u32(self.release_count)?;
        w.u32(self.prompt_len)?;
        w.u32(self.prompt_written)?;
        w.put(&self.client)?;
        w.put(&self.locked_by)?;
        w.finish()
    }

    /// Account size for a request with this model id and prompt envelope length.
    #[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
    pub const fn account_size(model_len: usize, prompt_len: usize) -> usize {
        Self::TAIL_OFFSET + 4 + model_len + prompt_len
    }
}

/// A decoded request account: the header and borrowed views of everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestAccount<'a> {
    /// The scalar header.
    pub header: RequestHeader,
    /// The client's X25519 public key for this request's response stream.
    pub response_key: &'a [u8; 32],
    /// The comparison commitment.
    pub commitment: &'a [u8; 32],
    /// The allowed server authorities (`allowed_count` of them).
    pub allowed: &'a [[u8; 32]],
    /// The canonical model id.
    pub model: &'a str,
    /// The whole prompt-envelope region (`prompt_len` bytes; only `prompt_written` are filled).
    pub prompt: &'a [u8],
}

impl<'a> RequestAccount<'a> {
    /// Decodes the exact account data.
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let header = RequestHeader::decode(data)?;
        let response_key = read_array(data, RequestHeader::RESPONSE_KEY_OFFSET)?;
        let commitment = read_array(data, RequestHeader::COMMITMENT_OFFSET)?;
        let allowed = allowed_slice(data, header.allowed_count)?;
        let mut r = Reader::new(data.get(RequestHeader::TAIL_OFFSET..).ok_or(Error::Truncated)?);
        let model = r.ascii(crate::model::MAX_MODEL_ID_LEN, Error::InvalidModelId)?;
        let prompt = r.take(header.prompt_len as usize)?;
        r.finish()?;
        Ok(RequestAccount { header, response_key, commitment, allowed, model, prompt })
    }

    /// The model id's bytes without decoding the rest (the cheap path lock and compare take:
    /// they match models by bytes, and the program validated the id when it opened the request).
    pub fn model_bytes(data: &'a [u8]) -> Result<&'a [u8]> {
        Reader::new(data.get(RequestHeader::TAIL_OFFSET..).ok_or(Error::Truncated)?)
            .bytes(crate::model::MAX_MODEL_ID_LEN)
    }

    /// The uploaded part of the prompt envelope.
    pub fn prompt_written(&self) -> &'a [u8] {
        self.prompt.get(..self.header.prompt_written as usize).unwrap_or(&[])
    }

    /// Offset of the prompt region in the account data.
    #[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
    pub const fn prompt_offset(model_len: usize) -> usize {
        RequestHeader::TAIL_OFFSET + 4 + model_len
    }
}

/// A 32-byte array at `offset` of `data`.
#[inline(always)]
pub fn read_array(data: &[u8], offset: usize) -> Result<&[u8; 32]> {
    data.get(offset..).and_then(|d| d.first_chunk::<32>()).ok_or(Error::Truncated)
}

/// The used part of a request's allow-list, borrowed from its account data.
#[inline(always)]
pub fn allowed_slice(data: &[u8], allowed_count: u8) -> Result<&[[u8; 32]]> {
    let end = RequestHeader::ALLOWED_OFFSET
        .checked_add(32usize.checked_mul(allowed_count as usize).ok_or(Error::ArithmeticOverflow)?)
        .ok_or(Error::ArithmeticOverflow)?;
    let bytes = data.get(RequestHeader::ALLOWED_OFFSET..end).ok_or(Error::Truncated)?;
    let (slots, rest) = bytes.as_chunks::<32>();
    if !rest.is_empty() {
        return Err(Error::Truncated);
    }
    Ok(slots)
}
