//! The request account: the escrow, the lifecycle's scalars at pinned offsets, the allow-list, the model id and the sealed prompt.

use crate::Address;
use crate::error::{Error, Result};
use crate::wire::Reader;

use super::MAX_ALLOWED_SERVERS;
use super::{AccountKind, Header, read, view, view_mut, write};

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
/// Bit of [`RequestHeader::flags`]: the completion paid at least the config's
/// `min_counted_fee` and counted toward the server's reputation; its flag and comparison count
/// too (decided once, at completion, so a later config change cannot split them).
pub const FLAG_COUNTED: u8 = 8;
/// Bit of [`RequestHeader::flags`]: the request's answer won the comparison it was part of.
/// With [`FLAG_COMPARED`] and the client on every request, clients can weigh comparisons per
/// comparing client (one client comparing one pair again and again is one voice).
pub const FLAG_PREFERRED: u8 = 16;

/// The bump every request PDA and its response PDA use: 255, which is canonical whenever it is
/// valid, so each (client, nonce) names one request and each request one response without the
/// program deriving anything (clients pick a nonce for which both are valid:
/// `builders::Program::usable_nonce`).
pub const REQUEST_BUMP: u8 = 255;

/// Why servers declined a request ([`crate::instruction::Instruction::DeclineRequest`]): a set
/// of reasons, one bit each, so a request holds the union of its declines in one byte. Every
/// bit has a meaning, so any nonzero byte is a valid set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct DeclineReasons(pub u8);

impl DeclineReasons {
    /// The sealed prompt is larger than the server accepts.
    pub const PROMPT_TOO_LARGE: Self = Self(1);
    /// The stake or `max_tokens` does not pay for the prompt plus the server's least answer.
    pub const BUDGET_TOO_SMALL: Self = Self(2);
    /// Too little time is left before the deadline for an answer.
    pub const TOO_LITTLE_TIME: Self = Self(4);
    /// The server does not serve this client (its own allow or deny list).
    pub const CLIENT_EXCLUDED: Self = Self(8);
    /// The prompt does not open with the server's key or does not decode.
    pub const UNREADABLE: Self = Self(16);
    /// The model refused the prompt (for example, longer than its context).
    pub const MODEL_REFUSED: Self = Self(32);
    /// The program would refuse this server's lock (price cap, reputation filters).
    pub const TERMS_NOT_MET: Self = Self(64);
    /// The server does not run the requested model.
    pub const MODEL_NOT_SERVED: Self = Self(128);

    const NAMES: [&'static str; 8] = [
        "prompt too large",
        "stake or max_tokens too small for an answer",
        "too little time left",
        "client not served",
        "prompt unreadable",
        "the model refused the prompt",
        "price cap or filters not met",
        "model not served",
    ];

    /// No reason.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Whether no reason is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every reason in `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The reasons in words, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter().enumerate().filter(move |(bit, _)| self.0 & (1 << bit) != 0).map(|(_, name)| name)
    }
}

