//! The server's HPKE keys: derived from the wallet by generation, rotated on request, the
//! previous key kept so prompts sealed just before a rotation still open.

use chainference_chain::{Keypair, Signer};
use chainference_core::envelope::{self, ServerKeyPair, server_key_message};

/// How many generations a starting server tries when it looks for the key it published.
pub(crate) const KEY_GENERATIONS_SEARCHED: u32 = 64;

/// Where the server's HPKE key comes from.
pub enum KeySource {
    /// Derived from the wallet ([`ServerKeyPair::from_wallet_signature`]): nothing to store, a
    /// restart finds the generation it published, rotation moves to the next one. The default.
    Wallet,
    /// A key the operator keeps; rotation replaces it with a fresh random one (which the operator
    /// must then keep: read it with [`crate::runtime::ServerHandle::rotate_key`]'s result).
    Fixed(ServerKeyPair),
}

/// The current key and the one before it.
pub(crate) struct KeyRing {
    pub(crate) current: ServerKeyPair,
    pub(crate) previous: Option<ServerKeyPair>,
    /// The wallet generation of `current`, `None` for a fixed key.
    pub(crate) generation: Option<u32>,
}

pub(crate) fn derive(wallet: &Keypair, generation: u32) -> ServerKeyPair {
    let signature = wallet.sign_message(server_key_message(generation).as_bytes());
    ServerKeyPair::from_wallet_signature(signature.as_array())
}

impl KeyRing {
    /// The ring for `source`, given the key the server's account publishes now (if any).
    pub(crate) fn resolve(source: KeySource, wallet: &Keypair, published: Option<[u8; 32]>) -> KeyRing {
        match source {
            KeySource::Fixed(key) => KeyRing { current: key, previous: None, generation: None },
            KeySource::Wallet => {
                let found = published.and_then(|published| {
                    (0..KEY_GENERATIONS_SEARCHED).find(|g| derive(wallet, *g).public_key() == published)
                });
                let generation = found.unwrap_or(0);
                let previous = generation.checked_sub(1).map(|g| derive(wallet, g));
                KeyRing { current: derive(wallet, generation), previous, generation: Some(generation) }
            }
        }
    }

    /// The next key: the next wallet generation, or a fresh random key for a fixed source.
    pub(crate) fn next(&self, wallet: &Keypair) -> Result<(ServerKeyPair, Option<u32>), chainference_core::Error> {
        match self.generation {
            Some(g) => {
                let next = g.checked_add(1).ok_or(chainference_core::Error::ArithmeticOverflow)?;
                Ok((derive(wallet, next), Some(next)))
            }
            None => Ok((ServerKeyPair::generate()?, None)),
        }
    }

    /// Opens `envelope` (slot `slot` of `request`) with the current key, or the previous one.
    pub(crate) fn open_prompt(
        &self,
        envelope_bytes: &[u8],
        request: &[u8; 32],
        slot: u8,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, chainference_core::Error> {
        match envelope::open_prompt(envelope_bytes, request, slot, self.current.secret()) {
            Ok(plain) => Ok(plain),
            Err(err) => match &self.previous {
                Some(previous) => envelope::open_prompt(envelope_bytes, request, slot, previous.secret()),
                None => Err(err),
            },
        }
    }
}
