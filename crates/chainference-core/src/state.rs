//! Account layouts: Config, Treasury, Server, Request and Response.
//!
//! Every account starts `kind: u8, version: u8, bump: u8`, then a **fixed-size header at pinned
//! offsets** (the fields the program reads and writes on every instruction, so it can load them
//! with a few loads and no parsing of variable data), then a variable **tail** (strings, offers,
//! prompt and response bytes) that only the instructions which need it walk. All integers are
//! little-endian; strings and byte vectors carry borsh's `u32` length prefix. `docs/protocol.md`
//! has the offset tables; the `*_LEN` constants and the round-trip tests pin them.
//!
//! Decoders reject truncated data ([`Error::Truncated`]), a wrong kind byte
//! ([`Error::WrongAccountKind`]), an unknown version ([`Error::UnsupportedVersion`]), bad tags
//! and trailing bytes ([`Error::TrailingBytes`]); none panics on any input.

use crate::Address;
use crate::error::{Error, Result};
use crate::pricing::ServerStats;
use crate::wire::{Reader, Writer};

/// Layout version written by this build.
pub const LAYOUT_VERSION: u8 = 1;

/// Most model offers one server may publish.
pub const MAX_OFFERS: usize = 8;
/// Longest optional off-chain endpoint URL, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 128;
/// Most servers a request may allow.
pub const MAX_ALLOWED_SERVERS: usize = 8;
/// Largest prompt envelope, in bytes (uploaded in chunks when it does not fit one transaction).
pub const MAX_PROMPT_LEN: usize = 32 * 1024;
/// Largest response (sealed chunks with their length prefixes), in bytes.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// The kind byte at offset 0 of every account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AccountKind {
    /// The protocol's configuration (one per deployment).
    Config = 1,
    /// A server's published offers, key and reputation.
    Server = 2,
    /// One inference request and its escrow.
    Request = 3,
    /// The sealed response stream of one request.
    Response = 4,
    /// The fee treasury (one per deployment).
    Treasury = 5,
}

impl AccountKind {
    /// The kind for a byte, if any.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Config),
            2 => Some(Self::Server),
            3 => Some(Self::Request),
            4 => Some(Self::Response),
            5 => Some(Self::Treasury),
            _ => None,
        }
    }
}

/// Reads and checks the `kind, version` prefix; returns the bump.
#[inline(always)]
fn read_prefix(r: &mut Reader<'_>, kind: AccountKind) -> Result<u8> {
    if r.u8()? != kind as u8 {
        return Err(Error::WrongAccountKind);
    }
    if r.u8()? != LAYOUT_VERSION {
        return Err(Error::UnsupportedVersion);
    }
    r.u8()
}

/// The fixed-size head of an account of `kind`: kind and version are checked first (so a short
/// account of another kind reports the kind), then the length.
#[inline(always)]
fn fixed_head<const N: usize>(data: &[u8], kind: AccountKind) -> Result<&[u8; N]> {
    match data {
        [k, ..] if *k != kind as u8 => return Err(Error::WrongAccountKind),
        [_, v, ..] if *v != LAYOUT_VERSION => return Err(Error::UnsupportedVersion),
        _ => {}
    }
    data.first_chunk::<N>().ok_or(Error::Truncated)
}

#[inline(always)]
fn write_prefix(w: &mut Writer<'_>, kind: AccountKind, bump: u8) -> Result<()> {
    w.u8(kind as u8)?;
    w.u8(LAYOUT_VERSION)?;
    w.u8(bump)
}

