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

mod config;
mod request;
mod response;
mod server;

pub use config::{Config, ConfigParams, Treasury};
pub use request::{
    FLAG_COMPARED, FLAG_COUNTED, FLAG_FLAGGED, FLAG_HAS_RESPONSE, REQUEST_BUMP, RequestAccount, RequestHeader,
    RequestStatus, allowed_slice, read_array,
};
pub use response::{ResponseAccount, ResponseHeader};
pub use server::{Offer, Offers, ServerAccount, ServerHeader, check_endpoint};

/// Moved to [`crate::model::check_canonical_model`], next to the grammar it checks.
#[deprecated(since = "0.1.0", note = "use chainference_core::model::check_canonical_model")]
pub fn check_canonical_model(model: &str) -> Result<()> {
    crate::model::check_canonical_model(model)
}

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

/// Layout version written by this build.
pub const LAYOUT_VERSION: u8 = 2;

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

byte_enum! {
    /// The kind byte at offset 0 of every account.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// Reads and checks the `kind, version` prefix; returns the bump.
#[inline(always)]
pub(crate) fn read_prefix(r: &mut Reader<'_>, kind: AccountKind) -> Result<u8> {
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
pub(crate) fn fixed_head<const N: usize>(data: &[u8], kind: AccountKind) -> Result<&[u8; N]> {
    match data {
        [k, ..] if *k != kind as u8 => return Err(Error::WrongAccountKind),
        [_, v, ..] if *v != LAYOUT_VERSION => return Err(Error::UnsupportedVersion),
        _ => {}
    }
    data.first_chunk::<N>().ok_or(Error::Truncated)
}

#[inline(always)]
pub(crate) fn write_prefix(w: &mut Writer<'_>, kind: AccountKind, bump: u8) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_request() -> RequestHeader {
        RequestHeader {
            bump: 255,
            status: RequestStatus::Locked,
            flags: FLAG_FLAGGED,
            allowed_count: 2,
            fee_bps: 1_000,
            max_tokens: 512,
            timeout: 300,
            nonce: 7,
            stake: 1_000_000,
            max_price_per_mtok: 3_000_000,
            min_completed: 3,
            created_at: 1_700_000_000,
            deadline: 1_700_000_300,
            locked_at: 1_700_000_010,
            settled_at: 0,
            price_per_mtok: 2_000_000,
            tokens: 0,
            cost: 0,
            fee: 0,
            server_due: 0,
            min_success_bps: 9_000,
            release_count: 1,
            prompt_len: 10,
            prompt_written: 10,
            client: [1; 32],
            locked_by: [2; 32],
        }
    }

    #[test]
    fn offsets_are_pinned_and_aligned() {
        let h = sample_request();
        let mut buf = [0u8; RequestHeader::LEN];
        h.encode_into(&mut buf).unwrap();
        assert_eq!(buf[0..6], [3, 2, 255, 2, 1, 2]);
        assert_eq!(buf[6..8], 1_000u16.to_le_bytes());
        assert_eq!(buf[8..12], 512u32.to_le_bytes());
        assert_eq!(buf[24..32], 1_000_000u64.to_le_bytes());
        assert_eq!(buf[32..40], 3_000_000u64.to_le_bytes());
        assert_eq!(buf[56..64], 1_700_000_300i64.to_le_bytes());
        assert_eq!(buf[64..72], 1_700_000_010i64.to_le_bytes());
        assert_eq!(buf[80..88], 2_000_000u64.to_le_bytes());
        assert_eq!(buf[120..122], 9_000u16.to_le_bytes());
        assert_eq!(buf[124..128], 1u32.to_le_bytes());
        assert_eq!(buf[136..168], [1; 32]);
        assert_eq!(buf[168..200], [2; 32]);
        assert_eq!(buf[RequestHeader::STATUS_OFFSET], RequestStatus::Locked as u8);
        assert_eq!(buf[RequestHeader::CLIENT_OFFSET..][..32], [1; 32]);
        assert_eq!(buf[RequestHeader::LOCKED_BY_OFFSET..][..32], [2; 32]);
        assert_eq!(RequestHeader::decode(&buf).unwrap(), h);
        assert_eq!(RequestHeader::TAIL_OFFSET, 520);
        assert_eq!(Config::LEN, 104);
        assert_eq!(ServerHeader::LEN, 144);
        let mut reserved = buf;
        reserved[122] = 1;
        assert_eq!(RequestHeader::decode(&reserved), Err(Error::InvalidTag), "the reserved field must stay zero");
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
