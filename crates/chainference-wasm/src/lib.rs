//! # chainference-wasm
//!
//! wasm-bindgen bindings of [`chainference_core`] for web apps and browser wallets: build every
//! client-side instruction as a plain object a wallet can put in a transaction, derive the
//! client's keys from a wallet signature, seal prompts and open streamed answers, decode accounts,
//! and compute prices. Thin wrappers only: every rule lives in core.
//!
//! Errors are JS `Error`s with `code` (core's stable number) and `name` (the variant's name).
//! Secrets stay inside wasm memory, in objects that zeroize on `free()`; they leave only when
//! asked for (`exportSecret`).
//!
//! ```
//! // The calls JS makes, from Rust (in JS: `ClientKeys.fromWalletSignature(sig).requestKeys(request)`):
//! use chainference_wasm::ClientKeys;
//! let keys = ClientKeys::from_wallet_signature(&[7u8; 64]).unwrap();
//! assert!(keys.request_keys(&[1u8; 32]).is_ok());
//! ```
//!
//! Instruction objects carry both shapes wallets take: `programId` + `keys: [{pubkey, isSigner,
//! isWritable}]` + `data` for `@solana/web3.js`'s `TransactionInstruction`, and `programAddress`
//! + `accounts: [{address, role}]` + `data` for `@solana/kit`.

use chainference_core::builders::{self, BuiltInstruction, CompareSide, Program, RequestRefs};
use chainference_core::envelope::{self, ResponseOpener as CoreOpener};
use chainference_core::instruction::OpenRequestArgs;
use chainference_core::model::{self, ModelId};
use chainference_core::pricing::{self, ServerStats};
use chainference_core::prompt;
use chainference_core::state::{self, DeclineReasons, RequestAccount, ResponseAccount, ServerAccount};
use chainference_core::{Error, base58, pda};
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

// ---------------------------------------------------------------------------------------------
// errors and conversions
// ---------------------------------------------------------------------------------------------

/// A core error as a JS `Error` with `code` and `name`.
pub fn js_error(e: Error) -> JsValue {
    let err = js_sys::Error::new(&format!("{e} (code {})", e.code()));
    err.set_name(e.name());
    let _ = Reflect::set(&err, &"code".into(), &JsValue::from(e.code()));
    err.into()
}

/// A core error as a JS `Error`, with a hint after the message.
fn js_error_with(e: Error, hint: &str) -> JsValue {
    let err = js_sys::Error::new(&format!("{e} (code {}): {hint}", e.code()));
    err.set_name(e.name());
    let _ = Reflect::set(&err, &"code".into(), &JsValue::from(e.code()));
    err.into()
}

type JsResult<T> = Result<T, JsValue>;

fn fail<T>(e: Error) -> JsResult<T> {
    Err(js_error(e))
}