/// The kind of an account's data, checking the version too.
pub fn account_kind(data: &[u8]) -> Result<AccountKind> {
    let mut r = Reader::new(data);
    let kind = AccountKind::from_u8(r.u8()?).ok_or(Error::WrongAccountKind)?;
    if r.u8()? != LAYOUT_VERSION {
        return Err(Error::UnsupportedVersion);
    }
    Ok(kind)
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Tunable protocol parameters, set at init and by the admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConfigParams {
    /// Protocol fee, in basis points of the server's charge (default 1,000 = 10%).
    pub fee_bps: u16,
    /// Timeout a request gets when it asks for 0, in seconds (default 300).
    pub default_timeout: u32,
    /// Shortest timeout a request may ask for, in seconds.
    pub min_timeout: u32,
    /// Longest timeout a request may ask for, in seconds.
    pub max_timeout: u32,
    /// How long after completion the client may flag, in seconds.
    pub flag_window: u32,
    /// How long after a request ends only its client may close it; after that anyone may.
    pub retention: u32,
}

impl Default for ConfigParams {
    fn default() -> Self {
        ConfigParams {
            fee_bps: 1_000,
            default_timeout: 300,
            min_timeout: 10,
            max_timeout: 3_600,
            flag_window: 7 * 24 * 3_600,
            retention: 30 * 24 * 3_600,
        }
    }
}

impl ConfigParams {
    /// Checks `fee_bps <= 10_000`, `0 < min_timeout <= default_timeout <= max_timeout` and
    /// `retention >= flag_window`.
    pub const fn validate(&self) -> Result<()> {
        if self.fee_bps > 10_000 {
            return Err(Error::InvalidFeeBps);
        }
        // retention >= flag_window: nobody but the client may close a request it can still flag.
        if self.min_timeout == 0
            || self.min_timeout > self.default_timeout
            || self.default_timeout > self.max_timeout
            || self.retention < self.flag_window
        {
            return Err(Error::InvalidTimeout);
        }
        Ok(())
    }

    /// The timeout a request asking for `requested` seconds gets (0 = default), or
    /// [`Error::InvalidTimeout`] when outside `min_timeout..=max_timeout`.
    pub const fn effective_timeout(&self, requested: u32) -> Result<u32> {
        let t = if requested == 0 { self.default_timeout } else { requested };
        if t < self.min_timeout || t > self.max_timeout {
            return Err(Error::InvalidTimeout);
        }
        Ok(t)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ConfigParams {
            fee_bps: r.u16()?,
            default_timeout: r.u32()?,
            min_timeout: r.u32()?,
            max_timeout: r.u32()?,
            flag_window: r.u32()?,
            retention: r.u32()?,
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u16(self.fee_bps)?;
        w.u32(self.default_timeout)?;
        w.u32(self.min_timeout)?;
        w.u32(self.max_timeout)?;
        w.u32(self.flag_window)?;
        w.u32(self.retention)
    }

    /// Size of the encoded parameters.
    pub const LEN: usize = 2 + 4 * 5;
}

/// The config account, seeds `["config"]`.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 1 | u8 |
/// | 1 | version | u8 |
/// | 2 | bump | u8 |
/// | 3 | treasury_bump | u8 |
/// | 4 | params ([`ConfigParams`], 22 bytes) | |
/// | 26 | admin | [u8; 32] |
/// | 58 | treasury | [u8; 32] |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bump of the config PDA.
    pub bump: u8,
    /// Bump of the treasury PDA.
    pub treasury_bump: u8,
    /// The tunable parameters.
    pub params: ConfigParams,
    /// Who may update the config and withdraw fees.
    pub admin: Address,
    /// The treasury PDA that receives fees.
    pub treasury: Address,
}

impl Config {
    /// Encoded size.
    pub const LEN: usize = 4 + ConfigParams::LEN + 32 + 32;

    /// Only the parameters, checking kind, version and size (what most instructions need).
    pub fn params_of(data: &[u8]) -> Result<ConfigParams> {
        if data.len() > Self::LEN {
            return Err(Error::TrailingBytes);
        }
        let head = fixed_head::<{ Self::LEN }>(data, AccountKind::Config)?;
        ConfigParams::read(&mut Reader::new(head.get(4..).ok_or(Error::Truncated)?))
    }

    /// Decodes the exact account data.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(fixed_head::<{ Self::LEN }>(data, AccountKind::Config)?);
        let bump = read_prefix(&mut r, AccountKind::Config)?;
        let cfg = Config {
            bump,
            treasury_bump: r.u8()?,
            params: ConfigParams::read(&mut r)?,
            admin: *r.address()?,
            treasury: *r.address()?,
        };
        if data.len() > Self::LEN {
            return Err(Error::TrailingBytes);
        }
        Ok(cfg)
    }

    /// Encodes into exactly [`Config::LEN`] bytes.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        if out.len() != Self::LEN {
            return Err(if out.len() < Self::LEN { Error::Truncated } else { Error::TrailingBytes });
        }
        let mut w = Writer::new(out);
        write_prefix(&mut w, AccountKind::Config, self.bump)?;
        w.u8(self.treasury_bump)?;
        self.params.write(&mut w)?;
        w.put(&self.admin)?;
        w.put(&self.treasury)?;
        w.finish()
    }
}

/// The treasury account, seeds `["treasury"]`: only the 3-byte prefix; its lamports above rent
/// are the collected fees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Treasury {
    /// Bump of the treasury PDA.
    pub bump: u8,
}

