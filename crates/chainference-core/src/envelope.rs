//! The HPKE envelope (feature `crypto`): sealed prompts, the sealed response stream, client key
//! derivation and comparison commitments.
//!
//! Suite: RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256) (`kem_id` 0x0020), HKDF-SHA256
//! (`kdf_id` 0x0001), ChaCha20-Poly1305 (`aead_id` 0x0003).
//!
//! **Prompt envelope** (stored in the request account):
//! ```text
//! version u8 = 1 | slot_count u8 = n servers + 1 | n+1 × slot | body
//! slot = enc [32] || HPKE-sealed content key [48]
//!        info = "chainference/v1/prompt-key" || request, aad = [slot index]
//! body = ChaCha20-Poly1305(content key, nonce 0, aad = "chainference/v1/prompt" || request ||
//!        version || slot_count || all slots)  → prompt || tag [16]
//! ```
//! Slots follow the request's allow-list order; the last one is the client's own (its per-request
//! prompt key), so the client reads its history from chain data alone. The content key is fresh
//! per request, so the fixed nonce is never reused; the body's aad binds every slot, so no slot
//! can be swapped. Overhead: 2 + 80 per recipient + 16 bytes.
//!
//! **Response stream** (the response account's chunks): one HPKE context from the server to the
//! client's per-request response key, info = `"chainference/v1/response" || request || server`.
//! Chunk `i` is `seal(text, aad = i as u32 LE || final u8)`; the first chunk is prefixed by the
//! 32-byte `enc`. Reordered, altered, dropped or extra chunks fail to open; a stream without its
//! final chunk is reported as truncated. Overhead: 16 bytes per chunk (+32 on the first).
//!
//! **Keys**: the client secret is `HKDF-SHA256(salt = "chainference/v1/client-secret",
//! ikm = wallet signature of [`CLIENT_KEY_MESSAGE`])`; per-request keys are
//! `DeriveKeyPair(HKDF-Expand(secret, label || request))`, so a browser wallet that cannot
//! export its key derives the same secret from a signature.
//!
//! **Comparisons**: `digest = HMAC-SHA256(Expand(secret, "chainference/v1/compare-key"),
//! u32 LE model length || model || prompt)` is equal for two requests with the same model and
//! prompt; `salt = Expand(secret, "chainference/v1/commitment-salt" || request)`; the request
//! carries `commitment = SHA-256("chainference/v1/commitment" || salt || digest)`, which reveals
//! nothing until the client opens it.
//!
//! ```
//! use chainference_core::envelope::{ClientSecret, ServerKeyPair, seal_prompt, open_prompt, RequestKeys};
//! let request = [7u8; 32];
//! let server = ServerKeyPair::from_seed(&[1; 32]);
//! let client = ClientSecret::from_wallet_signature(&[9; 64]);
//! let keys = client.request_keys(&request);
//! let sealed = seal_prompt(&request, &[server.public_key()], &keys.prompt_public_key(), b"hi").unwrap();
//! assert_eq!(&*open_prompt(&sealed, &request, 0, server.secret()).unwrap(), b"hi");
//! assert_eq!(&*keys.open_own_prompt(&sealed, &request).unwrap(), b"hi");
//! ```