fn address(bytes: &[u8]) -> JsResult<[u8; 32]> {
    bytes.try_into().map_err(|_| js_error(Error::LengthOutOfRange))
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

fn bytes(b: &[u8]) -> Uint8Array {
    Uint8Array::from(b)
}

fn b58(a: &[u8; 32]) -> String {
    base58::encode(a)
}

fn u64_big(v: u64) -> JsValue {
    js_sys::BigInt::from(v).into()
}

fn get(obj: &JsValue, key: &str) -> JsResult<JsValue> {
    let v = Reflect::get(obj, &key.into())?;
    if v.is_undefined() {
        return Err(js_sys::Error::new(&format!("missing field `{key}`")).into());
    }
    Ok(v)
}

fn get_bytes(obj: &JsValue, key: &str) -> JsResult<Vec<u8>> {
    let v = get(obj, key)?;
    if !v.is_instance_of::<Uint8Array>() {
        return Err(js_sys::TypeError::new(&format!("`{key}` must be a Uint8Array")).into());
    }
    Ok(Uint8Array::from(v).to_vec())
}

fn get_address(obj: &JsValue, key: &str) -> JsResult<[u8; 32]> {
    address(&get_bytes(obj, key)?)
}

fn get_u64(obj: &JsValue, key: &str, default: Option<u64>) -> JsResult<u64> {
    let v = Reflect::get(obj, &key.into())?;
    if v.is_undefined() {
        return default.ok_or_else(|| js_sys::Error::new(&format!("missing field `{key}`")).into());
    }
    // A JS number is accepted when it is a safe non-negative integer; larger values need a BigInt.
    if let Some(n) = v.as_f64()
        && n >= 0.0
        && n.fract() == 0.0
        && n <= 9_007_199_254_740_991.0
    {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Ok(n as u64);
    }
    let not_u64 =
        || -> JsValue { js_sys::TypeError::new(&format!("`{key}` must be a non-negative integer below 2^64")).into() };
    let big = v.dyn_into::<js_sys::BigInt>().map_err(|_| not_u64())?;
    u64::try_from(big).map_err(|_| not_u64())
}

fn get_u32(obj: &JsValue, key: &str, default: Option<u32>) -> JsResult<u32> {
    let v = get_u64(obj, key, default.map(u64::from))?;
    u32::try_from(v).map_err(|_| js_error(Error::LengthOutOfRange))
}

fn get_str(obj: &JsValue, key: &str) -> JsResult<String> {
    get(obj, key)?.as_string().ok_or_else(|| js_sys::TypeError::new(&format!("`{key}` must be a string")).into())
}

fn address_list(v: &JsValue) -> JsResult<Vec<[u8; 32]>> {
    if !Array::is_array(v) {
        return Err(js_sys::TypeError::new("expected an array of 32-byte Uint8Arrays").into());
    }
    Array::from(v)
        .iter()
        .map(|item| {
            if !item.is_instance_of::<Uint8Array>() {
                return Err(js_sys::TypeError::new("expected an array of 32-byte Uint8Arrays").into());
            }
            address(&Uint8Array::from(item).to_vec())
        })
        .collect()
}

/// A built instruction as the object web3.js and @solana/kit both take.
fn instruction(ix: &BuiltInstruction) -> JsValue {
    let obj = Object::new();
    let program = b58(&ix.program_id);
    set(&obj, "programId", program.clone());
    set(&obj, "programAddress", program);
    let keys = Array::new();
    let accounts = Array::new();
    for m in &ix.accounts {
        let k = Object::new();
        set(&k, "pubkey", b58(&m.pubkey));
        set(&k, "isSigner", m.is_signer);
        set(&k, "isWritable", m.is_writable);
        keys.push(&k);
        let a = Object::new();
        set(&a, "address", b58(&m.pubkey));
        // @solana/kit AccountRole: READONLY 0, WRITABLE 1, READONLY_SIGNER 2, WRITABLE_SIGNER 3.
        set(&a, "role", u8::from(m.is_writable) | (u8::from(m.is_signer) << 1));
        accounts.push(&a);
    }
    set(&obj, "keys", keys);
    set(&obj, "accounts", accounts);
    set(&obj, "data", bytes(&ix.data));
    obj.into()
}

fn program(program_id: Option<Vec<u8>>) -> JsResult<Program> {
    match program_id {
        Some(id) => Ok(Program::new(address(&id)?)),
        None => Ok(Program::default()),
    }
}

// ---------------------------------------------------------------------------------------------
// addresses
// ---------------------------------------------------------------------------------------------

/// The deployment's addresses (`programId` optional: core's default id).
#[wasm_bindgen(js_name = programAddresses)]
pub fn program_addresses(program_id: Option<Vec<u8>>) -> JsResult<JsValue> {
    let p = program(program_id)?;
    let obj = Object::new();
    set(&obj, "programId", bytes(&p.id));
    set(&obj, "config", bytes(&p.config));
    set(&obj, "treasury", bytes(&p.treasury));
    Ok(obj.into())
}

/// The request PDA of `client`'s `nonce`.
#[wasm_bindgen(js_name = requestAddress)]
pub fn request_address(client: &[u8], nonce: u64, program_id: Option<Vec<u8>>) -> JsResult<Uint8Array> {
    Ok(bytes(&program(program_id)?.request(&address(client)?, nonce).0))
}

/// The first nonce at or after `from` that `client` may open a request with: its request and
/// response PDAs are both canonical at bump 255, which v2 requires (about one nonce in four).
#[wasm_bindgen(js_name = usableNonce)]
pub fn usable_nonce(client: &[u8], from: u64, program_id: Option<Vec<u8>>) -> JsResult<u64> {
    Ok(program(program_id)?.usable_nonce(&address(client)?, from))
}

/// The response PDA of `request`.
#[wasm_bindgen(js_name = responseAddress)]
pub fn response_address(request: &[u8], program_id: Option<Vec<u8>>) -> JsResult<Uint8Array> {
    Ok(bytes(&program(program_id)?.response(&address(request)?).0))
}

/// The server PDA of `authority`.
#[wasm_bindgen(js_name = serverAddress)]
pub fn server_address(authority: &[u8], program_id: Option<Vec<u8>>) -> JsResult<Uint8Array> {
    Ok(bytes(&program(program_id)?.server(&address(authority)?)))
}

/// Base58 of 32 bytes.
#[wasm_bindgen(js_name = toBase58)]
pub fn to_base58(address_bytes: &[u8]) -> JsResult<String> {
    Ok(b58(&address(address_bytes)?))
}

/// 32 bytes from base58.
#[wasm_bindgen(js_name = fromBase58)]
pub fn from_base58(text: &str) -> JsResult<Uint8Array> {
    Ok(bytes(&base58::decode_address(text).map_err(js_error)?))
}

// ---------------------------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------------------------

/// The message a wallet signs (ed25519, `signMessage`) to derive the client's keys.
#[wasm_bindgen(js_name = clientKeyMessage)]
pub fn client_key_message() -> Uint8Array {
    bytes(envelope::CLIENT_KEY_MESSAGE)
}

/// The client's root secret, kept in wasm memory (zeroized when freed).
#[wasm_bindgen]
pub struct ClientKeys {
    secret: envelope::ClientSecret,
}

#[wasm_bindgen]
impl ClientKeys {
    /// From the wallet's 64-byte signature of [`client_key_message`].
    #[wasm_bindgen(js_name = fromWalletSignature)]
    pub fn from_wallet_signature(signature: &[u8]) -> JsResult<ClientKeys> {
        let sig: &[u8; 64] = signature.try_into().map_err(|_| js_error(Error::LengthOutOfRange))?;
        Ok(ClientKeys { secret: envelope::ClientSecret::from_wallet_signature(sig) })
    }

    /// From a secret exported earlier with [`ClientKeys::export_secret`].
    #[wasm_bindgen(js_name = fromSecret)]
    pub fn from_secret(secret: &[u8]) -> JsResult<ClientKeys> {
        Ok(ClientKeys { secret: envelope::ClientSecret::from_bytes(address(secret)?) })
    }

    /// The raw secret, only when explicitly asked for (store it encrypted).
    #[wasm_bindgen(js_name = exportSecret)]
    pub fn export_secret(&self) -> Uint8Array {
        bytes(&*self.secret.to_bytes())
    }

    /// The key pairs of one request.
    #[wasm_bindgen(js_name = requestKeys)]
    pub fn request_keys(&self, request: &[u8]) -> JsResult<RequestKeys> {
        let request = address(request)?;
        Ok(RequestKeys { keys: self.secret.request_keys(&request), request })
    }

    /// The keyed digest of `(model, prompt)` used by comparisons.
    #[wasm_bindgen(js_name = promptDigest)]
    pub fn prompt_digest(&self, model: &str, prompt: &[u8]) -> Uint8Array {
        bytes(&self.secret.prompt_digest(model, prompt))
    }

    /// The commitment salt of `request`.
    #[wasm_bindgen(js_name = commitmentSalt)]
    pub fn commitment_salt(&self, request: &[u8]) -> JsResult<Uint8Array> {
        Ok(bytes(&self.secret.commitment_salt(&address(request)?)))
    }

    /// The commitment a request for `(model, prompt)` at `request` carries.
    pub fn commitment(&self, request: &[u8], model: &str, prompt: &[u8]) -> JsResult<Uint8Array> {
        Ok(bytes(&self.secret.commitment(&address(request)?, model, prompt)))
    }
}

/// A client's key pairs for one request (secrets stay inside).
#[wasm_bindgen]
pub struct RequestKeys {
    keys: envelope::RequestKeys,
    request: [u8; 32],
}

#[wasm_bindgen]
impl RequestKeys {
    /// Public key of the client's own prompt slot.
    #[wasm_bindgen(getter, js_name = promptPublicKey)]
    pub fn prompt_public_key(&self) -> Uint8Array {
        bytes(&self.keys.prompt_public_key())
    }

    /// Public key the response is sealed to (goes into OpenRequest).
    #[wasm_bindgen(getter, js_name = responsePublicKey)]
    pub fn response_public_key(&self) -> Uint8Array {
        bytes(&self.keys.response_public_key())
    }

    /// Opens the client's own slot of a prompt envelope (history from chain data).
    #[wasm_bindgen(js_name = openOwnPrompt)]
    pub fn open_own_prompt(&self, envelope: &[u8]) -> JsResult<Uint8Array> {
        Ok(bytes(&self.keys.open_own_prompt(envelope, &self.request).map_err(js_error)?))
    }

    /// An opener for the response stream `server` sends.
    #[wasm_bindgen(js_name = responseOpener)]
    pub fn response_opener(&self, server: &[u8]) -> JsResult<ResponseOpener> {
        Ok(ResponseOpener { inner: self.keys.response_opener(&self.request, &address(server)?) })
    }
}

/// Opens a response stream's chunks in order.
#[wasm_bindgen]
pub struct ResponseOpener {
    inner: CoreOpener,
}

#[wasm_bindgen]
impl ResponseOpener {
    /// Opens the next chunk: `{ text: Uint8Array, isFinal: boolean }`. A chunk out of order,
    /// altered, or after the final one throws; the opener still accepts the right next chunk.
    #[wasm_bindgen(js_name = openChunk)]
    pub fn open_chunk(&mut self, chunk: &[u8]) -> JsResult<JsValue> {
        let (text, is_final) = self.inner.open_chunk(chunk).map_err(js_error)?;
        let obj = Object::new();
        set(&obj, "text", bytes(&text));
        set(&obj, "isFinal", is_final);
        Ok(obj.into())
    }

    /// Whether the final chunk was opened.
    #[wasm_bindgen(getter, js_name = isFinished)]
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Throws `StreamTruncated` unless the final chunk was opened.
    pub fn finish(&self) -> JsResult<()> {
        self.inner.finish().map_err(js_error)
    }
}

/// A server's HPKE key pair (for server-side JS and tests).
#[wasm_bindgen]
pub struct ServerKeys {
    pair: envelope::ServerKeyPair,
}

#[wasm_bindgen]
impl ServerKeys {
    /// `DeriveKeyPair(seed)` (32 secret random bytes).
    #[wasm_bindgen(js_name = fromSeed)]
    pub fn from_seed(seed: &[u8]) -> JsResult<ServerKeys> {
        Ok(ServerKeys { pair: envelope::ServerKeyPair::from_seed(&address(seed)?) })
    }

    /// A fresh key pair from the platform's randomness.
    pub fn generate() -> JsResult<ServerKeys> {
        Ok(ServerKeys { pair: envelope::ServerKeyPair::generate().map_err(js_error)? })
    }

    /// The public key to publish.
    #[wasm_bindgen(getter, js_name = publicKey)]
    pub fn public_key(&self) -> Uint8Array {
        bytes(&self.pair.public_key())
    }

    /// Opens slot `slot` of a prompt envelope.
    #[wasm_bindgen(js_name = openPrompt)]
    pub fn open_prompt(&self, envelope: &[u8], request: &[u8], slot: u8) -> JsResult<Uint8Array> {
        let opened = envelope::open_prompt(envelope, &address(request)?, slot, self.pair.secret()).map_err(js_error)?;
        Ok(bytes(&opened))
    }
}

/// Seals `prompt` to `servers` (their HPKE keys, allow-list order) and to the client's own slot,
/// with the platform's randomness (`crypto.getRandomValues`).
#[wasm_bindgen(js_name = sealPrompt)]
pub fn seal_prompt(request: &[u8], servers: JsValue, client_prompt_key: &[u8], prompt: &[u8]) -> JsResult<Uint8Array> {
    let servers = address_list(&servers)?;
    let sealed =
        envelope::seal_prompt(&address(request)?, &servers, &address(client_prompt_key)?, prompt).map_err(js_error)?;
    Ok(bytes(&sealed))
}

/// The prompt payload a server reads (what [`seal_prompt`] seals): `{ messages: [{ role:
/// 'system' | 'developer' | 'user' | 'assistant', content }], temperature? (0 = greedy),
/// seed?, maxCompletionTokens?, stop?: string[] (up to 4, 1–64 bytes each) }` to its bytes.
#[wasm_bindgen(js_name = encodePrompt)]
pub fn encode_prompt(params: JsValue) -> JsResult<Uint8Array> {
    let list = get(&params, "messages")?;
    if !Array::is_array(&list) {
        return Err(js_sys::TypeError::new("`messages` must be an array of { role, content }").into());
    }
    let mut messages = Vec::new();
    for (i, message) in Array::from(&list).iter().enumerate() {
        let role_name = get_str(&message, "role")?;
        let role = prompt::Role::parse(&role_name).ok_or_else(|| -> JsValue {
            js_sys::TypeError::new(&format!("messages[{i}].role: unknown role {role_name:?}")).into()
        })?;
        messages.push(prompt::ChatMessage::new(role, get_str(&message, "content")?));
    }
    let mut payload = prompt::PromptPayload::chat(messages);
    let temperature = Reflect::get(&params, &"temperature".into())?;
    if !temperature.is_undefined() {
        let t = temperature.as_f64().filter(|t| (0.0..=65.0).contains(t)).ok_or_else(|| -> JsValue {
            js_sys::TypeError::new("`temperature` must be a number from 0 to 65").into()
        })?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..=65,000
        let milli = (t * 1000.0).round() as u16;
        payload.temperature_milli = milli;
    }
    payload.seed = get_u64(&params, "seed", Some(0))?;
    payload.max_completion_tokens = get_u32(&params, "maxCompletionTokens", Some(0))?;
    let stop = Reflect::get(&params, &"stop".into())?;
    if let Some(one) = stop.as_string() {
        payload.stop.push(one);
    } else if !stop.is_undefined() && !stop.is_null() {
        if !Array::is_array(&stop) {
            return Err(js_sys::TypeError::new("`stop` must be a string or an array of strings").into());
        }
        for item in Array::from(&stop).iter() {
            let text = item
                .as_string()
                .ok_or_else(|| -> JsValue { js_sys::TypeError::new("`stop` must hold strings").into() })?;
            payload.stop.push(text);
        }
    }
    Ok(bytes(&payload.encode().map_err(js_error)?))
}

/// Decodes a prompt payload (a server's view, or the client's own prompt from
/// `openOwnPrompt`): `{ messages: [{ role, content }], temperature, seed, maxCompletionTokens,
/// stop }`.
#[wasm_bindgen(js_name = decodePrompt)]
pub fn decode_prompt(payload: &[u8]) -> JsResult<JsValue> {
    let p = prompt::PromptPayload::decode(payload).map_err(js_error)?;
    let o = Object::new();
    let messages = Array::new();
    for m in &p.messages {
        let x = Object::new();
        set(&x, "role", m.role.as_str());
        set(&x, "content", m.content.as_str());
        messages.push(&x);
    }
    set(&o, "messages", messages);
    set(&o, "temperature", f64::from(p.temperature_milli) / 1000.0);
    set(&o, "seed", u64_big(p.seed));
    set(&o, "maxCompletionTokens", p.max_completion_tokens);
    let stop = Array::new();
    for s in &p.stop {
        stop.push(&s.as_str().into());
    }
    set(&o, "stop", stop);
    Ok(o.into())
}

/// Size of the envelope of a `prompt_len`-byte prompt for `servers` servers.
#[wasm_bindgen(js_name = envelopeLength)]
pub fn envelope_length(servers: usize, prompt_len: usize) -> usize {
    envelope::envelope_len(servers, prompt_len)
}

/// `SHA-256("chainference/v1/commitment" || salt || digest)`.
#[wasm_bindgen(js_name = commitmentOf)]
pub fn commitment_of(salt: &[u8], digest: &[u8]) -> JsResult<Uint8Array> {
    Ok(bytes(&envelope::commitment(&address(salt)?, &address(digest)?)))
}

// ---------------------------------------------------------------------------------------------
// instructions
// ---------------------------------------------------------------------------------------------

/// The instructions that open a request: OpenRequest with as much of the envelope as fits one
/// transaction, then WritePrompt for the rest (each its own transaction). `params`: `{ client,
/// nonce, stake, maxPricePerMtok, maxTokens, timeout?, minCompleted?, minSuccessBps?, model,
/// allowed: Uint8Array[], responseKey, commitment, envelope, firstChunk?, chunk?, programId? }`.
/// `nonce` must be usable ([`usable_nonce`]); `maxPricePerMtok` is the highest price a server
/// may lock at (what the allowed servers quoted: the dearest of their prices)
/// (`firstChunk`/`chunk` override the sizes; by default each transaction keeps
/// [`builders::TRANSACTION_RESERVE`] bytes free for the wallet's own instructions, as the Rust
/// client does).
#[wasm_bindgen(js_name = openRequestInstructions)]
pub fn open_request_instructions(params: JsValue) -> JsResult<Array> {
    let p = program(Reflect::get(&params, &"programId".into())?.dyn_into::<Uint8Array>().ok().map(|a| a.to_vec()))?;
    let client = get_address(&params, "client")?;
    let nonce = get_u64(&params, "nonce", None)?;
    let model = get_str(&params, "model")?;
    let allowed = address_list(&get(&params, "allowed")?)?;
    let envelope_bytes = get_bytes(&params, "envelope")?;
    let response_key = get_address(&params, "responseKey")?;
    let commitment = get_address(&params, "commitment")?;
    let default = builders::PromptUpload::with_reserve(
        &envelope_bytes,
        model.len(),
        allowed.len(),
        builders::TRANSACTION_RESERVE,
    );
    let first = usize::try_from(get_u64(&params, "firstChunk", Some(default.first_chunk as u64))?)
        .map_err(|_| js_error(Error::LengthOutOfRange))?
        .min(envelope_bytes.len());
    let chunk = usize::try_from(get_u64(&params, "chunk", Some(default.chunk as u64))?)
        .map_err(|_| js_error(Error::LengthOutOfRange))?
        .max(1);
    if !pda::nonce_is_usable(&p.id, &client, nonce) {
        // The program would refuse it; say how to pick one.
        return Err(js_error_with(
            Error::NonCanonicalBump,
            "nonce not usable: pick one with usableNonce(client, from)",
        ));
    }
    let (_, bump) = p.request(&client, nonce);
    let args = OpenRequestArgs {
        nonce,
        bump,
        stake: get_u64(&params, "stake", None)?,
        max_price_per_mtok: get_u64(&params, "maxPricePerMtok", None)?,
        max_tokens: get_u32(&params, "maxTokens", None)?,
        timeout: get_u32(&params, "timeout", Some(0))?,
        min_completed: get_u64(&params, "minCompleted", Some(0))?,
        min_success_bps: u16::try_from(get_u64(&params, "minSuccessBps", Some(0))?)
            .map_err(|_| js_error(Error::InvalidFilter))?,
        response_key: &response_key,
        commitment: &commitment,
        model: &model,
        allowed: &allowed,
        prompt_len: 0,
        prompt_chunk: &[],
    };
    // Validate as the program will, so a bad request fails here and not after a fee.
    model::check_canonical_model(&model).map_err(js_error)?;
    chainference_core::lifecycle::check_allow_list(&allowed).map_err(js_error)?;
    let upload = builders::PromptUpload { first_chunk: first, chunk, ..default };
    let out = Array::new();
    for ix in builders::open_request_upload(&p, &client, &args, &upload).map_err(js_error)? {
        out.push(&instruction(&ix));
    }
    Ok(out)
}

/// CancelRequest.
#[wasm_bindgen(js_name = cancelRequestInstruction)]
pub fn cancel_request_instruction(client: &[u8], request: &[u8], program_id: Option<Vec<u8>>) -> JsResult<JsValue> {
    Ok(instruction(&builders::cancel_request(&program(program_id)?, &address(client)?, &address(request)?)))
}

/// DeclineRequest: a server on the request's allow-list declines it with `reasons` (the
/// `DeclineReasons` bits: 1 prompt too large, 2 budget too small, 4 too little time, 8 client
/// not served, 16 unreadable, 32 model refused, 64 terms not met, 128 model not served).
#[wasm_bindgen(js_name = declineRequestInstruction)]
pub fn decline_request_instruction(
    authority: &[u8],
    request: &[u8],
    reasons: u8,
    program_id: Option<Vec<u8>>,
) -> JsResult<JsValue> {
    if reasons == 0 {
        return fail(Error::NoDeclineReason);
    }
    let p = program(program_id)?;
    Ok(instruction(&builders::decline_request(&p, &address(authority)?, &address(request)?, DeclineReasons(reasons))))
}

/// ReclaimRequest (`lockedBy`: the locking server's authority, when the request is Locked).
#[wasm_bindgen(js_name = reclaimRequestInstruction)]
pub fn reclaim_request_instruction(
    request: &[u8],
    client: &[u8],
    locked_by: Option<Vec<u8>>,
    program_id: Option<Vec<u8>>,
) -> JsResult<JsValue> {
    let locked_by = locked_by.map(|l| address(&l)).transpose()?;
    let p = program(program_id)?;
    Ok(instruction(&builders::reclaim_request(&p, &address(request)?, &address(client)?, locked_by.as_ref())))
}

/// FlagResponse (`servedBy`: the authority that completed it): a flag marks the server's
/// reputation; with `refund` it is a dispute instead, taking part of the server's held share
/// back and leaving its reputation alone.
#[wasm_bindgen(js_name = flagResponseInstruction)]
pub fn flag_response_instruction(
    client: &[u8],
    request: &[u8],
    served_by: &[u8],
    program_id: Option<Vec<u8>>,
    refund: Option<bool>,
) -> JsResult<JsValue> {
    let p = program(program_id)?;
    let build = if refund.unwrap_or(false) { builders::dispute_response } else { builders::flag_response };
    Ok(instruction(&build(&p, &address(client)?, &address(request)?, &address(served_by)?)))
}

/// CompareResponses. `a` and `b`: `{ request, servedBy, salt }`; `preferred`: 0 for a, 1 for b.
#[wasm_bindgen(js_name = compareResponsesInstruction)]
pub fn compare_responses_instruction(
    client: &[u8],
    a: JsValue,
    b: JsValue,
    digest: &[u8],
    preferred: u8,
) -> JsResult<JsValue> {
    let side = |v: &JsValue| -> JsResult<([u8; 32], [u8; 32], [u8; 32])> {
        Ok((get_address(v, "request")?, get_address(v, "servedBy")?, get_address(v, "salt")?))
    };
    let ((ra, sa, salt_a), (rb, sb, salt_b)) = (side(&a)?, side(&b)?);
    if preferred > 1 {
        return fail(Error::InvalidPreference);
    }
    let p = Program::default();
    let ix = builders::compare_responses(
        &p,
        &address(client)?,
        [
            CompareSide { request: &ra, served_by: &sa, salt: &salt_a },
            CompareSide { request: &rb, served_by: &sb, salt: &salt_b },
        ],
        &address(digest)?,
        preferred,
    );
    Ok(instruction(&ix))
}

/// CloseRequest (`servedBy`: the authority of the server that completed the request, which
/// receives its held share and its response's rent; the client when there is none).
#[wasm_bindgen(js_name = closeRequestInstruction)]
pub fn close_request_instruction(
    caller: &[u8],
    request: &[u8],
    client: &[u8],
    served_by: &[u8],
    program_id: Option<Vec<u8>>,
) -> JsResult<JsValue> {
    let p = program(program_id)?;
    let request = address(request)?;
    let refs = RequestRefs { request, response: p.response(&request).0, client: address(client)? };
    Ok(instruction(&builders::close_request(&p, &address(caller)?, &refs, &address(served_by)?)))
}

/// ClaimPayment: the serving server takes its held share and its response's rent once the flag
/// window has closed.
#[wasm_bindgen(js_name = claimPaymentInstruction)]
pub fn claim_payment_instruction(authority: &[u8], request: &[u8], program_id: Option<Vec<u8>>) -> JsResult<JsValue> {
    let p = program(program_id)?;
    let request = address(request)?;
    Ok(instruction(&builders::claim_payment(&p, &address(authority)?, &request, &p.response(&request).0)))
}

// ---------------------------------------------------------------------------------------------
// accounts
// ---------------------------------------------------------------------------------------------

fn stats_object(s: &ServerStats) -> Object {
    let o = Object::new();
    set(&o, "completed", u64_big(s.completed));
    set(&o, "counted", u64_big(s.counted));
    set(&o, "fees", u64_big(s.fees));
    set(&o, "flagged", u64_big(s.flagged));
    set(&o, "timedOut", u64_big(s.timed_out));
    set(&o, "released", u64_big(s.released));
    set(&o, "comparisons", u64_big(s.comparisons));
    set(&o, "preferred", u64_big(s.preferred));
    set(&o, "successBps", s.success_bps());
    set(&o, "rankingBps", s.ranking_bps());
    set(&o, "preferenceBps", s.preference_bps().map_or(JsValue::NULL, JsValue::from));
    o
}

/// Decodes a Config account.
#[wasm_bindgen(js_name = decodeConfig)]
pub fn decode_config(data: &[u8]) -> JsResult<JsValue> {
    let c = state::Config::decode(data).map_err(js_error)?;
    let o = Object::new();
    set(&o, "admin", b58(&c.admin));
    set(&o, "treasury", b58(&c.treasury));
    set(&o, "feeBps", c.params.fee_bps);
    set(&o, "defaultTimeout", c.params.default_timeout);
    set(&o, "minTimeout", c.params.min_timeout);
    set(&o, "maxTimeout", c.params.max_timeout);
    set(&o, "flagWindow", c.params.flag_window);
    set(&o, "retention", c.params.retention);
    set(&o, "lockWindow", c.params.lock_window);
    set(&o, "flagRefundBps", c.params.flag_refund_bps);
    set(&o, "minCountedFee", u64_big(c.params.min_counted_fee));
    Ok(o.into())
}

/// Decodes a Server account: authority, key, endpoint, offers, stats, reputation.
#[wasm_bindgen(js_name = decodeServer)]
pub fn decode_server(data: &[u8]) -> JsResult<JsValue> {
    let s = ServerAccount::decode(data).map_err(js_error)?;
    let o = Object::new();
    set(&o, "authority", b58(&s.header.authority));
    set(&o, "hpkeKey", bytes(&s.header.hpke_key));
    set(&o, "active", s.header.active());
    set(&o, "retired", s.header.retired());
    set(&o, "lockedCount", s.header.locked_count);
    set(&o, "registeredAt", s.header.registered_at as f64);
    set(&o, "endpoint", s.endpoint);
    let offers = Array::new();
    for offer in s.offers.iter() {
        let x = Object::new();
        set(&x, "model", offer.model);
        set(&x, "pricePerMtok", u64_big(offer.price_per_mtok));
        offers.push(&x);
    }
    set(&o, "offers", offers);
    set(&o, "stats", stats_object(&s.header.stats));
    Ok(o.into())
}

/// The most servers one request's allow-list may name.
#[wasm_bindgen(js_name = maxAllowedServers)]
pub fn max_allowed_servers() -> usize {
    state::MAX_ALLOWED_SERVERS
}

/// The kind byte at offset 0 of every Server account: a `getProgramAccounts` memcmp filter on it
/// lists the servers.
#[wasm_bindgen(js_name = serverAccountKind)]
pub fn server_account_kind() -> u8 {
    state::AccountKind::Server as u8
}

/// The size of the request account OpenRequest creates for a canonical `model` id of
/// `modelLen` bytes and an envelope of `envelopeLen` bytes: what its rent is paid on (the client
/// gets it back at close).
#[wasm_bindgen(js_name = requestAccountSize)]
pub fn request_account_size(model_len: usize, envelope_len: usize) -> usize {
    state::RequestHeader::account_size(model_len, envelope_len)
}

/// Byte offset in a request account of the declined-slots byte (bit i: allow-list slot i
/// declined); the union of the decline reasons follows it. For filters and tests.
#[wasm_bindgen(js_name = requestDeclinedOffset)]
pub fn request_declined_offset() -> usize {
    state::RequestHeader::DECLINED_OFFSET
}

/// Decodes a Request account.
#[wasm_bindgen(js_name = decodeRequest)]
pub fn decode_request(data: &[u8]) -> JsResult<JsValue> {
    let r = RequestAccount::decode(data).map_err(js_error)?;
    let h = &r.header;
    let o = Object::new();
    set(&o, "status", h.status.name());
    set(&o, "client", b58(&h.client));
    set(&o, "nonce", u64_big(h.nonce));
    set(&o, "model", r.model);
    set(&o, "stake", u64_big(h.stake));
    set(&o, "maxPricePerMtok", u64_big(h.max_price_per_mtok));
    set(&o, "maxTokens", h.max_tokens);
    set(&o, "timeout", h.timeout);
    set(&o, "minCompleted", u64_big(h.min_completed));
    set(&o, "minSuccessBps", h.min_success_bps);
    set(&o, "createdAt", h.created_at as f64);
    set(&o, "deadline", h.deadline as f64);
    set(&o, "lockedBy", if h.locked_by == [0; 32] { JsValue::NULL } else { b58(&h.locked_by).into() });
    set(&o, "lockedAt", h.locked_at as f64);
    set(&o, "pricePerMtok", u64_big(h.price_per_mtok));
    set(&o, "feeBps", h.fee_bps);
    set(&o, "tokens", u64_big(h.tokens));
    set(&o, "cost", u64_big(h.cost));
    set(&o, "fee", u64_big(h.fee));
    set(&o, "serverDue", u64_big(h.server_due));
    set(&o, "hasResponse", h.has_response());
    set(&o, "settledAt", h.settled_at as f64);
    set(&o, "flagged", h.flagged());
    set(&o, "compared", h.compared());
    set(&o, "releaseCount", h.release_count);
    set(&o, "responseKey", bytes(r.response_key));
    set(&o, "commitment", bytes(r.commitment));
    let allowed = Array::new();
    for a in r.allowed {
        allowed.push(&b58(a).into());
    }
    set(&o, "allowed", allowed);
    // Which allowed servers declined (by address) and why; `declinedByAll`: nobody will answer,
    // so cancel and close now instead of waiting for the deadline.
    let declined = Array::new();
    for (slot, a) in r.allowed.iter().enumerate() {
        if h.declined_by(slot) {
            declined.push(&b58(a).into());
        }
    }
    set(&o, "declined", declined);
    set(&o, "declinedByAll", h.declined_by_all());
    let reasons = Array::new();
    for name in h.decline_reasons().names() {
        reasons.push(&name.into());
    }
    set(&o, "declineReasons", reasons);
    set(&o, "promptComplete", h.prompt_written == h.prompt_len);
    set(&o, "prompt", bytes(r.prompt_written()));
    Ok(o.into())
}

/// Decodes a Response account: `{ request, server, finished, chunks: Uint8Array[] }`.
#[wasm_bindgen(js_name = decodeResponse)]
pub fn decode_response(data: &[u8]) -> JsResult<JsValue> {
    let r = ResponseAccount::decode(data).map_err(js_error)?;
    let o = Object::new();
    set(&o, "request", b58(&r.header.request));
    set(&o, "server", b58(&r.header.server));
    set(&o, "finished", r.header.finished);
    let chunks = Array::new();
    for c in r.chunks() {
        chunks.push(&bytes(c));
    }
    set(&o, "chunks", chunks);
    Ok(o.into())
}

// ---------------------------------------------------------------------------------------------
// prices, reputation, model ids
// ---------------------------------------------------------------------------------------------

/// Settles `tokens` at `pricePerMtok` against `stake` with `feeBps`:
/// `{ cost, fee, server, refund }` as BigInts.
#[wasm_bindgen]
pub fn settle(tokens: u64, price_per_mtok: u64, stake: u64, fee_bps: u16) -> JsResult<JsValue> {
    let s = pricing::settle(tokens, price_per_mtok, stake, fee_bps).map_err(js_error)?;
    let o = Object::new();
    set(&o, "cost", u64_big(s.cost));
    set(&o, "fee", u64_big(s.fee));
    set(&o, "server", u64_big(s.server));
    set(&o, "refund", u64_big(s.refund));
    Ok(o.into())
}

/// The most a request can cost: `min(ceil(maxTokens × price / 1e6), stake)`.
#[wasm_bindgen(js_name = maxCost)]
pub fn max_cost(max_tokens: u64, price_per_mtok: u64, stake: u64) -> u64 {
    pricing::cost(max_tokens, price_per_mtok, stake)
}

/// Success ratio in basis points from counters: `counted` is the completions that paid the
/// config's least counted fee (only they build reputation).
#[wasm_bindgen(js_name = successBps)]
pub fn success_bps(counted: u64, flagged: u64, timed_out: u64, released: u64) -> u16 {
    ServerStats { counted, flagged, timed_out, released, ..Default::default() }.success_bps()
}

/// Preference share in basis points, or `undefined` before any comparison.
#[wasm_bindgen(js_name = preferenceBps)]
pub fn preference_bps(preferred: u64, comparisons: u64) -> Option<u16> {
    ServerStats { preferred, comparisons, ..Default::default() }.preference_bps()
}

/// Parses a model id: `{ org, name, revision, quant, canonical }`.
#[wasm_bindgen(js_name = parseModelId)]
pub fn parse_model_id(text: &str) -> JsResult<JsValue> {
    let m = ModelId::parse(text).map_err(js_error)?;
    let o = Object::new();
    set(&o, "org", m.org());
    set(&o, "name", m.name());
    set(&o, "revision", m.revision().map_or(JsValue::NULL, JsValue::from));
    set(&o, "quant", m.quant().map_or(JsValue::NULL, JsValue::from));
    set(&o, "canonical", m.canonical());
    Ok(o.into())
}

/// The program id core builds for, in base58.
#[wasm_bindgen(js_name = programId)]
pub fn program_id() -> String {
    pda::PROGRAM_ID_BASE58.to_string()
}