impl Treasury {
    /// Encoded size.
    pub const LEN: usize = 3;

    /// Decodes the exact account data.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        let bump = read_prefix(&mut r, AccountKind::Treasury)?;
        r.finish()?;
        Ok(Treasury { bump })
    }

    /// Encodes into exactly [`Treasury::LEN`] bytes.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        let mut w = Writer::new(out);
        write_prefix(&mut w, AccountKind::Treasury, self.bump)?;
        w.finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// The fixed header of a server account, seeds `["server", authority]`.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 2, version, bump | u8 ×3 |
/// | 3 | active | bool |
/// | 4 | locked_count | u32 |
/// | 8 | registered_at | i64 |
/// | 16 | completed, flagged, timed_out, released, comparisons, preferred | u64 ×6 |
/// | 64 | authority | [u8; 32] |
/// | 96 | hpke_key | [u8; 32] |
/// | 128 | tail: endpoint (string ≤ 128), offers (u32 count ≤ 8, each model string + price u64) | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHeader {
    /// Bump of the server PDA.
    pub bump: u8,
    /// Whether the server accepts new requests.
    pub active: bool,
    /// Requests this server holds locked now (it cannot close while any are).
    pub locked_count: u32,
    /// When the server registered (unix seconds).
    pub registered_at: i64,
    /// Reputation counters.
    pub stats: ServerStats,
    /// The wallet that signs for this server.
    pub authority: Address,
    /// The server's X25519 HPKE public key.
    pub hpke_key: [u8; 32],
}

impl ServerHeader {
    /// Size of the fixed header.
    pub const LEN: usize = 128;
    /// Offset of the tail.
    pub const TAIL_OFFSET: usize = Self::LEN;
    /// Offset of `active` (a filter for discovery).
    pub const ACTIVE_OFFSET: usize = 3;
    /// Offset of `authority` (a filter for one operator's servers).
    pub const AUTHORITY_OFFSET: usize = 64;

    /// Decodes the fixed header from the start of the account data.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(fixed_head::<{ Self::LEN }>(data, AccountKind::Server)?);
        let bump = read_prefix(&mut r, AccountKind::Server)?;
        Ok(ServerHeader {
            bump,
            active: r.bool()?,
            locked_count: r.u32()?,
            registered_at: r.i64()?,
            stats: ServerStats {
                completed: r.u64()?,
                flagged: r.u64()?,
                timed_out: r.u64()?,
                released: r.u64()?,
                comparisons: r.u64()?,
                preferred: r.u64()?,
            },
            authority: *r.address()?,
            hpke_key: *r.address()?,
        })
    }

    /// Encodes the fixed header into the first [`ServerHeader::LEN`] bytes of `out`.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        let head = out.first_chunk_mut::<{ Self::LEN }>().ok_or(Error::Truncated)?;
        let mut w = Writer::new(head);
        write_prefix(&mut w, AccountKind::Server, self.bump)?;
        w.bool(self.active)?;
        w.u32(self.locked_count)?;
        w.i64(self.registered_at)?;
        let s = &self.stats;
        for v in [s.completed, s.flagged, s.timed_out, s.released, s.comparisons, s.preferred] {
            w.u64(v)?;
        }
        w.put(&self.authority)?;
        w.put(&self.hpke_key)?;
        w.finish()
    }
}

/// One model offer: a canonical model id and its price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer<'a> {
    /// The model id, canonical (quantization upper-case).
    pub model: &'a str,
    /// Lamports per million tokens.
    pub price_per_mtok: u64,
}

/// A server's validated offer list, borrowed from instruction or account bytes
/// (`u32 count`, then `count` × (`string model`, `u64 price`)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offers<'a> {
    bytes: &'a [u8],
    count: u32,
}