use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305 as RawAead, Key, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use hpke::aead::{AeadCtxR, AeadCtxS, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Address;
use crate::error::{Error, Result};

type Kem = X25519HkdfSha256;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// RFC 9180 suite ids of the envelope.
pub const KEM_ID: u16 = 0x0020;
/// HKDF-SHA256.
pub const KDF_ID: u16 = 0x0001;
/// ChaCha20-Poly1305.
pub const AEAD_ID: u16 = 0x0003;

/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Size of one recipient slot: `enc` (32) + sealed content key (32 + 16).
pub const SLOT_LEN: usize = 32 + 32 + 16;
/// AEAD tag size.
pub const TAG_LEN: usize = 16;
/// Size of an X25519 encapsulated key.
pub const ENC_LEN: usize = 32;

/// The fixed message a wallet signs to derive the client secret (wallets cannot export keys).
pub const CLIENT_KEY_MESSAGE: &[u8] =
    b"Chainference client key v1\nSigning this derives the key that encrypts your prompts and answers. Sign it only in a Chainference app.";

const CLIENT_SECRET_SALT: &[u8] = b"chainference/v1/client-secret";
const PROMPT_KEY_LABEL: &[u8] = b"chainference/v1/prompt-slot-key";
const RESPONSE_KEY_LABEL: &[u8] = b"chainference/v1/response-key";
const COMPARE_KEY_LABEL: &[u8] = b"chainference/v1/compare-key";
const SALT_LABEL: &[u8] = b"chainference/v1/commitment-salt";
/// HPKE `info` prefix of the content-key slots (followed by the request address).
pub const PROMPT_KEY_INFO: &[u8] = b"chainference/v1/prompt-key";
/// AEAD aad prefix of the prompt body (followed by the request address and the slots).
pub const PROMPT_BODY_AAD: &[u8] = b"chainference/v1/prompt";
/// HPKE `info` prefix of the response stream (followed by request and server addresses).
pub const RESPONSE_INFO: &[u8] = b"chainference/v1/response";

/// Size of the sealed envelope of a `prompt_len`-byte prompt for `servers` servers.
#[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
pub const fn envelope_len(servers: usize, prompt_len: usize) -> usize {
    2 + (servers + 1) * SLOT_LEN + prompt_len + TAG_LEN
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

fn public_key(bytes: &[u8; 32]) -> Result<PublicKey> {
    PublicKey::from_bytes(bytes).map_err(|_| Error::InvalidPublicKey)
}

/// An RNG over bytes fetched up front, so sealing with OS randomness can fail with an error
/// instead of panicking inside the HPKE crate, and test vectors can fix every random byte.
pub struct FixedRandomness {
    bytes: Zeroizing<Vec<u8>>,
    used: usize,
    exhausted: bool,
}

impl FixedRandomness {
    /// Randomness from these exact bytes (test vectors).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        FixedRandomness { bytes: Zeroizing::new(bytes), used: 0, exhausted: false }
    }

    /// `len` bytes from the operating system.
    #[cfg(feature = "getrandom")]
    pub fn from_os(len: usize) -> Result<Self> {
        let mut bytes = Zeroizing::new(alloc::vec![0u8; len]);
        getrandom::fill(&mut bytes).map_err(|_| Error::RandomnessUnavailable)?;
        Ok(FixedRandomness { bytes, used: 0, exhausted: false })
    }

    fn take(&mut self, dst: &mut [u8]) {
        let end = self.used.saturating_add(dst.len());
        match self.bytes.get(self.used..end) {
            Some(src) => {
                dst.copy_from_slice(src);
                self.used = end;
            }
            None => {
                dst.fill(0);
                self.exhausted = true;
            }
        }
    }

    /// Errors if more bytes were drawn than supplied (the output must then be discarded).
    pub fn check(&self) -> Result<()> {
        if self.exhausted { Err(Error::RandomnessUnavailable) } else { Ok(()) }
    }
}

impl TryRng for FixedRandomness {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> core::result::Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.take(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> core::result::Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.take(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> core::result::Result<(), Self::Error> {
        self.take(dst);
        Ok(())
    }
}

impl TryCryptoRng for FixedRandomness {}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// An X25519 private key for HPKE (a server's long-term key or a client's per-request key).
/// No `Debug`, no `Clone`; zeroized on drop (by the HPKE crate's key type).
pub struct HpkeSecretKey(PrivateKey);

impl HpkeSecretKey {
    /// The raw private key bytes, for storage by the caller (handle with care).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.0.to_bytes());
        out
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        PrivateKey::from_bytes(bytes).map(HpkeSecretKey).map_err(|_| Error::InvalidPublicKey)
    }
}

const SERVER_KEY_SALT: &[u8] = b"chainference/v1/server-key";

/// What a server's wallet signs to derive its HPKE key of `generation`
/// ([`ServerKeyPair::from_wallet_signature`]).
pub fn server_key_message(generation: u32) -> alloc::string::String {
    alloc::format!("Chainference server key, generation {generation}. Signing this reveals nothing and moves no funds.")
}

/// A server's HPKE key pair (published public key, secret kept by the server).
pub struct ServerKeyPair {
    secret: HpkeSecretKey,
    public: [u8; 32],
}

impl ServerKeyPair {
    /// `DeriveKeyPair(seed)` of RFC 9180 (deterministic; the seed must be 32 secret random bytes).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let (sk, pk) = Kem::derive_keypair(seed);
        ServerKeyPair { secret: HpkeSecretKey(sk), public: pk.to_bytes().into() }
    }

    /// A fresh key pair from OS randomness.
    #[cfg(feature = "getrandom")]
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| Error::RandomnessUnavailable)?;
        Ok(Self::from_seed(&seed))
    }

    /// The key pair of `generation` derived from the server wallet's ed25519 signature of
    /// [`server_key_message`]`(generation)`: `DeriveKeyPair(HKDF-Extract(salt =
    /// "chainference/v1/server-key", signature))`. A server can always find its key again from its
    /// wallet alone (a restart needs no key file), and rotating means moving to the next
    /// generation.
    pub fn from_wallet_signature(signature: &[u8; 64]) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(SERVER_KEY_SALT), signature);
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&prk);
        Self::from_seed(&seed)
    }

    /// The public key to publish.
    pub const fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The secret key.
    pub const fn secret(&self) -> &HpkeSecretKey {
        &self.secret
    }
}

