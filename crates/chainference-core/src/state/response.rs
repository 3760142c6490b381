//! The response account: the sealed answer stream of one request.

use crate::Address;
use crate::error::{Error, Result};
use crate::wire::Reader;

use super::MAX_RESPONSE_LEN;
use super::{AccountKind, Header, read, write};

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
#[repr(C)]
pub struct ResponseHeader {
    /// [`AccountKind::Response`].
    pub(crate) kind: u8,
    /// [`super::LAYOUT_VERSION`].
    pub(crate) version: u8,
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

const _: () = {
    // No padding: the fields' sizes add up to the struct's.
    assert!(4 + 2 * 4 + 2 * 32 == ResponseHeader::LEN);
    assert!(core::mem::size_of::<ResponseHeader>() == ResponseHeader::LEN);
    assert!(core::mem::offset_of!(ResponseHeader, finished) == 3);
    assert!(core::mem::offset_of!(ResponseHeader, chunk_count) == 4);
    assert!(core::mem::offset_of!(ResponseHeader, request) == 12);
    assert!(core::mem::offset_of!(ResponseHeader, data_len) == 8);
    assert!(core::mem::offset_of!(ResponseHeader, server) == 44);
};

// SAFETY: `#[repr(C)]`, 76 bytes with no padding (asserted above), and every field accepts any
// bit pattern except the `finished` bool, whose byte `check_bytes` checks.
#[allow(unsafe_code)] // see `Header`'s safety contract
unsafe impl Header for ResponseHeader {
    const LEN: usize = ResponseHeader::LEN;
    const KIND: AccountKind = AccountKind::Response;

    #[inline(always)]
    fn check_bytes(head: &[u8]) -> Result<()> {
        match head.get(3) {
            Some(0 | 1) => Ok(()),
            _ => Err(Error::InvalidTag),
        }
    }

    #[inline(always)]
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

impl ResponseHeader {
    /// Size of the fixed header.
    pub const LEN: usize = 76;

    /// An empty response of `request`, streamed by `server`.
    pub const fn new(bump: u8, request: Address, server: Address) -> Self {
        ResponseHeader {
            kind: AccountKind::Response as u8,
            version: super::LAYOUT_VERSION,
            bump,
            finished: false,
            chunk_count: 0,
            data_len: 0,
            request,
            server,
        }
    }

    /// Decodes the fixed header from the start of the account data (any alignment).
    pub fn decode(data: &[u8]) -> Result<Self> {
        read(data)
    }

    /// Encodes the fixed header into the first [`ResponseHeader::LEN`] bytes of `out`.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        write(self, out)
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
