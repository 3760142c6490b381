//! The config account (the protocol's parameters) and the fee treasury.

use crate::Address;
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

use super::{AccountKind, Header, read, read_prefix, write, write_prefix};

/// Tunable protocol parameters, set at init and by the admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Strictly longer than `flag_window`.
    pub retention: u32,
    /// How long after a lock the locking server has to append its first chunk; past it with
    /// no chunk, anyone may release the request back to Open (lock squatting), in seconds.
    pub lock_window: u32,
    /// The part of the server's held share a flag returns to the client, in basis points.
    pub flag_refund_bps: u16,
    /// The least protocol fee (lamports) a request must have paid for its completion, flag or
    /// comparison to count toward reputation: self-dealing and sybil farming cost at least this
    /// much per counted step, on top of its transaction fees. The default, 1, counts every paid
    /// request and no free one; a deployment whose requests are larger raises it.
    pub min_counted_fee: u64,
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
            lock_window: 30,
            flag_refund_bps: 5_000,
            min_counted_fee: 1,
        }
    }
}

impl ConfigParams {
    /// Checks `fee_bps <= 10_000`, `flag_refund_bps <= 10_000`,
    /// `0 < min_timeout <= default_timeout <= max_timeout`, `0 < lock_window <= max_timeout` and
    /// `retention > flag_window`.
    pub const fn validate(&self) -> Result<()> {
        if self.fee_bps > 10_000 || self.flag_refund_bps > 10_000 {
            return Err(Error::InvalidFeeBps);
        }
        // retention > flag_window, strictly: a third party's close (allowed from
        // settled_at + retention) can never land inside the flag window [settled_at, settled_at + flag_window).
        if self.min_timeout == 0
            || self.min_timeout > self.default_timeout
            || self.default_timeout > self.max_timeout
            || self.lock_window == 0
            || self.lock_window > self.max_timeout
            || self.retention <= self.flag_window
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

    /// Decodes the parameters (36 bytes: `fee_bps` and `flag_refund_bps` u16, the six u32
    /// durations, `min_counted_fee` u64; every field naturally aligned at offset 4 of the
    /// config account): the one decoder of both the config account and the
    /// InitConfig/UpdateConfig instruction data.
    pub fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ConfigParams {
            fee_bps: r.u16()?,
            flag_refund_bps: r.u16()?,
            default_timeout: r.u32()?,
            min_timeout: r.u32()?,
            max_timeout: r.u32()?,
            flag_window: r.u32()?,
            retention: r.u32()?,
            lock_window: r.u32()?,
            min_counted_fee: r.u64()?,
        })
    }

    /// Encodes the parameters (the inverse of [`ConfigParams::read`]).
    pub fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u16(self.fee_bps)?;
        w.u16(self.flag_refund_bps)?;
        w.u32(self.default_timeout)?;
        w.u32(self.min_timeout)?;
        w.u32(self.max_timeout)?;
        w.u32(self.flag_window)?;
        w.u32(self.retention)?;
        w.u32(self.lock_window)?;
        w.u64(self.min_counted_fee)
    }

    /// Size of the encoded parameters.
    pub const LEN: usize = 2 * 2 + 4 * 6 + 8;

    /// Whether a request that paid `fee` counts toward reputation (its completion, flag and
    /// comparison).
    pub const fn counts(&self, fee: u64) -> bool {
        fee >= self.min_counted_fee
    }

    /// The encoded parameters.
    pub fn to_bytes(&self) -> Result<[u8; Self::LEN]> {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        self.write(&mut w)?;
        w.finish()?;
        Ok(out)
    }
}

/// The config account, seeds `["config"]`.
///
/// | offset | field | type |
/// | --- | --- | --- |
/// | 0 | kind = 1 | u8 |
/// | 1 | version | u8 |
/// | 2 | bump | u8 |
/// | 3 | treasury_bump | u8 |
/// | 4 | params ([`ConfigParams`], 36 bytes) | |
/// | 40 | admin | [u8; 32] |
/// | 72 | treasury | [u8; 32] |
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