/// The client's root secret: every per-request key, salt and digest derives from it.
/// No `Debug`, no `Clone`; zeroized on drop.
pub struct ClientSecret(Zeroizing<[u8; 32]>);

impl ClientSecret {
    /// The secret from a wallet's ed25519 signature of [`CLIENT_KEY_MESSAGE`] (ed25519 is
    /// deterministic, so the same wallet always gets the same secret).
    pub fn from_wallet_signature(signature: &[u8; 64]) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(CLIENT_SECRET_SALT), signature);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&prk);
        ClientSecret(secret)
    }

    /// A secret from raw bytes (stored by the caller).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClientSecret(Zeroizing::new(bytes))
    }

    /// The raw bytes, for storage (handle with care).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0)
    }

    fn expand(&self, label: &[u8], context: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        // The secret is a full-entropy PRK; 32-byte output is always within HKDF's limit.
        if let Ok(hk) = Hkdf::<Sha256>::from_prk(self.0.as_slice()) {
            let _ = hk.expand_multi_info(&[label, context], out.as_mut());
        }
        out
    }

    /// The per-request key pairs (prompt slot and response stream) of `request`.
    pub fn request_keys(&self, request: &Address) -> RequestKeys {
        let prompt_ikm = self.expand(PROMPT_KEY_LABEL, request);
        let response_ikm = self.expand(RESPONSE_KEY_LABEL, request);
        let (prompt_sk, prompt_pk) = Kem::derive_keypair(prompt_ikm.as_slice());
        let (response_sk, response_pk) = Kem::derive_keypair(response_ikm.as_slice());
        RequestKeys {
            prompt: HpkeSecretKey(prompt_sk),
            prompt_public: prompt_pk.to_bytes().into(),
            response: HpkeSecretKey(response_sk),
            response_public: response_pk.to_bytes().into(),
        }
    }

    /// The keyed digest of `(model, prompt)`: equal for equal inputs, unguessable without the
    /// secret.
    pub fn prompt_digest(&self, model: &str, prompt: &[u8]) -> [u8; 32] {
        let key = self.expand(COMPARE_KEY_LABEL, &[]);
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_slice())
            .unwrap_or_else(|_| <Hmac<Sha256> as hmac::KeyInit>::new(&Default::default()));
        let model_len = u32::try_from(model.len()).unwrap_or(u32::MAX);
        mac.update(&model_len.to_le_bytes());
        mac.update(model.as_bytes());
        mac.update(prompt);
        mac.finalize().into_bytes().into()
    }

    /// The commitment salt of `request`.
    pub fn commitment_salt(&self, request: &Address) -> [u8; 32] {
        *self.expand(SALT_LABEL, request)
    }

    /// The commitment a request for `(model, prompt)` at `request` carries.
    pub fn commitment(&self, request: &Address, model: &str, prompt: &[u8]) -> [u8; 32] {
        commitment(&self.commitment_salt(request), &self.prompt_digest(model, prompt))
    }
}

/// `SHA-256("chainference/v1/commitment" || salt || digest)`.
pub fn commitment(salt: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    sha256_parts(&crate::lifecycle::commitment_preimage(salt, digest))
}

/// SHA-256 of concatenated parts (the host's counterpart of the `sol_sha256` syscall).
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A client's key pairs for one request.
pub struct RequestKeys {
    prompt: HpkeSecretKey,
    prompt_public: [u8; 32],
    response: HpkeSecretKey,
    response_public: [u8; 32],
}

