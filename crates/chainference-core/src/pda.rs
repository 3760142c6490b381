//! Program id and the seeds of every account the program owns.
//!
//! Every account is a PDA of the program. The seed functions are shared by the program (which
//! signs account creation with them) and the SDKs; [`find_program_address`] derives addresses on
//! the host (feature `builders`), matching Solana's own derivation byte for byte.

use crate::Address;

/// The Chainference program id, `sha256("chainference program v1")`
/// ([`PROGRAM_ID_BASE58`]). Deployments to other addresses pass their own id to the builders.
pub const PROGRAM_ID: Address = [
    0x18, 0x9a, 0x61, 0x30, 0x8d, 0x74, 0x62, 0x44, 0x7c, 0x84, 0xac, 0xee, 0x32, 0x76, 0x15, 0x40, 0xbc, 0x17, 0x34,
    0x1f, 0xcf, 0xe2, 0x18, 0x4c, 0x61, 0xf3, 0xb6, 0xd9, 0x31, 0x7e, 0x0b, 0x1f,
];

/// [`PROGRAM_ID`] in base58.
pub const PROGRAM_ID_BASE58: &str = "2f3KVk2a7EYVcZGZFS16NE717EqpTpyRH8WETBirdNdt";

/// The system program's address (all zeros).
pub const SYSTEM_PROGRAM_ID: Address = [0; 32];

/// Seed prefix of the config account.
pub const CONFIG_SEED: &[u8] = b"config";
/// Seed prefix of the treasury account.
pub const TREASURY_SEED: &[u8] = b"treasury";
/// Seed prefix of server accounts.
pub const SERVER_SEED: &[u8] = b"server";
/// Seed prefix of request accounts.
pub const REQUEST_SEED: &[u8] = b"request";
/// Seed prefix of response accounts.
pub const RESPONSE_SEED: &[u8] = b"response";

/// Seeds of the config account: `["config"]`.
pub const fn config_seeds() -> [&'static [u8]; 1] {
    [CONFIG_SEED]
}

/// Seeds of the treasury account: `["treasury"]`.
pub const fn treasury_seeds() -> [&'static [u8]; 1] {
    [TREASURY_SEED]
}

/// Seeds of a server account: `["server", authority]`.
pub const fn server_seeds(authority: &Address) -> [&[u8]; 2] {
    [SERVER_SEED, authority.as_slice()]
}

/// Seeds of a request account: `["request", client, nonce (u64 LE)]`. The nonce bytes are passed
/// in so the seeds can borrow them.
pub const fn request_seeds<'a>(client: &'a Address, nonce_le: &'a [u8; 8]) -> [&'a [u8]; 3] {
    [REQUEST_SEED, client.as_slice(), nonce_le.as_slice()]
}

/// Seeds of a response account: `["response", request]`.
pub const fn response_seeds(request: &Address) -> [&[u8]; 2] {
    [RESPONSE_SEED, request.as_slice()]
}

#[cfg(feature = "builders")]
mod derive {
    use super::*;
    use sha2::{Digest, Sha256};

    const PDA_MARKER: &[u8] = b"ProgramDerivedAddress";

    /// Solana's `create_program_address`: `sha256(seeds || [bump] || program_id || marker)`,
    /// rejected when the hash is a valid ed25519 point (a PDA must have no private key).
    pub fn create_program_address(seeds: &[&[u8]], bump: u8, program_id: &Address) -> Option<Address> {
        let mut hasher = Sha256::new();
        for seed in seeds {
            hasher.update(seed);
        }
        hasher.update([bump]);
        hasher.update(program_id);
        hasher.update(PDA_MARKER);
        let hash: [u8; 32] = hasher.finalize().into();
        let on_curve = curve25519_dalek::edwards::CompressedEdwardsY(hash).decompress().is_some();
        (!on_curve).then_some(hash)
    }

    /// Solana's `find_program_address`: the first bump from 255 down that gives an off-curve
    /// address. `None` only if no bump does (probability about 2^-256).
    pub fn find_program_address(seeds: &[&[u8]], program_id: &Address) -> Option<(Address, u8)> {
        (0..=u8::MAX).rev().find_map(|bump| create_program_address(seeds, bump, program_id).map(|a| (a, bump)))
    }

    /// The config account's address and bump.
    pub fn config_address(program_id: &Address) -> (Address, u8) {
        find(&config_seeds(), program_id)
    }

    /// The treasury account's address and bump.
    pub fn treasury_address(program_id: &Address) -> (Address, u8) {
        find(&treasury_seeds(), program_id)
    }