impl core::fmt::Display for DeclineReasons {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.is_empty() {
            return f.write_str("no reason given");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// The fixed header of a request account, seeds `["request", client, nonce_le]` (bump
/// [`REQUEST_BUMP`]): every scalar the lifecycle reads or writes, at pinned, naturally aligned
/// offsets.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 3, version, bump (255) | u8 ×3 |
/// | 3 | status | u8 ([`RequestStatus`]) |
/// | 4 | flags | u8 (1 = flagged, 2 = compared, 4 = has a response account, 8 = counted, 16 = preferred) |
/// | 5 | allowed_count | u8 |
/// | 6 | fee_bps (snapshot at lock) | u16 |
/// | 8 | max_tokens | u32 |
/// | 12 | timeout | u32 |
/// | 16 | nonce | u64 |
/// | 24 | stake | u64 |
/// | 32 | max_price_per_mtok (the client's price cap) | u64 |
/// | 40 | min_completed | u64 |
/// | 48 | created_at | i64 |
/// | 56 | deadline (0 while Draft) | i64 |
/// | 64 | locked_at (0 when not locked) | i64 |
/// | 72 | settled_at (when it became terminal) | i64 |
/// | 80 | price_per_mtok (snapshot at lock) | u64 |
/// | 88 | tokens (billed) | u64 |
/// | 96 | cost | u64 |
/// | 104 | fee | u64 |
/// | 112 | server_due (the server's share, held until the flag window closes) | u64 |
/// | 120 | min_success_bps | u16 |
/// | 122 | declined (bit i: allow-list slot i declined) | u8 |
/// | 123 | decline_reasons (union of the declines' [`DeclineReasons`]) | u8 |
/// | 124 | release_count | u32 |
/// | 128 | prompt_len | u32 |
/// | 132 | prompt_written | u32 |
/// | 136 | client | [u8; 32] |
/// | 168 | locked_by (server authority; kept after completion) | [u8; 32] |
/// | 200 | response_key (client's X25519 key for this request) | [u8; 32] |
/// | 232 | commitment | [u8; 32] |
/// | 264 | allowed (8 slots, first `allowed_count` used) | [u8; 32] ×8 |
/// | 520 | tail: model id (string), prompt envelope (`prompt_len` bytes) | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RequestHeader {
    /// [`AccountKind::Request`].
    pub(crate) kind: u8,
    /// [`super::LAYOUT_VERSION`].
    pub(crate) version: u8,
    /// Bump of the request PDA ([`REQUEST_BUMP`]).
    pub bump: u8,
    /// Lifecycle status.
    pub status: RequestStatus,
    /// [`FLAG_FLAGGED`] | [`FLAG_COMPARED`] | [`FLAG_HAS_RESPONSE`] | [`FLAG_COUNTED`].
    pub flags: u8,
    /// How many allow-list slots are used.
    pub allowed_count: u8,
    /// The protocol fee in basis points, snapshot from the config at lock.
    pub fee_bps: u16,
    /// Most tokens the server may bill (prompt + completion, see docs/protocol.md).
    pub max_tokens: u32,
    /// The timeout in seconds, counted from publication.
    pub timeout: u32,
    /// The client's nonce (a PDA seed).
    pub nonce: u64,
    /// The escrowed stake, the most the client pays.
    pub stake: u64,
    /// The highest price per million tokens the client accepts: lock refuses a dearer server.
    pub max_price_per_mtok: u64,
    /// Filter: least counted completions a server needs to lock.
    pub min_completed: u64,
    /// When the request was created (unix seconds).
    pub created_at: i64,
    /// When it stops being lockable and becomes reclaimable; 0 while Draft.
    pub deadline: i64,
    /// When the current lock was taken; 0 when not locked.
    pub locked_at: i64,
    /// When the request became terminal.
    pub settled_at: i64,
    /// The locking server's price, snapshot at lock.
    pub price_per_mtok: u64,
    /// Tokens billed at completion.
    pub tokens: u64,
    /// What the client paid.
    pub cost: u64,
    /// The protocol's share of the cost.
    pub fee: u64,
    /// The server's share, held in the request until the flag window closes (less what a flag
    /// returned to the client); 0 once paid.
    pub server_due: u64,
    /// Filter: least success ratio (bps) a server needs to lock.
    pub min_success_bps: u16,
    /// Bit `i` set: the server in allow-list slot `i` declined the request
    /// ([`crate::instruction::Instruction::DeclineRequest`]).
    pub declined: u8,
    /// The union of the reasons those servers gave ([`DeclineReasons`] bits).
    pub decline_reasons: u8,
    /// How many times it was released.
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

const _: () = {
    // No padding: the fields' sizes add up to the struct's (kind..allowed_count are six bytes).
    assert!(6 + 2 + 2 * 4 + 13 * 8 + 2 + 2 + 3 * 4 + 2 * 32 == RequestHeader::LEN);
    assert!(core::mem::size_of::<RequestHeader>() == RequestHeader::LEN);
    assert!(core::mem::align_of::<RequestHeader>() == 8);
    assert!(core::mem::offset_of!(RequestHeader, status) == RequestHeader::STATUS_OFFSET);
    assert!(core::mem::offset_of!(RequestHeader, flags) == RequestHeader::FLAGS_OFFSET);
    assert!(core::mem::offset_of!(RequestHeader, fee_bps) == 6);
    assert!(core::mem::offset_of!(RequestHeader, nonce) == 16);
    assert!(core::mem::offset_of!(RequestHeader, server_due) == 112);
    assert!(core::mem::offset_of!(RequestHeader, min_success_bps) == 120);
    assert!(core::mem::offset_of!(RequestHeader, declined) == RequestHeader::DECLINED_OFFSET);
    assert!(core::mem::offset_of!(RequestHeader, decline_reasons) == 123);
    assert!(core::mem::offset_of!(RequestHeader, release_count) == 124);
    assert!(core::mem::offset_of!(RequestHeader, client) == RequestHeader::CLIENT_OFFSET);
    assert!(core::mem::offset_of!(RequestHeader, locked_by) == RequestHeader::LOCKED_BY_OFFSET);
};

// SAFETY: `#[repr(C)]`, 200 bytes with no padding (asserted above: every field sits at its
// natural alignment and the sizes add up), and every field accepts any bit pattern except
// `status`, whose byte `check_bytes` checks.
#[allow(unsafe_code)] // see `Header`'s safety contract
unsafe impl Header for RequestHeader {
    const LEN: usize = Self::LEN;
    const KIND: AccountKind = AccountKind::Request;