/// Checks that `model` is a model id in canonical form (quantization upper-case), in one pass
/// over its bytes: the program runs it on every request and offer, and matches models by bytes.
/// Accepts exactly what [`ModelId::parse`] accepts with an upper-case quant (property-tested).
pub fn check_canonical_model(model: &str) -> Result<()> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Part {
        Org,
        Name,
        Revision,
        Quant,
    }
    fn close(part: Part, len: usize, prev: u8) -> Result<()> {
        let ok = match part {
            Part::Org | Part::Name => {
                len > 0 && len <= crate::model::MAX_MODEL_PART_LEN && !matches!(prev, b'-' | b'.')
            }
            Part::Revision => len > 0 && len <= crate::model::MAX_REVISION_LEN && prev != b'/',
            Part::Quant => len > 0 && len <= crate::model::MAX_QUANT_LEN,
        };
        if ok { Ok(()) } else { Err(Error::InvalidModelId) }
    }
    let bytes = model.as_bytes();
    if bytes.is_empty() || bytes.len() > crate::model::MAX_MODEL_ID_LEN {
        return Err(Error::InvalidModelId);
    }
    let (mut part, mut len, mut prev) = (Part::Org, 0usize, 0u8);
    for &c in bytes {
        let next = match (c, part) {
            (b'/', Part::Org) => Some(Part::Name),
            (b'@', Part::Name) => Some(Part::Revision),
            (b':', Part::Name | Part::Revision) => Some(Part::Quant),
            _ => None,
        };
        if let Some(next) = next {
            close(part, len, prev)?;
            (part, len, prev) = (next, 0, 0);
            continue;
        }
        let ok = match part {
            Part::Org | Part::Name => {
                c.is_ascii_alphanumeric()
                    || c == b'_'
                    || (matches!(c, b'-' | b'.') && len > 0 && !(c == b'.' && prev == b'.'))
            }
            Part::Revision => c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.') || (c == b'/' && len > 0),
            Part::Quant => c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_',
        };
        if !ok {
            return Err(Error::InvalidModelId);
        }
        len = len.saturating_add(1);
        prev = c;
    }
    if part == Part::Org {
        return Err(Error::InvalidModelId);
    }
    close(part, len, prev)
}

impl<'a> Offers<'a> {
    /// Reads and validates an offer list from `r`: 1..=8 offers, canonical model ids, no model
    /// offered twice.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let start = r.rest();
        let count = r.u32()?;
        if count == 0 || count as usize > MAX_OFFERS {
            return Err(Error::InvalidOfferCount);
        }
        let mut seen: [&str; MAX_OFFERS] = [""; MAX_OFFERS];
        for slot in seen.iter_mut().take(count as usize) {
            let model = r.ascii(crate::model::MAX_MODEL_ID_LEN, Error::InvalidModelId)?;
            check_canonical_model(model)?;
            r.u64()?;
            *slot = model;
        }
        for (i, a) in seen.iter().enumerate().take(count as usize) {
            if seen.iter().take(i).any(|b| b == a) {
                return Err(Error::DuplicateOffer);
            }
        }
        let used = start.len().checked_sub(r.remaining()).ok_or(Error::Truncated)?;
        let bytes = start.get(..used).ok_or(Error::Truncated)?;
        Ok(Offers { bytes, count })
    }

    /// The encoded bytes, count prefix included.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of offers.
    pub const fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none (never true for a validated list).
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The offers in order.
    pub fn iter(&self) -> impl Iterator<Item = Offer<'a>> + 'a {
        let mut r = Reader::new(self.bytes.get(4..).unwrap_or(&[]));
        (0..self.count).map_while(move |_| {
            let model = r.str(crate::model::MAX_MODEL_ID_LEN).ok()?;
            let price_per_mtok = r.u64().ok()?;
            Some(Offer { model, price_per_mtok })
        })
    }

    /// The price offered for `model` (canonical), if any.
    pub fn price_of(&self, model: &str) -> Option<u64> {
        self.iter().find(|o| o.model == model).map(|o| o.price_per_mtok)
    }
}

/// Checks an endpoint: at most [`MAX_ENDPOINT_LEN`] bytes of printable ASCII (empty = none).
pub fn check_endpoint(endpoint: &str) -> Result<()> {
    if endpoint.len() > MAX_ENDPOINT_LEN || !endpoint.bytes().all(|c| (0x21..=0x7e).contains(&c)) {
        return Err(Error::InvalidEndpoint);
    }
    Ok(())
}

/// A decoded server account: header plus tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerAccount<'a> {
    /// The fixed header.
    pub header: ServerHeader,
    /// The off-chain endpoint URL, empty for none.
    pub endpoint: &'a str,
    /// The model offers.
    pub offers: Offers<'a>,
}