impl RequestKeys {
    /// Public key of the client's own prompt slot.
    pub const fn prompt_public_key(&self) -> [u8; 32] {
        self.prompt_public
    }
    /// Public key servers seal the response to (stored in the request).
    pub const fn response_public_key(&self) -> [u8; 32] {
        self.response_public
    }
    /// The response stream's secret key.
    pub const fn response_secret(&self) -> &HpkeSecretKey {
        &self.response
    }
    /// The prompt slot's secret key.
    pub const fn prompt_secret(&self) -> &HpkeSecretKey {
        &self.prompt
    }

    /// Opens the client's own (last) slot of an envelope: the client's history from chain data.
    pub fn open_own_prompt(&self, envelope: &[u8], request: &Address) -> Result<Zeroizing<Vec<u8>>> {
        let count = parse_envelope(envelope)?.slot_count;
        open_prompt(envelope, request, count.saturating_sub(1), &self.prompt)
    }

    /// A response-stream opener for `request` served by `server`.
    pub fn response_opener(&self, request: &Address, server: &Address) -> ResponseOpener {
        ResponseOpener::new(&self.response, request, server)
    }
}

// ---------------------------------------------------------------------------------------------
// Prompt envelope
// ---------------------------------------------------------------------------------------------

/// Bytes of randomness sealing a prompt to `servers` servers draws: the content key, then one
/// ephemeral `ikmE` per slot.
#[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
pub const fn prompt_randomness_len(servers: usize) -> usize {
    32 + 32 * (servers + 1)
}

/// Seals `prompt` for `servers` (their published HPKE keys, in allow-list order) and for the
/// client (`client_prompt_key`, its own slot, last), with OS randomness.
#[cfg(feature = "getrandom")]
pub fn seal_prompt(
    request: &Address,
    servers: &[[u8; 32]],
    client_prompt_key: &[u8; 32],
    prompt: &[u8],
) -> Result<Vec<u8>> {
    let mut rng = FixedRandomness::from_os(prompt_randomness_len(servers.len()))?;
    seal_prompt_with_rng(&mut rng, request, servers, client_prompt_key, prompt)
}

/// [`seal_prompt`] with caller-supplied randomness (deterministic for test vectors).
pub fn seal_prompt_with_rng(
    rng: &mut FixedRandomness,
    request: &Address,
    servers: &[[u8; 32]],
    client_prompt_key: &[u8; 32],
    prompt: &[u8],
) -> Result<Vec<u8>> {
    if servers.is_empty() || servers.len() > crate::state::MAX_ALLOWED_SERVERS {
        return Err(Error::InvalidAllowList);
    }
    let mut content_key = Zeroizing::new([0u8; 32]);
    rng.take(content_key.as_mut());
    let slot_count = u8::try_from(servers.len().saturating_add(1)).map_err(|_| Error::InvalidAllowList)?;
    let mut out = Vec::with_capacity(envelope_len(servers.len(), prompt.len()));
    out.push(ENVELOPE_VERSION);
    out.push(slot_count);
    let info = concat(&[PROMPT_KEY_INFO, request]);
    for (index, key) in servers.iter().chain(core::iter::once(client_prompt_key)).enumerate() {
        let pk = public_key(key)?;
        let aad = [u8::try_from(index).map_err(|_| Error::InvalidAllowList)?];
        let (enc, sealed) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &pk,
            &info,
            content_key.as_slice(),
            &aad,
            rng,
        )
        .map_err(|_| Error::SealFailed)?;
        out.extend_from_slice(&enc.to_bytes());
        out.extend_from_slice(&sealed);
    }
    rng.check()?;
    let aad = concat(&[PROMPT_BODY_AAD, request, &out]);
    let mut body = Vec::with_capacity(prompt.len().saturating_add(TAG_LEN));
    body.extend_from_slice(prompt);
    let cipher = RawAead::new(&Key::from(*content_key));
    let tag = cipher
        .encrypt_inout_detached(&Nonce::default(), &aad, body.as_mut_slice().into())
        .map_err(|_| Error::SealFailed)?;
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The parsed shape of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeView<'a> {
    /// Number of slots (servers + the client's).
    pub slot_count: u8,
    /// Version, count and slots: the part the body's aad covers.
    pub head: &'a [u8],
    /// The sealed body (prompt + tag).
    pub body: &'a [u8],
}