    #[inline(always)]
    fn check_bytes(head: &[u8]) -> Result<()> {
        match head.get(Self::STATUS_OFFSET).copied().and_then(RequestStatus::from_u8) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidTag),
        }
    }

    #[inline(always)]
    fn check(&self) -> Result<()> {
        // `checked_shr`: a malformed `allowed_count` of 16 or more must fail, not overflow.
        if u16::from(self.declined).checked_shr(u32::from(self.allowed_count)).unwrap_or(0) != 0
            || (self.declined == 0) != (self.decline_reasons == 0)
            || self.flags & !(FLAG_FLAGGED | FLAG_COMPARED | FLAG_HAS_RESPONSE | FLAG_COUNTED | FLAG_PREFERRED) != 0
            || self.allowed_count == 0
            || self.allowed_count as usize > MAX_ALLOWED_SERVERS
            || self.prompt_written > self.prompt_len
        {
            return Err(Error::InvalidTag);
        }
        Ok(())
    }
}

impl RequestHeader {
    /// Size of the scalar header (through `locked_by`).
    pub const LEN: usize = 200;
    /// Offset of `status` (a filter for open requests).
    pub const STATUS_OFFSET: usize = 3;
    /// Offset of `flags`.
    pub const FLAGS_OFFSET: usize = 4;
    /// Offset of `declined`.
    pub const DECLINED_OFFSET: usize = 122;
    /// Offset of `client` (a filter for one wallet's requests).
    pub const CLIENT_OFFSET: usize = 136;
    /// Offset of `locked_by` (a filter for one server's requests).
    pub const LOCKED_BY_OFFSET: usize = 168;
    /// Offset of the client's response key.
    pub const RESPONSE_KEY_OFFSET: usize = 200;
    /// Offset of the commitment.
    pub const COMMITMENT_OFFSET: usize = 232;
    /// Offset of the allow-list.
    pub const ALLOWED_OFFSET: usize = 264;
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

    /// Whether its answer won the comparison it was part of.
    pub const fn preferred(&self) -> bool {
        self.flags & FLAG_PREFERRED != 0
    }

    /// Whether the completion counted toward reputation (and so its flag and comparison do).
    pub const fn counted(&self) -> bool {
        self.flags & FLAG_COUNTED != 0
    }

    /// Whether the server in allow-list slot `slot` declined the request.
    pub const fn declined_by(&self, slot: usize) -> bool {
        slot < MAX_ALLOWED_SERVERS && self.declined & (1 << slot) != 0
    }

    /// Whether every server on the allow-list declined: nobody will answer, so the client
    /// may as well cancel now rather than wait for the deadline.
    pub const fn declined_by_all(&self) -> bool {
        self.allowed_count > 0 && self.declined.count_ones() == self.allowed_count as u32
    }

    /// The union of the reasons the declining servers gave.
    pub const fn decline_reasons(&self) -> DeclineReasons {
        DeclineReasons(self.decline_reasons)
    }