impl<'a> ServerAccount<'a> {
    /// Decodes the exact account data.
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let header = ServerHeader::decode(data)?;
        let mut r = Reader::new(data.get(ServerHeader::TAIL_OFFSET..).ok_or(Error::Truncated)?);
        let endpoint = r.ascii(MAX_ENDPOINT_LEN, Error::InvalidEndpoint)?;
        check_endpoint(endpoint)?;
        let offers = Offers::read(&mut r)?;
        r.finish()?;
        Ok(ServerAccount { header, endpoint, offers })
    }

    /// The price `data` (a server account written by the program, so its offers are already
    /// validated) offers for `model`, walking the tail with bounds checks but without re-validating
    /// each model id: the cheap path the program's lock takes.
    pub fn price_of_model(data: &[u8], model: &[u8]) -> Result<Option<u64>> {
        let mut r = Reader::new(data.get(ServerHeader::TAIL_OFFSET..).ok_or(Error::Truncated)?);
        r.bytes(MAX_ENDPOINT_LEN)?;
        let count = r.u32()?;
        for _ in 0..(count as usize).min(MAX_OFFERS) {
            let offered = r.bytes(crate::model::MAX_MODEL_ID_LEN)?;
            let price = r.u64()?;
            if offered == model {
                return Ok(Some(price));
            }
        }
        Ok(None)
    }

    /// Account size for a tail of this endpoint and offer bytes.
    #[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
    pub const fn size(endpoint_len: usize, offers_len: usize) -> usize {
        ServerHeader::LEN + 4 + endpoint_len + offers_len
    }

    /// Writes header and tail into `out`, which must be exactly [`ServerAccount::size`] long.
    pub fn encode_into(header: &ServerHeader, endpoint: &str, offers: &Offers<'_>, out: &mut [u8]) -> Result<()> {
        header.encode_into(out)?;
        let tail = out.get_mut(ServerHeader::TAIL_OFFSET..).ok_or(Error::Truncated)?;
        let mut w = Writer::new(tail);
        w.bytes(endpoint.as_bytes())?;
        w.put(offers.as_bytes())?;
        w.finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

/// Where a request is in its life. See [`crate::lifecycle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
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

impl RequestStatus {
    /// The status for a byte.
    pub const fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Self::Draft),
            1 => Ok(Self::Open),
            2 => Ok(Self::Locked),
            3 => Ok(Self::Completed),
            4 => Ok(Self::Cancelled),
            5 => Ok(Self::Expired),
            _ => Err(Error::InvalidTag),
        }
    }

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
            status: RequestStatus::from_u8(r.u8()?)?,
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

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

/// The fixed header of a response account, seeds `["response", request]`.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 4, version, bump | u8 ×3 |
/// | 3 | finished | bool |
/// | 4 | chunk_count | u32 |
/// | 8 | data_len (bytes of the tail) | u32 |
/// | 12 | request | [u8; 32] |
/// | 44 | server (authority; paid the rent) | [u8; 32] |
/// | 76 | tail: `chunk_count` × (u32 len, sealed bytes) | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Bump of the response PDA.
    pub bump: u8,
    /// Whether the final chunk is in.
    pub finished: bool,
    /// Chunks appended.
    pub chunk_count: u32,
    /// Bytes of chunk data (prefixes included).
    pub data_len: u32,
    /// The request this answers.
    pub request: Address,
    /// The server authority that streamed it and paid its rent.
    pub server: Address,
}

impl ResponseHeader {
    /// Size of the fixed header.
    pub const LEN: usize = 76;

    /// Decodes the fixed header from the start of the account data.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(fixed_head::<{ Self::LEN }>(data, AccountKind::Response)?);
        let bump = read_prefix(&mut r, AccountKind::Response)?;
        Ok(ResponseHeader {
            bump,
            finished: r.bool()?,
            chunk_count: r.u32()?,
            data_len: r.u32()?,
            request: *r.address()?,
            server: *r.address()?,
        })
    }

    /// Encodes the fixed header into the first [`ResponseHeader::LEN`] bytes of `out`.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        let head = out.first_chunk_mut::<{ Self::LEN }>().ok_or(Error::Truncated)?;
        let mut w = Writer::new(head);
        write_prefix(&mut w, AccountKind::Response, self.bump)?;
        w.bool(self.finished)?;
        w.u32(self.chunk_count)?;
        w.u32(self.data_len)?;
        w.put(&self.request)?;
        w.put(&self.server)?;
        w.finish()
    }

    /// The account size after appending a chunk of `chunk_len` bytes, or
    /// [`Error::ResponseTooLarge`] past [`MAX_RESPONSE_LEN`].
    pub fn size_after_append(&self, chunk_len: usize) -> Result<usize> {
        let data = (self.data_len as usize)
            .checked_add(4)
            .and_then(|v| v.checked_add(chunk_len))
            .ok_or(Error::ResponseTooLarge)?;
        if data > MAX_RESPONSE_LEN {
            return Err(Error::ResponseTooLarge);
        }
        Self::LEN.checked_add(data).ok_or(Error::ResponseTooLarge)
    }
}

