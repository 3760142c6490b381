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
    DeclineReasons, FLAG_COMPARED, FLAG_COUNTED, FLAG_FLAGGED, FLAG_HAS_RESPONSE, FLAG_PREFERRED, REQUEST_BUMP,
    RequestAccount, RequestHeader, RequestStatus, RequestTail, allowed_slice, read_array,
};
pub use response::{ResponseAccount, ResponseHeader};
pub use server::{Offer, Offers, ServerAccount, ServerHeader, ServerState, check_endpoint};

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

/// An account header whose `#[repr(C)]` struct *is* its byte layout: every field at its pinned
/// offset, naturally aligned, no padding, little-endian. The program views account bytes as the
/// struct in place ([`view_mut`]), reading and writing only the fields an instruction touches;
/// hosts copy it out ([`read`]) and back ([`write`]). One definition, no encoder to drift.
///
/// # Safety
/// Implementors are `#[repr(C)]` with `size_of::<Self>() == Self::LEN` and no padding, and every
/// byte pattern that [`Header::check_bytes`] accepts is a valid value of every field.
#[allow(unsafe_code)] // implementors promise the layout contract below
pub(crate) unsafe trait Header: Copy {
    /// Size of the header in bytes.
    const LEN: usize;
    /// The kind byte it starts with.
    const KIND: AccountKind;
    /// Checks the bytes a valid value depends on (enum bytes); `head` is exactly `LEN` bytes
    /// with the right kind and version.
    fn check_bytes(head: &[u8]) -> Result<()>;
    /// Checks the invariants of a valid value (counts, lengths).
    fn check(&self) -> Result<()>;
}

// Layouts are little-endian; so are SBF, x86, ARM hosts and wasm.
#[cfg(not(target_endian = "little"))]
compile_error!("chainference account layouts are little-endian");

/// The first `T::LEN` bytes, with kind and version checked first (so a short account of another
/// kind reports the kind).
#[inline(always)]
fn head<T: Header>(data: &[u8]) -> Result<&[u8]> {
    match data {
        [k, ..] if *k != T::KIND as u8 => Err(Error::WrongAccountKind),
        [_, v, ..] if *v != LAYOUT_VERSION => Err(Error::UnsupportedVersion),
        _ => data.get(..T::LEN).ok_or(Error::Truncated),
    }
}

/// A copy of the header at the start of `data` (any alignment).
#[inline(always)]
#[allow(unsafe_code)] // one cast, justified below
pub(crate) fn read<T: Header>(data: &[u8]) -> Result<T> {
    let head = head::<T>(data)?;
    T::check_bytes(head)?;
    let ptr = head.as_ptr().cast::<T>();
    // SAFETY: `head` holds `T::LEN == size_of::<T>()` bytes that `check_bytes` accepted, which by
    // the trait's contract form a valid `T`. Account data is aligned (the program's case: a
    // plain aligned copy); host buffers may not be (`read_unaligned` needs no alignment).
    let value = unsafe {
        if (ptr as usize).is_multiple_of(core::mem::align_of::<T>()) {
            core::ptr::read(ptr)
        } else {
            core::ptr::read_unaligned(ptr)
        }
    };
    value.check()?;
    Ok(value)
}

/// The header at the start of `data`, in place. `data` must be 8-byte aligned, as the runtime
/// lays out every account's data ([`Error::Misaligned`] otherwise, which only a host buffer can be).
#[inline(always)]
#[allow(unsafe_code)] // one cast, justified below
pub(crate) fn view<T: Header>(data: &[u8]) -> Result<&T> {
    let head = head::<T>(data)?;
    T::check_bytes(head)?;
    if !(head.as_ptr() as usize).is_multiple_of(core::mem::align_of::<T>()) {
        return Err(Error::Misaligned);
    }
    // SAFETY: `head` is `size_of::<T>()` bytes, aligned for `T` (checked above), accepted by
    // `check_bytes` (so a valid `T`), and borrowed for the returned lifetime.
    let value = unsafe { &*head.as_ptr().cast::<T>() };
    value.check()?;
    Ok(value)
}

/// The header at the start of `data`, in place and writable (see [`view`]).
#[inline(always)]
#[allow(unsafe_code)] // one cast, justified below
pub(crate) fn view_mut<T: Header>(data: &mut [u8]) -> Result<&mut T> {
    view::<T>(data)?;
    // SAFETY: `view` checked size, alignment and validity of these bytes; the exclusive borrow
    // of `data` is carried into the returned reference, and every later write goes through a
    // field of `T`, so the bytes stay a valid `T`.
    Ok(unsafe { &mut *data.as_mut_ptr().cast::<T>() })
}

/// Writes `value` into the first `T::LEN` bytes of `out`.
#[inline(always)]
#[allow(unsafe_code)] // one cast, justified below
pub(crate) fn write<T: Header>(value: &T, out: &mut [u8]) -> Result<()> {
    let out = out.get_mut(..T::LEN).ok_or(Error::Truncated)?;
    // SAFETY: `T` has no padding (the trait's contract), so all `T::LEN` bytes of `value` are
    // initialized; the slice borrows `value` only for this copy.
    let bytes = unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), T::LEN) };
    out.copy_from_slice(bytes);
    Ok(())
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
            kind: AccountKind::Request as u8,
            version: LAYOUT_VERSION,
            declined: 0,
            decline_reasons: 0,
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
        // Declines name allow-list slots in use, and come with a reason.
        let mut declined = buf;
        declined[RequestHeader::DECLINED_OFFSET] = 0b10;
        declined[123] = DeclineReasons::BUDGET_TOO_SMALL.0;
        assert!(RequestHeader::decode(&declined).unwrap().declined_by(1));
        declined[RequestHeader::DECLINED_OFFSET] = 0b100;
        assert_eq!(RequestHeader::decode(&declined), Err(Error::InvalidTag), "slot 2 is not in use");
        declined[RequestHeader::DECLINED_OFFSET] = 0b1;
        declined[123] = 0;
        assert_eq!(RequestHeader::decode(&declined), Err(Error::InvalidTag), "a decline without a reason");
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
