//! The server account: reputation header, endpoint and model offers.

use crate::Address;
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

use super::{AccountKind, Header, read, view_mut, write};
use super::{MAX_ENDPOINT_LEN, MAX_OFFERS};
use crate::model::check_canonical_model;
use crate::pricing::ServerStats;

/// The fixed header of a server account, seeds `["server", authority]`.
///
/// The account outlives the server: [`crate::instruction::Instruction::CloseServer`] retires it
/// (offers and endpoint dropped, their rent refunded) and keeps this header, so closing and
/// registering again cannot reset the reputation kept under the operator's wallet.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 2, version, bump | u8 ×3 |
/// | 3 | state: 0 inactive, 1 active, 2 retired | u8 |
/// | 4 | locked_count | u32 |
/// | 8 | registered_at (first registration) | i64 |
/// | 16 | completed, counted, fees, flagged, timed_out, released, comparisons, preferred | u64 ×8 |
/// | 80 | authority | [u8; 32] |
/// | 112 | hpke_key | [u8; 32] |
/// | 144 | tail: endpoint (string ≤ 128), offers (u32 count ≤ 8, each model string + price u64); empty when retired | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ServerHeader {
    /// [`AccountKind::Server`].
    pub(crate) kind: u8,
    /// [`super::LAYOUT_VERSION`].
    pub(crate) version: u8,
    /// Bump of the server PDA.
    pub bump: u8,
    /// Active, inactive (switched off) or retired (closed, only its reputation left).
    pub state: ServerState,
    /// Requests this server holds locked now (it cannot close while any are).
    pub locked_count: u32,
    /// When the server first registered (unix seconds); kept across retire and re-register.
    pub registered_at: i64,
    /// Reputation counters.
    pub stats: ServerStats,
    /// The wallet that signs for this server.
    pub authority: Address,
    /// The server's X25519 HPKE public key.
    pub hpke_key: [u8; 32],
}

byte_enum! {
    /// Whether a server takes requests: the state byte of its account.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ServerState {
        /// Switched off by its operator: it cannot lock.
        Inactive = 0,
        /// Takes requests.
        Active = 1,
        /// Closed by its operator: no offers, no endpoint; only its reputation remains, and
        /// registering again revives it.
        Retired = 2,
    }
}

const _: () = {
    // No padding: the fields' sizes add up to the struct's.
    assert!(4 + 4 + 8 + 8 * 8 + 2 * 32 == ServerHeader::LEN);
    assert!(core::mem::size_of::<ServerHeader>() == ServerHeader::LEN);
    assert!(core::mem::offset_of!(ServerHeader, registered_at) == 8);
    assert!(core::mem::offset_of!(ServerHeader, hpke_key) == 112);
    assert!(core::mem::offset_of!(ServerHeader, state) == ServerHeader::ACTIVE_OFFSET);
    assert!(core::mem::offset_of!(ServerHeader, locked_count) == ServerHeader::LOCKED_COUNT_OFFSET);
    assert!(core::mem::offset_of!(ServerHeader, stats) == ServerHeader::STATS_OFFSET);
    assert!(core::mem::offset_of!(ServerHeader, authority) == ServerHeader::AUTHORITY_OFFSET);
    assert!(core::mem::size_of::<ServerStats>() == 64);
};

// SAFETY: `#[repr(C)]`, 144 bytes with no padding (asserted above; `ServerStats` is eight
// `u64`s), and every field accepts any bit pattern except `state`, checked by `check_bytes`.
#[allow(unsafe_code)] // see `Header`'s safety contract
unsafe impl Header for ServerHeader {
    const LEN: usize = ServerHeader::LEN;
    const KIND: AccountKind = AccountKind::Server;

    #[inline(always)]
    fn check_bytes(head: &[u8]) -> Result<()> {
        match head.get(ServerHeader::ACTIVE_OFFSET).copied().and_then(ServerState::from_u8) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidTag),
        }
    }

    #[inline(always)]
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

impl ServerHeader {
    /// Size of the fixed header.
    pub const LEN: usize = 144;
    /// Offset of the tail.
    pub const TAIL_OFFSET: usize = Self::LEN;
    /// Offset of the state byte (1 = active: a filter for discovery).
    pub const ACTIVE_OFFSET: usize = 3;
    /// Offset of `locked_count`.
    pub const LOCKED_COUNT_OFFSET: usize = 4;
    /// Offset of the first counter (`completed`); the others follow in [`ServerStats`] order.
    pub const STATS_OFFSET: usize = 16;
    /// Offset of `authority` (a filter for one operator's servers).
    pub const AUTHORITY_OFFSET: usize = 80;

    /// A newly registered, active server with no history.
    pub const fn new(bump: u8, registered_at: i64, authority: Address, hpke_key: [u8; 32]) -> Self {
        ServerHeader {
            kind: AccountKind::Server as u8,
            version: super::LAYOUT_VERSION,
            bump,
            state: ServerState::Active,
            locked_count: 0,
            registered_at,
            stats: ServerStats {
                completed: 0,
                counted: 0,
                fees: 0,
                flagged: 0,
                timed_out: 0,
                released: 0,
                comparisons: 0,
                preferred: 0,
            },
            authority,
            hpke_key,
        }
    }

    /// Whether it accepts new requests.
    pub const fn active(&self) -> bool {
        matches!(self.state, ServerState::Active)
    }

    /// Whether its operator closed it.
    pub const fn retired(&self) -> bool {
        matches!(self.state, ServerState::Retired)
    }

    /// Decodes the fixed header from the start of the account data (any alignment).
    pub fn decode(data: &[u8]) -> Result<Self> {
        read(data)
    }

    /// Encodes the fixed header into the first [`ServerHeader::LEN`] bytes of `out`.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        write(self, out)
    }

    /// The header of an account's data in place, writable (8-byte aligned, as the runtime lays
    /// it out): what the program updates counters through.
    pub fn view_mut(data: &mut [u8]) -> Result<&mut Self> {
        view_mut(data)
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

impl<'a> Offers<'a> {
    /// No offers: what a retired server publishes.
    pub const NONE: Offers<'static> = Offers { bytes: &[0, 0, 0, 0], count: 0 };

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

    /// Whether there are none (only a retired server's list).
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
    /// Decodes the exact account data. A retired server has no tail: its endpoint is empty and
    /// its offer list is empty.
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let header = ServerHeader::decode(data)?;
        if header.retired() {
            if data.len() != ServerHeader::LEN {
                return Err(Error::TrailingBytes);
            }
            return Ok(ServerAccount { header, endpoint: "", offers: Offers::NONE });
        }
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
        if data.len() == ServerHeader::LEN {
            return Ok(None); // retired: no tail, no offers
        }
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