/// Splits an envelope into its parts, checking version and sizes.
pub fn parse_envelope(envelope: &[u8]) -> Result<EnvelopeView<'_>> {
    let (&version, rest) = envelope.split_first().ok_or(Error::MalformedEnvelope)?;
    if version != ENVELOPE_VERSION {
        return Err(Error::MalformedEnvelope);
    }
    let (&slot_count, _) = rest.split_first().ok_or(Error::MalformedEnvelope)?;
    if slot_count < 2 || slot_count as usize > crate::state::MAX_ALLOWED_SERVERS + 1 {
        return Err(Error::MalformedEnvelope);
    }
    let head_len = SLOT_LEN.saturating_mul(slot_count as usize).saturating_add(2);
    let (head, body) = envelope.split_at_checked(head_len).ok_or(Error::MalformedEnvelope)?;
    if body.len() < TAG_LEN {
        return Err(Error::MalformedEnvelope);
    }
    Ok(EnvelopeView { slot_count, head, body })
}

/// Opens slot `slot` of an envelope with its recipient's secret key, then the body.
pub fn open_prompt(envelope: &[u8], request: &Address, slot: u8, secret: &HpkeSecretKey) -> Result<Zeroizing<Vec<u8>>> {
    let view = parse_envelope(envelope)?;
    if slot >= view.slot_count {
        return Err(Error::NoSuchRecipient);
    }
    let start = SLOT_LEN.saturating_mul(slot as usize).saturating_add(2);
    let slot_bytes = view.head.get(start..start.saturating_add(SLOT_LEN)).ok_or(Error::MalformedEnvelope)?;
    let (enc, sealed) = slot_bytes.split_at(ENC_LEN);
    let enc = EncappedKey::from_bytes(enc).map_err(|_| Error::OpenFailed)?;
    let info = concat(&[PROMPT_KEY_INFO, request]);
    let content_key = Zeroizing::new(
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &secret.0,
            &enc,
            &info,
            sealed,
            &[slot],
        )
        .map_err(|_| Error::OpenFailed)?,
    );
    let key: &[u8; 32] = content_key.as_slice().try_into().map_err(|_| Error::OpenFailed)?;
    let aad = concat(&[PROMPT_BODY_AAD, request, view.head]);
    let (ct, tag) = view.body.split_at(view.body.len().saturating_sub(TAG_LEN));
    let mut plain = Zeroizing::new(ct.to_vec());
    let tag = Tag::try_from(tag).map_err(|_| Error::OpenFailed)?;
    RawAead::new(&Key::from(*key))
        .decrypt_inout_detached(&Nonce::default(), &aad, plain.as_mut_slice().into(), &tag)
        .map_err(|_| Error::OpenFailed)?;
    Ok(plain)
}

// ---------------------------------------------------------------------------------------------
// Response stream
// ---------------------------------------------------------------------------------------------

fn chunk_aad(index: u32, is_final: bool) -> [u8; 5] {
    let i = index.to_le_bytes();
    [i[0], i[1], i[2], i[3], u8::from(is_final)]
}

/// The server's side of a response stream: seals chunks in order.
pub struct ResponseSealer {
    ctx: AeadCtxS<ChaCha20Poly1305, HkdfSha256, Kem>,
    enc: [u8; 32],
    index: u32,
    finished: bool,
}

/// Bytes of randomness a response stream draws (one `ikmE`).
pub const RESPONSE_RANDOMNESS_LEN: usize = 32;

impl ResponseSealer {
    /// Starts a stream to the client's response key of `request`, from `server`, with OS
    /// randomness.
    #[cfg(feature = "getrandom")]
    pub fn new(client_response_key: &[u8; 32], request: &Address, server: &Address) -> Result<Self> {
        let mut rng = FixedRandomness::from_os(RESPONSE_RANDOMNESS_LEN)?;
        Self::with_rng(&mut rng, client_response_key, request, server)
    }

    /// [`ResponseSealer::new`] with caller-supplied randomness.
    pub fn with_rng(
        rng: &mut FixedRandomness,
        client_response_key: &[u8; 32],
        request: &Address,
        server: &Address,
    ) -> Result<Self> {
        let pk = public_key(client_response_key)?;
        let info = concat(&[RESPONSE_INFO, request, server]);
        let (enc, ctx) =
            hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(&OpModeS::Base, &pk, &info, rng)
                .map_err(|_| Error::SealFailed)?;
        rng.check()?;
        Ok(ResponseSealer { ctx, enc: enc.to_bytes().into(), index: 0, finished: false })
    }

