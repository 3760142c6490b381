//! The byte codec every layout uses: borsh's encoding (little-endian integers, fixed arrays as
//! raw bytes, `u32` length prefixes for strings and byte vectors, `0`/`1` for booleans and
//! option tags), read without allocation and with precise errors.
//!
//! `Reader` never panics: every read checks its bounds and returns [`Error::Truncated`];
//! [`Reader::finish`] returns [`Error::TrailingBytes`] when bytes are left over.

use crate::error::{Error, Result};

/// A bounds-checked cursor over borrowed bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    #[inline(always)]
    pub const fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// Bytes not yet read.
    #[inline(always)]
    pub const fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The unread bytes, without consuming them.
    #[inline(always)]
    pub const fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// Takes the next `n` bytes.
    #[inline(always)]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let Some((head, tail)) = self.bytes.split_at_checked(n) else {
            return Err(Error::Truncated);
        };
        self.bytes = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    #[inline(always)]
    pub fn array<const N: usize>(&mut self) -> Result<&'a [u8; N]> {
        let Some((head, tail)) = self.bytes.split_first_chunk::<N>() else {
            return Err(Error::Truncated);
        };
        self.bytes = tail;
        Ok(head)
    }

    /// Reads a `u8`.
    #[inline(always)]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a borsh boolean (`0` or `1`; anything else is [`Error::InvalidTag`]).
    #[inline(always)]
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::InvalidTag),
        }
    }

    /// Reads a little-endian `u16`.
    #[inline(always)]
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(*self.array()?))
    }

    /// Reads a little-endian `u32`.
    #[inline(always)]
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(*self.array()?))
    }

    /// Reads a little-endian `u64`.
    #[inline(always)]
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(*self.array()?))
    }

    /// Reads a little-endian `i64`.
    #[inline(always)]
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(*self.array()?))
    }

    /// Reads a 32-byte address.
    #[inline(always)]
    pub fn address(&mut self) -> Result<&'a [u8; 32]> {
        self.array::<32>()
    }

    /// Reads a `u32`-prefixed byte vector of at most `max` bytes.
    #[inline(always)]
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(Error::LengthOutOfRange);
        }
        self.take(len)
    }

    /// Reads a `u32`-prefixed UTF-8 string of at most `max` bytes.
    #[inline(always)]
    pub fn str(&mut self, max: usize) -> Result<&'a str> {
        core::str::from_utf8(self.bytes(max)?).map_err(|_| Error::InvalidUtf8)
    }

    /// Reads a `u32`-prefixed string of at most `max` bytes that must be ASCII (model ids,
    /// endpoints), failing with `err` otherwise. Cheaper than [`Reader::str`] on SBF, where
    /// `core::str::from_utf8` costs hundreds of compute units for a short string.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub fn ascii(&mut self, max: usize, err: Error) -> Result<&'a str> {
        let bytes = self.bytes(max)?;
        let (words, tail) = bytes.as_chunks::<8>();
        let high = words.iter().fold(0u64, |acc, w| acc | u64::from_le_bytes(*w))
            | tail.iter().fold(0u64, |acc, &b| acc | u64::from(b));
        if high & 0x8080_8080_8080_8080 != 0 {
            return Err(err);
        }
        // SAFETY: every byte is below 0x80 (checked just above), and ASCII is valid UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked(bytes) })
    }

    /// Ends the read: any byte left is [`Error::TrailingBytes`].
    #[inline(always)]
    pub fn finish(self) -> Result<()> {
        if self.bytes.is_empty() { Ok(()) } else { Err(Error::TrailingBytes) }
    }
}

/// A bounds-checked writer into a borrowed buffer (the account data, on-chain).
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    #[inline(always)]
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    #[inline(always)]
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Writes raw bytes.
    #[inline(always)]
    pub fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.pos.checked_add(bytes.len()).ok_or(Error::Truncated)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(Error::Truncated)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Writes a `u8`.
    #[inline(always)]
    pub fn u8(&mut self, v: u8) -> Result<()> {
        self.put(&[v])
    }

    /// Writes a borsh boolean.
    #[inline(always)]
    pub fn bool(&mut self, v: bool) -> Result<()> {
        self.u8(u8::from(v))
    }

    /// Writes a little-endian `u16`.
    #[inline(always)]
    pub fn u16(&mut self, v: u16) -> Result<()> {
        self.put(&v.to_le_bytes())
    }

    /// Writes a little-endian `u32`.
    #[inline(always)]
    pub fn u32(&mut self, v: u32) -> Result<()> {
        self.put(&v.to_le_bytes())
    }

    /// Writes a little-endian `u64`.
    #[inline(always)]
    pub fn u64(&mut self, v: u64) -> Result<()> {
        self.put(&v.to_le_bytes())
    }

    /// Writes a little-endian `i64`.
    #[inline(always)]
    pub fn i64(&mut self, v: i64) -> Result<()> {
        self.put(&v.to_le_bytes())
    }

    /// Writes a `u32`-prefixed byte vector.
    #[inline(always)]
    pub fn bytes(&mut self, v: &[u8]) -> Result<()> {
        let len = u32::try_from(v.len()).map_err(|_| Error::LengthOutOfRange)?;
        self.u32(len)?;
        self.put(v)
    }

    /// Ends the write: the buffer must be exactly full.
    #[inline(always)]
    pub fn finish(self) -> Result<()> {
        if self.pos == self.buf.len() { Ok(()) } else { Err(Error::TrailingBytes) }
    }
}

/// A growable writer for host-side encoding (instruction data, test fixtures).
#[cfg(feature = "alloc")]
#[derive(Debug, Default)]
pub struct VecWriter(pub alloc::vec::Vec<u8>);

#[cfg(feature = "alloc")]
impl VecWriter {
    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.put(&[v])
    }
    /// Appends a borsh boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    /// Appends a little-endian `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    /// Appends a `u32`-prefixed byte vector; lengths above `u32::MAX` are an error.
    pub fn bytes(&mut self, v: &[u8]) -> Result<&mut Self> {
        let len = u32::try_from(v.len()).map_err(|_| Error::LengthOutOfRange)?;
        Ok(self.u32(len).put(v))
    }
    /// The bytes written.
    pub fn into_inner(self) -> alloc::vec::Vec<u8> {
        self.0
    }
}