    /// Decodes the scalar header from the start of the account data (any alignment).
    pub fn decode(data: &[u8]) -> Result<Self> {
        read(data)
    }

    /// Encodes the scalar header into the first [`RequestHeader::LEN`] bytes of `out`.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        write(self, out)
    }

    /// The header of an account's data in place (8-byte aligned, as the runtime lays it out).
    pub fn view(data: &[u8]) -> Result<&Self> {
        view(data)
    }

    /// The header of an account's data in place, writable: what the program's instructions
    /// apply the lifecycle to, touching only the fields a step reads or writes.
    pub fn view_mut(data: &mut [u8]) -> Result<&mut Self> {
        view_mut(data)
    }

    /// [`RequestHeader::view_mut`] and the rest of the account (allow-list, model, prompt).
    pub fn split_mut(data: &mut [u8]) -> Result<(&mut Self, &mut [u8])> {
        view::<Self>(data)?;
        let (head, tail) = data.split_at_mut(Self::LEN);
        Ok((view_mut(head)?, tail))
    }

    /// Account size for a request with this model id and prompt envelope length.
    #[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
    pub const fn account_size(model_len: usize, prompt_len: usize) -> usize {
        Self::TAIL_OFFSET + 4 + model_len + prompt_len
    }
}

/// The part of a request account after its header: the response key, the commitment, the
/// allow-list slots, then the tail (model id, prompt). Borrowed beside the header in place
/// ([`RequestHeader::split_mut`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTail<'a> {
    bytes: &'a [u8],
}

impl<'a> RequestTail<'a> {
    const RESPONSE_KEY: usize = RequestHeader::RESPONSE_KEY_OFFSET - RequestHeader::LEN;
    const COMMITMENT: usize = RequestHeader::COMMITMENT_OFFSET - RequestHeader::LEN;
    const ALLOWED: usize = RequestHeader::ALLOWED_OFFSET - RequestHeader::LEN;
    const MODEL: usize = RequestHeader::TAIL_OFFSET - RequestHeader::LEN;

    /// The bytes after the header.
    pub const fn new(bytes: &'a [u8]) -> Self {
        RequestTail { bytes }
    }

    /// The bytes after the header of a whole account's data.
    pub fn of(data: &'a [u8]) -> Result<Self> {
        Ok(RequestTail { bytes: data.get(RequestHeader::LEN..).ok_or(Error::Truncated)? })
    }

    /// The client's X25519 key for the response.
    pub fn response_key(&self) -> Result<&'a [u8; 32]> {
        read_array(self.bytes, Self::RESPONSE_KEY)
    }

    /// The comparison commitment.
    pub fn commitment(&self) -> Result<&'a [u8; 32]> {
        read_array(self.bytes, Self::COMMITMENT)
    }

    /// The used part of the allow-list.
    pub fn allowed(&self, allowed_count: u8) -> Result<&'a [[u8; 32]]> {
        let len = 32usize.checked_mul(allowed_count as usize).ok_or(Error::ArithmeticOverflow)?;
        let end = Self::ALLOWED.checked_add(len).ok_or(Error::ArithmeticOverflow)?;
        let (slots, rest) = self.bytes.get(Self::ALLOWED..end).ok_or(Error::Truncated)?.as_chunks::<32>();
        if !rest.is_empty() {
            return Err(Error::Truncated);
        }
        Ok(slots)
    }

    /// The model id's bytes (the program validated the id when it opened the request).
    pub fn model_bytes(&self) -> Result<&'a [u8]> {
        Reader::new(self.bytes.get(Self::MODEL..).ok_or(Error::Truncated)?).bytes(crate::model::MAX_MODEL_ID_LEN)
    }

    /// Where the prompt region starts, in these bytes (after the model id).
    pub fn prompt_offset(&self) -> Result<usize> {
        let model_len = Reader::new(self.bytes.get(Self::MODEL..).ok_or(Error::Truncated)?).u32()? as usize;
        Self::MODEL.checked_add(4).and_then(|v| v.checked_add(model_len)).ok_or(Error::ArithmeticOverflow)
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
        RequestTail::of(data)?.model_bytes()
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
    RequestTail::of(data)?.allowed(allowed_count)
}