/// A decoded response account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseAccount<'a> {
    /// The fixed header.
    pub header: ResponseHeader,
    tail: &'a [u8],
}

impl<'a> ResponseAccount<'a> {
    /// Decodes the exact account data, checking every chunk prefix.
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let header = ResponseHeader::decode(data)?;
        let tail = data.get(ResponseHeader::LEN..).ok_or(Error::Truncated)?;
        if tail.len() != header.data_len as usize {
            return Err(if tail.len() < header.data_len as usize { Error::Truncated } else { Error::TrailingBytes });
        }
        let mut r = Reader::new(tail);
        for _ in 0..header.chunk_count {
            r.bytes(MAX_RESPONSE_LEN)?;
        }
        r.finish()?;
        Ok(ResponseAccount { header, tail })
    }

    /// The sealed chunks in order.
    pub fn chunks(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.tail);
        (0..self.header.chunk_count).map_while(move |_| r.bytes(MAX_RESPONSE_LEN).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_request() -> RequestHeader {
        RequestHeader {
            bump: 254,
            status: RequestStatus::Locked,
            flags: FLAG_FLAGGED,
            allowed_count: 2,
            response_bump: 253,
            max_tokens: 512,
            timeout: 300,
            min_success_bps: 9_000,
            nonce: 7,
            stake: 1_000_000,
            min_completed: 3,
            created_at: 1_700_000_000,
            deadline: 1_700_000_300,
            price_per_mtok: 2_000_000,
            tokens: 0,
            cost: 0,
            fee: 0,
            settled_at: 0,
            release_count: 1,
            prompt_len: 10,
            prompt_written: 10,
            client: [1; 32],
            locked_by: [2; 32],
        }
    }

    #[test]
    fn offsets_are_pinned() {
        let h = sample_request();
        let mut buf = [0u8; RequestHeader::LEN];
        h.encode_into(&mut buf).unwrap();
        assert_eq!(buf[0..7], [3, 1, 254, 2, 1, 2, 253]);
        assert_eq!(buf[7..11], 512u32.to_le_bytes());
        assert_eq!(buf[25..33], 1_000_000u64.to_le_bytes());
        assert_eq!(buf[49..57], 1_700_000_300i64.to_le_bytes());
        assert_eq!(buf[109..141], [1; 32]);
        assert_eq!(buf[141..173], [2; 32]);
        assert_eq!(buf[RequestHeader::STATUS_OFFSET], RequestStatus::Locked as u8);
        assert_eq!(buf[RequestHeader::CLIENT_OFFSET..][..32], [1; 32]);
        assert_eq!(buf[RequestHeader::LOCKED_BY_OFFSET..][..32], [2; 32]);
        assert_eq!(RequestHeader::decode(&buf).unwrap(), h);
        assert_eq!(RequestHeader::TAIL_OFFSET, 493);
        assert_eq!(Config::LEN, 90);
    }

    #[test]
    fn rejects_wrong_kind_version_and_truncation() {
        let mut buf = [0u8; RequestHeader::LEN];
        sample_request().encode_into(&mut buf).unwrap();
        let mut wrong_kind = buf;
        wrong_kind[0] = AccountKind::Server as u8;
        assert_eq!(RequestHeader::decode(&wrong_kind), Err(Error::WrongAccountKind));
        let mut wrong_version = buf;
        wrong_version[1] = 9;
        assert_eq!(RequestHeader::decode(&wrong_version), Err(Error::UnsupportedVersion));
        assert_eq!(RequestHeader::decode(&buf[..100]), Err(Error::Truncated));
        let mut bad_status = buf;
        bad_status[3] = 6;
        assert_eq!(RequestHeader::decode(&bad_status), Err(Error::InvalidTag));
    }

    #[test]
    fn config_round_trip_and_trailing() {
        let c =
            Config { bump: 1, treasury_bump: 2, params: ConfigParams::default(), admin: [3; 32], treasury: [4; 32] };
        let mut buf = [0u8; Config::LEN + 1];
        c.encode_into(&mut buf[..Config::LEN]).unwrap();
        assert_eq!(Config::decode(&buf[..Config::LEN]).unwrap(), c);
        assert_eq!(Config::decode(&buf), Err(Error::TrailingBytes));
    }
}