    /// Seals the next chunk (`is_final` for the last one). The first chunk carries `enc` in front.
    pub fn seal_chunk(&mut self, text: &[u8], is_final: bool) -> Result<Vec<u8>> {
        if self.finished {
            return Err(Error::StreamFinished);
        }
        let sealed = self.ctx.seal(text, &chunk_aad(self.index, is_final)).map_err(|_| Error::SealFailed)?;
        let out = if self.index == 0 { concat(&[&self.enc, &sealed]) } else { sealed };
        self.index = self.index.checked_add(1).ok_or(Error::SealFailed)?;
        self.finished = is_final;
        Ok(out)
    }

    /// Size of a sealed chunk of `text_len` bytes at position `index`.
    #[allow(clippy::arithmetic_side_effects)] // sizes of bounded fields; callers check the bounds
    pub const fn sealed_len(index: u32, text_len: usize) -> usize {
        text_len + TAG_LEN + if index == 0 { ENC_LEN } else { 0 }
    }

    /// Chunks sealed so far.
    pub const fn chunks_sealed(&self) -> u32 {
        self.index
    }
}

/// The client's side of a response stream: opens chunks in order. Holds its own copy of the
/// response secret (zeroized on drop), so it can live apart from the keys that made it.
pub struct ResponseOpener {
    secret: HpkeSecretKey,
    info: Vec<u8>,
    ctx: Option<AeadCtxR<ChaCha20Poly1305, HkdfSha256, Kem>>,
    index: u32,
    finished: bool,
}

impl ResponseOpener {
    /// An opener for `request` served by `server`, with the client's response secret key.
    pub fn new(secret: &HpkeSecretKey, request: &Address, server: &Address) -> Self {
        ResponseOpener {
            secret: HpkeSecretKey(secret.0.clone()),
            info: concat(&[RESPONSE_INFO, request, server]),
            ctx: None,
            index: 0,
            finished: false,
        }
    }

    /// Opens the next chunk: its text and whether it is the final one. A chunk out of order,
    /// altered, or after the final one is an error and leaves the opener unusable for that chunk.
    pub fn open_chunk(&mut self, chunk: &[u8]) -> Result<(Zeroizing<Vec<u8>>, bool)> {
        if self.finished {
            return Err(Error::StreamFinished);
        }
        // The context is kept only once the first chunk opened, so a bad first chunk can be
        // retried with the real one.
        let (mut ctx, body) = match self.ctx.take() {
            Some(ctx) => (ctx, chunk),
            None => {
                let (enc, rest) = chunk.split_at_checked(ENC_LEN).ok_or(Error::OpenFailed)?;
                let enc = EncappedKey::from_bytes(enc).map_err(|_| Error::OpenFailed)?;
                let ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
                    &OpModeR::Base,
                    &self.secret.0,
                    &enc,
                    &self.info,
                )
                .map_err(|_| Error::OpenFailed)?;
                (ctx, rest)
            }
        };
        // The final flag is authenticated: try the common case (not final) first.
        let mut opened = None;
        for is_final in [false, true] {
            if let Ok(text) = ctx.open(body, &chunk_aad(self.index, is_final)) {
                opened = Some((Zeroizing::new(text), is_final));
                break;
            }
        }
        match opened {
            Some((text, is_final)) => {
                self.ctx = Some(ctx);
                self.index = self.index.checked_add(1).ok_or(Error::OpenFailed)?;
                self.finished = is_final;
                Ok((text, is_final))
            }
            None => {
                // A failed open does not advance the sequence; keep an established context.
                if self.index > 0 {
                    self.ctx = Some(ctx);
                }
                Err(Error::OpenFailed)
            }
        }
    }

    /// Whether the final chunk was opened.
    pub const fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the stream: [`Error::StreamTruncated`] unless the final chunk was opened.
    pub fn finish(&self) -> Result<()> {
        if self.finished { Ok(()) } else { Err(Error::StreamTruncated) }
    }

    /// Opens a whole stream (e.g. a response account's chunks) into its text.
    pub fn open_all<'c>(mut self, chunks: impl IntoIterator<Item = &'c [u8]>) -> Result<Zeroizing<Vec<u8>>> {
        let mut text = Zeroizing::new(Vec::new());
        for chunk in chunks {
            let (part, _) = self.open_chunk(chunk)?;
            text.extend_from_slice(&part);
        }
        self.finish()?;
        Ok(text)
    }
}