/// The config account's bytes as a struct (the layout in the table above), so the program reads
/// the parameters with aligned loads instead of parsing them.
#[derive(Clone, Copy)]
#[repr(C)]
struct ConfigLayout {
    kind: u8,
    version: u8,
    bump: u8,
    treasury_bump: u8,
    fee_bps: u16,
    flag_refund_bps: u16,
    default_timeout: u32,
    min_timeout: u32,
    max_timeout: u32,
    flag_window: u32,
    retention: u32,
    lock_window: u32,
    min_counted_fee: u64,
    admin: Address,
    treasury: Address,
}

const _: () = {
    // No padding: the fields' sizes add up to the struct's.
    assert!(4 + 2 * 2 + 6 * 4 + 8 + 2 * 32 == Config::LEN);
    assert!(core::mem::size_of::<ConfigLayout>() == Config::LEN);
    assert!(core::mem::offset_of!(ConfigLayout, flag_refund_bps) == 6);
    assert!(core::mem::offset_of!(ConfigLayout, lock_window) == 28);
    assert!(core::mem::offset_of!(ConfigLayout, treasury) == 72);
    assert!(core::mem::offset_of!(ConfigLayout, fee_bps) == 4);
    assert!(core::mem::offset_of!(ConfigLayout, min_counted_fee) == 32);
    assert!(core::mem::offset_of!(ConfigLayout, admin) == 40);
};

// SAFETY: `#[repr(C)]`, 104 bytes with no padding (asserted above), integers and byte arrays
// only: every bit pattern is valid.
#[allow(unsafe_code)] // see `Header`'s safety contract
unsafe impl Header for ConfigLayout {
    const LEN: usize = Config::LEN;
    const KIND: AccountKind = AccountKind::Config;

    fn check_bytes(_: &[u8]) -> Result<()> {
        Ok(())
    }

    fn check(&self) -> Result<()> {
        Ok(())
    }
}

impl ConfigLayout {
    const fn params(&self) -> ConfigParams {
        ConfigParams {
            fee_bps: self.fee_bps,
            default_timeout: self.default_timeout,
            min_timeout: self.min_timeout,
            max_timeout: self.max_timeout,
            flag_window: self.flag_window,
            retention: self.retention,
            lock_window: self.lock_window,
            flag_refund_bps: self.flag_refund_bps,
            min_counted_fee: self.min_counted_fee,
        }
    }
}

impl Config {
    /// Encoded size.
    pub const LEN: usize = 4 + ConfigParams::LEN + 32 + 32;

    /// Only the parameters, checking kind, version and size (what most instructions need).
    pub fn params_of(data: &[u8]) -> Result<ConfigParams> {
        if data.len() > Self::LEN {
            return Err(Error::TrailingBytes);
        }
        Ok(read::<ConfigLayout>(data)?.params())
    }

    /// Decodes the exact account data.
    pub fn decode(data: &[u8]) -> Result<Self> {
        let layout = read::<ConfigLayout>(data)?;
        if data.len() > Self::LEN {
            return Err(Error::TrailingBytes);
        }
        Ok(Config {
            bump: layout.bump,
            treasury_bump: layout.treasury_bump,
            params: layout.params(),
            admin: layout.admin,
            treasury: layout.treasury,
        })
    }

    /// Encodes into exactly [`Config::LEN`] bytes.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        if out.len() != Self::LEN {
            return Err(if out.len() < Self::LEN { Error::Truncated } else { Error::TrailingBytes });
        }
        let p = &self.params;
        let layout = ConfigLayout {
            kind: AccountKind::Config as u8,
            version: super::LAYOUT_VERSION,
            bump: self.bump,
            treasury_bump: self.treasury_bump,
            fee_bps: p.fee_bps,
            flag_refund_bps: p.flag_refund_bps,
            default_timeout: p.default_timeout,
            min_timeout: p.min_timeout,
            max_timeout: p.max_timeout,
            flag_window: p.flag_window,
            retention: p.retention,
            lock_window: p.lock_window,
            min_counted_fee: p.min_counted_fee,
            admin: self.admin,
            treasury: self.treasury,
        };
        write(&layout, out)
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
