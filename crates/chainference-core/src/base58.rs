//! Base58 (Bitcoin alphabet) for addresses, as Solana writes them.

use crate::error::{Error, Result};
use alloc::string::String;
use alloc::vec::Vec;

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Encodes bytes as base58.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::cast_possible_truncation)]
pub fn encode(bytes: &[u8]) -> String {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    // Little-endian base-58 digits.
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for &byte in &bytes[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(core::iter::repeat_n('1', zeros));
    out.extend(digits.iter().rev().map(|&d| char::from(ALPHABET[usize::from(d)])));
    out
}

/// Decodes base58 text; any character outside the alphabet is [`Error::InvalidTag`].
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
pub fn decode(text: &str) -> Result<Vec<u8>> {
    let zeros = text.bytes().take_while(|&c| c == b'1').count();
    let mut bytes: Vec<u8> = Vec::with_capacity(text.len());
    for c in text.bytes().skip(zeros) {
        let value = ALPHABET.iter().position(|&a| a == c).ok_or(Error::InvalidTag)?;
        let mut carry = value as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    bytes.extend(core::iter::repeat_n(0, zeros));
    bytes.reverse();
    Ok(bytes)
}

/// Decodes a base58 address (exactly 32 bytes).
pub fn decode_address(text: &str) -> Result<crate::Address> {
    decode(text)?.try_into().map_err(|_| Error::LengthOutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for bytes in [&[][..], &[0], &[0, 0, 1], &[255; 32], &[1, 2, 3, 4, 5]] {
            assert_eq!(decode(&encode(bytes)).unwrap(), bytes);
        }
        assert_eq!(encode(&[0; 32]), "11111111111111111111111111111111");
        assert_eq!(decode("0OIl"), Err(Error::InvalidTag));
    }
}