    /// A server account's address and bump.
    pub fn server_address(program_id: &Address, authority: &Address) -> (Address, u8) {
        find(&server_seeds(authority), program_id)
    }

    /// A request account's address and bump.
    pub fn request_address(program_id: &Address, client: &Address, nonce: u64) -> (Address, u8) {
        let nonce_le = nonce.to_le_bytes();
        find(&request_seeds(client, &nonce_le), program_id)
    }

    /// A response account's address and bump.
    pub fn response_address(program_id: &Address, request: &Address) -> (Address, u8) {
        find(&response_seeds(request), program_id)
    }

    /// Whether `client` may open a request with `nonce`: both the request PDA and its response
    /// PDA are valid at bump [`crate::state::REQUEST_BUMP`] (255), so 255 is their canonical
    /// bump. About one nonce in four is.
    pub fn nonce_is_usable(program_id: &Address, client: &Address, nonce: u64) -> bool {
        let nonce_le = nonce.to_le_bytes();
        let bump = crate::state::REQUEST_BUMP;
        create_program_address(&request_seeds(client, &nonce_le), bump, program_id)
            .is_some_and(|request| create_program_address(&response_seeds(&request), bump, program_id).is_some())
    }

    /// The first usable nonce (see [`nonce_is_usable`]) at or after `from`, wrapping around.
    pub fn usable_nonce(program_id: &Address, client: &Address, from: u64) -> u64 {
        let mut nonce = from;
        // Each nonce is usable with probability about 1/4; 2^64 failures in a row cannot happen.
        while !nonce_is_usable(program_id, client, nonce) {
            nonce = nonce.wrapping_add(1);
        }
        nonce
    }

    /// The upgradeable loader's ProgramData address for `program_id` (its upgrade authority is the
    /// only key allowed to initialize the config).
    pub fn program_data_address(program_id: &Address) -> (Address, u8) {
        find(&[program_id.as_slice()], &BPF_LOADER_UPGRADEABLE_ID)
    }

    fn find(seeds: &[&[u8]], program_id: &Address) -> (Address, u8) {
        // An off-curve bump exists for every practical input (failure odds ~2^-256); fall back to
        // the all-zero address rather than panic, which no account can ever sign for.
        find_program_address(seeds, program_id).unwrap_or(([0; 32], 0))
    }
}

#[cfg(feature = "builders")]
pub use derive::*;

/// The BPF upgradeable loader (`BPFLoaderUpgradeab1e11111111111111111111111`).
pub const BPF_LOADER_UPGRADEABLE_ID: Address = [
    2, 168, 246, 145, 78, 136, 161, 176, 226, 16, 21, 62, 247, 99, 174, 43, 0, 194, 185, 61, 22, 193, 36, 210, 192, 83,
    122, 16, 4, 128, 0, 0,
];

#[cfg(all(test, feature = "builders"))]
mod tests {
    use super::*;

    #[test]
    fn loader_id_is_the_upgradeable_loader() {
        // base58 of the constant, computed independently.
        assert_eq!(crate::base58::encode(&BPF_LOADER_UPGRADEABLE_ID), "BPFLoaderUpgradeab1e11111111111111111111111");
        assert_eq!(crate::base58::encode(&PROGRAM_ID), PROGRAM_ID_BASE58);
    }

    #[test]
    fn derivation_is_deterministic_and_off_curve() {
        let (a, bump) = config_address(&PROGRAM_ID);
        assert_eq!(create_program_address(&config_seeds(), bump, &PROGRAM_ID), Some(a));
        let (r1, _) = request_address(&PROGRAM_ID, &[7; 32], 1);
        let (r2, _) = request_address(&PROGRAM_ID, &[7; 32], 2);
        assert_ne!(r1, r2);
    }

    #[test]
    fn usable_nonces_have_canonical_bump_255_for_request_and_response() {
        let client = [7; 32];
        let mut usable = 0;
        for from in 0..64u64 {
            let nonce = usable_nonce(&PROGRAM_ID, &client, from);
            assert!(nonce >= from);
            let (request, bump) = request_address(&PROGRAM_ID, &client, nonce);
            assert_eq!(bump, 255);
            assert_eq!(response_address(&PROGRAM_ID, &request).1, 255);
            usable += u32::from(nonce == from);
        }
        // About a quarter of nonces qualify (binomial, 64 draws: far inside 4..=40).
        assert!((4..=40).contains(&usable), "{usable} of 64");
    }
}
