//! Test vectors: `tests/vectors/core-v1.json` is regenerated here from fixed secrets and fixed
//! randomness and must match byte for byte; its HPKE entries are then opened from their own
//! fields with the `hpke` crate directly, as another implementation would.
//!
//! Regenerate after an intended format change with
//! `CHAINFERENCE_REGEN_VECTORS=1 cargo test -p chainference-core --test vectors`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic
)]

use chainference_core::builders::{self, Program, RequestRefs, ServerProfile};
use chainference_core::envelope::{
    self, AEAD_ID, ClientSecret, FixedRandomness, KDF_ID, KEM_ID, PROMPT_BODY_AAD, PROMPT_KEY_INFO, RESPONSE_INFO,
    ResponseSealer, SLOT_LEN, ServerKeyPair,
};
use chainference_core::instruction::{Instruction, OpenRequestArgs, encode_offers};
use chainference_core::lifecycle::NewRequest;
use chainference_core::pricing::{self, ServerStats};
use chainference_core::state::{
    Config, ConfigParams, DeclineReasons, Offers, RequestHeader, RequestStatus, ResponseHeader, ServerAccount,
    ServerHeader, Treasury,
};
use chainference_core::wire::Reader;
use chainference_core::{base58, pda};
use hpke::{Deserializable, OpModeR};
use serde_json::{Value, json};

/// The vectors file of the checkout under test (`cargo test` sets CARGO_MANIFEST_DIR at run time;
/// checkouts sharing a target dir can share a test binary).
fn vectors_path() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("tests/vectors/core-v1.json")
}
const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
const PROMPT: &[u8] = b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n";
const ANSWER: [&str; 3] = ["The capital", " of France is", " Paris."];

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Deterministic "random" bytes: byte `i` of stream `tag` is `tag * 31 + i * 7 (mod 256)`.
fn fixed_bytes(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_mul(31).wrapping_add((i as u8).wrapping_mul(7))).collect()
}

fn generate() -> Value {
    let program = Program::default();
    let client_signature: [u8; 64] = fixed_bytes(1, 64).try_into().unwrap();
    let client_wallet = [0x11u8; 32];
    let server_seeds: Vec<[u8; 32]> = (0..2).map(|i| fixed_bytes(10 + i, 32).try_into().unwrap()).collect();
    let servers: Vec<ServerKeyPair> = server_seeds.iter().map(ServerKeyPair::from_seed).collect();
    let authorities = [[0x21u8; 32], [0x22u8; 32]];
    // v2: a nonce whose request and response PDAs are both canonical at bump 255.
    let nonce = program.usable_nonce(&client_wallet, 7);
    let (request, request_bump) = program.request(&client_wallet, nonce);
    let (response, response_bump) = program.response(&request);
    let secret = ClientSecret::from_wallet_signature(&client_signature);
    let keys = secret.request_keys(&request);

    // ---- keys ----
    let digest = secret.prompt_digest(MODEL, PROMPT);
    let salt = secret.commitment_salt(&request);
    let commitment = secret.commitment(&request, MODEL, PROMPT);
    let keys_json = json!({
        "wallet_signature": h(&client_signature),
        "signed_message": h(envelope::CLIENT_KEY_MESSAGE),
        "client_secret": h(&*secret.to_bytes()),
        "request": h(&request),
        "prompt_slot_secret": h(&*keys.prompt_secret().to_bytes()),
        "prompt_slot_public": h(&keys.prompt_public_key()),
        "response_secret": h(&*keys.response_secret().to_bytes()),
        "response_public": h(&keys.response_public_key()),
        "model": MODEL,
        "prompt": h(PROMPT),
        "prompt_digest": h(&digest),
        "commitment_salt": h(&salt),
        "commitment": h(&commitment),
        "servers": servers.iter().zip(&server_seeds).map(|(s, seed)| json!({
            "ikmR": h(seed), "skRm": h(&*s.secret().to_bytes()), "pkRm": h(&s.public_key()),
        })).collect::<Vec<_>>(),
    });

    // ---- prompt envelope ----
    let randomness = fixed_bytes(3, envelope::prompt_randomness_len(2));
    let mut rng = FixedRandomness::from_bytes(randomness.clone());
    let pks = [servers[0].public_key(), servers[1].public_key()];
    let sealed = envelope::seal_prompt_with_rng(&mut rng, &request, &pks, &keys.prompt_public_key(), PROMPT).unwrap();
    let content_key = &randomness[..32];
    let info = [PROMPT_KEY_INFO, &request].concat();
    let mut hpke_entries = Vec::new();
    let slot_secrets =
        [servers[0].secret().to_bytes(), servers[1].secret().to_bytes(), keys.prompt_secret().to_bytes()];
    let slot_publics = [pks[0], pks[1], keys.prompt_public_key()];
    for slot in 0..3 {
        let start = 2 + SLOT_LEN * slot;
        let (enc, ct) = sealed[start..start + SLOT_LEN].split_at(32);
        hpke_entries.push(json!({
            "name": format!("prompt content key, slot {slot}{}", if slot == 2 { " (client)" } else { "" }),
            "mode": 0, "kem_id": KEM_ID, "kdf_id": KDF_ID, "aead_id": AEAD_ID,
            "info": h(&info),
            "ikmE": h(&randomness[32 + 32 * slot..64 + 32 * slot]),
            "skRm": h(&*slot_secrets[slot]), "pkRm": h(&slot_publics[slot]),
            "enc": h(enc),
            "encryptions": [{ "aad": h(&[slot as u8]), "ct": h(ct), "pt": h(content_key) }],
        }));
    }
    let head_len = 2 + SLOT_LEN * 3;
    let envelope_json = json!({
        "request": h(&request),
        "prompt": h(PROMPT),
        "randomness": h(&randomness),
        "content_key": h(content_key),
        "sealed": h(&sealed),
        "relation": "sealed = 0x01 || slot_count (3) || slot_i = enc_i || ct_i for the hpke entries 'prompt content key, slot i' || body; \
                     body = ChaCha20-Poly1305(key = content_key, nonce = 12 zero bytes, aad = body_aad) of prompt; randomness = content_key || ikmE of slot 0, 1, 2",
        "body_aad": h(&[PROMPT_BODY_AAD, &request, &sealed[..head_len]].concat()),
        "body": h(&sealed[head_len..]),
    });

    // ---- response stream ----
    let stream_rand = fixed_bytes(4, envelope::RESPONSE_RANDOMNESS_LEN);
    let mut rng = FixedRandomness::from_bytes(stream_rand.clone());
    let mut sealer =
        ResponseSealer::with_rng(&mut rng, &keys.response_public_key(), &request, &authorities[1]).unwrap();
    let chunks: Vec<Vec<u8>> = ANSWER
        .iter()
        .enumerate()
        .map(|(i, p)| sealer.seal_chunk(p.as_bytes(), i + 1 == ANSWER.len()).unwrap())
        .collect();
    let enc = &chunks[0][..32];
    hpke_entries.push(json!({
        "name": "response stream",
        "mode": 0, "kem_id": KEM_ID, "kdf_id": KDF_ID, "aead_id": AEAD_ID,
        "info": h(&[RESPONSE_INFO, &request, &authorities[1]].concat()),
        "ikmE": h(&stream_rand),
        "skRm": h(&*keys.response_secret().to_bytes()), "pkRm": h(&keys.response_public_key()),
        "enc": h(enc),
        "encryptions": chunks.iter().enumerate().map(|(i, c)| {
            let ct = if i == 0 { &c[32..] } else { &c[..] };
            let aad = [&(i as u32).to_le_bytes()[..], &[u8::from(i + 1 == chunks.len())]].concat();
            json!({ "aad": h(&aad), "ct": h(ct), "pt": h(ANSWER[i].as_bytes()) })
        }).collect::<Vec<_>>(),
    }));
    let stream_json = json!({
        "server": h(&authorities[1]),
        "answer": ANSWER.concat(),
        "chunks": chunks.iter().map(|c| h(c)).collect::<Vec<_>>(),
        "relation": "chunk 0 = enc || ct_0; chunk i>0 = ct_i, where ct_i are the encryptions of the 'response stream' hpke entry (one context, sequence i); aad = i as u32 LE || final flag",
    });

    // ---- PDAs ----
    let (config_addr, config_bump) = pda::config_address(&program.id);
    let (treasury_addr, treasury_bump) = pda::treasury_address(&program.id);
    let (server_addr, server_bump) = pda::server_address(&program.id, &authorities[0]);
    let pdas = json!({
        "program_id": pda::PROGRAM_ID_BASE58,
        "config": { "seeds": ["config"], "address": base58::encode(&config_addr), "bump": config_bump },
        "treasury": { "seeds": ["treasury"], "address": base58::encode(&treasury_addr), "bump": treasury_bump },
        "server": { "authority": base58::encode(&authorities[0]), "address": base58::encode(&server_addr), "bump": server_bump },
        "request": { "client": base58::encode(&client_wallet), "nonce": nonce, "address": base58::encode(&request), "bump": request_bump },
        "response": { "request": base58::encode(&request), "address": base58::encode(&response), "bump": response_bump },
        "program_data": base58::encode(&pda::program_data_address(&program.id).0),
    });

    // ---- layouts ----
    let params = ConfigParams::default();
    let config = Config { bump: config_bump, treasury_bump, params, admin: [0x31; 32], treasury: treasury_addr };
    let mut config_bytes = vec![0u8; Config::LEN];
    config.encode_into(&mut config_bytes).unwrap();
    let mut treasury_bytes = vec![0u8; Treasury::LEN];
    Treasury { bump: treasury_bump }.encode_into(&mut treasury_bytes).unwrap();
    let offer_bytes = encode_offers(&[(MODEL, 2_000_000), ("HuggingFaceTB/SmolLM2-360M-Instruct", 5_000_000)]).unwrap();
    let offers = Offers::read(&mut Reader::new(&offer_bytes)).unwrap();
    let mut server_header = ServerHeader::new(server_bump, 1_800_000_000, authorities[0], pks[0]);
    server_header.locked_count = 1;
    server_header.stats = ServerStats {
        completed: 12,
        counted: 10,
        fees: 1_000,
        flagged: 1,
        timed_out: 1,
        released: 0,
        comparisons: 4,
        preferred: 2,
    };
    let endpoint = "https://server-a.example/stream";
    let mut server_bytes = vec![0u8; ServerAccount::size(endpoint.len(), offer_bytes.len())];
    ServerAccount::encode_into(&server_header, endpoint, &offers, &mut server_bytes).unwrap();
    let mut header = NewRequest {
        client: client_wallet,
        nonce,
        bump: request_bump,
        stake: 10_000_000,
        max_price_per_mtok: 3_000_000,
        max_tokens: 512,
        timeout: 0,
        min_completed: 5,
        min_success_bps: 8_000,
        allowed_count: 2,
        prompt_len: sealed.len() as u32,
    }
    .create(&params, 1_800_000_100)
    .unwrap();
    header.prompt_written = header.prompt_len;
    header.status = RequestStatus::Open;
    header.deadline = 1_800_000_400;
    let mut request_bytes = vec![0u8; RequestHeader::account_size(MODEL.len(), sealed.len())];
    header.encode_into(&mut request_bytes).unwrap();
    request_bytes[RequestHeader::RESPONSE_KEY_OFFSET..][..32].copy_from_slice(&keys.response_public_key());
    request_bytes[RequestHeader::COMMITMENT_OFFSET..][..32].copy_from_slice(&commitment);
    request_bytes[RequestHeader::ALLOWED_OFFSET..][..32].copy_from_slice(&authorities[0]);
    request_bytes[RequestHeader::ALLOWED_OFFSET + 32..][..32].copy_from_slice(&authorities[1]);
    let tail = RequestHeader::TAIL_OFFSET;
    request_bytes[tail..tail + 4].copy_from_slice(&(MODEL.len() as u32).to_le_bytes());
    request_bytes[tail + 4..tail + 4 + MODEL.len()].copy_from_slice(MODEL.as_bytes());
    request_bytes[tail + 4 + MODEL.len()..].copy_from_slice(&sealed);
    let response_tail: Vec<u8> =
        chunks.iter().flat_map(|c| [&(c.len() as u32).to_le_bytes()[..], c].concat()).collect();
    let mut response_header = ResponseHeader::new(response_bump, request, authorities[1]);
    response_header.finished = true;
    response_header.chunk_count = chunks.len() as u32;
    response_header.data_len = response_tail.len() as u32;
    let mut response_bytes = vec![0u8; ResponseHeader::LEN];
    response_header.encode_into(&mut response_bytes).unwrap();
    response_bytes.extend_from_slice(&response_tail);
    let layouts = json!({
        "config": h(&config_bytes),
        "treasury": h(&treasury_bytes),
        "server": h(&server_bytes),
        "request": h(&request_bytes),
        "response": h(&response_bytes),
    });

    // ---- instructions ----
    let refs = RequestRefs { request, response, client: client_wallet };
    let profile = ServerProfile { hpke_key: &pks[0], endpoint, offers: &[(MODEL, 2_000_000)] };
    let open = OpenRequestArgs {
        nonce,
        bump: request_bump,
        stake: 10_000_000,
        max_price_per_mtok: 3_000_000,
        max_tokens: 512,
        timeout: 0,
        min_completed: 5,
        min_success_bps: 8_000,
        response_key: &keys.response_public_key(),
        commitment: &commitment,
        model: MODEL,
        allowed: &authorities,
        prompt_len: sealed.len() as u32,
        prompt_chunk: &sealed[..200],
    };
    let side = |request, served_by, salt| builders::CompareSide { request, served_by, salt };
    let p = &program;
    let ixs = [
        ("InitConfig", builders::init_config(p, &[0x31; 32], params)),
        ("UpdateConfig", builders::update_config(p, &[0x31; 32], params, &[0x32; 32])),
        ("WithdrawFees", builders::withdraw_fees(p, &[0x31; 32], &[0x33; 32], 1_000)),
        ("RegisterServer", builders::register_server(p, &authorities[0], &profile).unwrap()),
        ("UpdateServer", builders::update_server(p, &authorities[0], &profile).unwrap()),
        ("SetServerActive", builders::set_server_active(p, &authorities[0], false)),
        ("CloseServer", builders::close_server(p, &authorities[0])),
        ("OpenRequest", builders::open_request(p, &client_wallet, &open).unwrap()),
        ("WritePrompt", builders::write_prompt(p, &client_wallet, &request, 200, &sealed[200..]).unwrap()),
        ("CancelRequest", builders::cancel_request(p, &client_wallet, &request)),
        ("LockRequest", builders::lock_request(p, &authorities[1], &request)),
        ("AppendResponse", builders::append_response(p, &authorities[1], &refs, false, &chunks[0]).unwrap()),
        ("CompleteRequest", builders::complete_request(p, &authorities[1], &refs, 42)),
        ("ReleaseRequest", builders::release_request(p, &authorities[1], &request, &response)),
        ("ReclaimRequest", builders::reclaim_request(p, &request, &client_wallet, Some(&authorities[1]))),
        ("FlagResponse", builders::flag_response(p, &client_wallet, &request, &authorities[1])),
        (
            "CompareResponses",
            builders::compare_responses(
                p,
                &client_wallet,
                [side(&request, &authorities[1], &salt), side(&[0x44; 32], &authorities[0], &[0x45; 32])],
                &digest,
                0,
            ),
        ),
        ("CloseRequest", builders::close_request(p, &client_wallet, &refs, &authorities[1])),
        ("ClaimPayment", builders::claim_payment(p, &authorities[1], &request, &response)),
        (
            "DeclineRequest",
            builders::decline_request(
                p,
                &authorities[1],
                &request,
                DeclineReasons::PROMPT_TOO_LARGE.union(DeclineReasons::CLIENT_EXCLUDED),
            ),
        ),
    ];
    let instructions: Vec<Value> = ixs
        .iter()
        .map(|(name, ix)| {
            json!({
                "name": name,
                "tag": ix.data[0],
                "data": h(&ix.data),
                "accounts": ix.accounts.iter().map(|m| json!({
                    "pubkey": base58::encode(&m.pubkey), "is_signer": m.is_signer, "is_writable": m.is_writable,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();

    // ---- prices ----
    let cases: [(u64, u64, u64, u16); 7] = [
        (300, 2_000_000, 10_000_000, 1_000),
        (1, 1, 1_000, 1_000),
        (0, 5_000_000, 1_000, 1_000),
        (1_000_000, 0, 1_000, 1_000),
        (u64::MAX, u64::MAX, u64::MAX, 10_000),
        (123_456_789, 987_654_321, 50_000_000_000, 250),
        (10_000, 100_000_000, 500_000, 1_000),
    ];
    let prices: Vec<Value> = cases
        .iter()
        .map(|&(tokens, price, stake, fee_bps)| {
            let s = pricing::settle(tokens, price, stake, fee_bps).unwrap();
            json!({ "tokens": tokens.to_string(), "price_per_mtok": price.to_string(), "stake": stake.to_string(),
                    "fee_bps": fee_bps, "cost": s.cost.to_string(), "fee": s.fee.to_string(),
                    "server": s.server.to_string(), "refund": s.refund.to_string() })
        })
        .collect();

    json!({
        "version": 1,
        "description": "Chainference core test vectors. All bytes hex; u64 amounts as decimal strings. See docs/protocol.md.",
        "keys": keys_json,
        "envelope": envelope_json,
        "stream": stream_json,
        "hpke": hpke_entries,
        "pdas": pdas,
        "layouts": layouts,
        "instructions": instructions,
        "prices": prices,
    })
}

fn load() -> Value {
    if std::env::var_os("CHAINFERENCE_REGEN_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&generate()).unwrap() + "\n").unwrap();
    }
    let text =
        std::fs::read_to_string(vectors_path()).expect("vectors file; regenerate with CHAINFERENCE_REGEN_VECTORS=1");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn vectors_match_byte_for_byte() {
    let stored = load();
    let generated = generate();
    for key in generated.as_object().unwrap().keys() {
        assert_eq!(generated[key], stored[key], "vector section `{key}` differs from the stored file");
    }
    assert_eq!(generated, stored);
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// Opens every HPKE entry from its own fields only, with the hpke crate, as RFC 9180's
/// test-vectors.json are checked.
#[test]
fn hpke_entries_open_independently() {
    type Kem = hpke::kem::X25519HkdfSha256;
    let v = load();
    let entries = v["hpke"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    for e in entries {
        assert_eq!(
            (e["mode"].as_u64(), e["kem_id"].as_u64(), e["kdf_id"].as_u64(), e["aead_id"].as_u64()),
            (Some(0), Some(32), Some(1), Some(3))
        );
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&unhex(&e["skRm"])).unwrap();
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&unhex(&e["enc"])).unwrap();
        // The ephemeral key really is DeriveKeyPair(ikmE): its public half is enc.
        let (_, pk_e) = <Kem as hpke::Kem>::derive_keypair(&unhex(&e["ikmE"]));
        assert_eq!(hpke::Serializable::to_bytes(&pk_e).to_vec(), unhex(&e["enc"]), "{}", e["name"]);
        let mut ctx = hpke::setup_receiver::<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            &unhex(&e["info"]),
        )
        .unwrap();
        for enc in e["encryptions"].as_array().unwrap() {
            let pt = ctx.open(&unhex(&enc["ct"]), &unhex(&enc["aad"])).unwrap();
            assert_eq!(pt, unhex(&enc["pt"]), "{}", e["name"]);
        }
    }
    // The body opens with the content key the slots carry.
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let env = &v["envelope"];
    let key: [u8; 32] = unhex(&env["content_key"]).try_into().unwrap();
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    let body = unhex(&env["body"]);
    let aad = unhex(&env["body_aad"]);
    let pt = cipher.decrypt(&Default::default(), Payload { msg: &body, aad: &aad }).unwrap();
    assert_eq!(pt, unhex(&env["prompt"]));
}

/// The stored layouts decode to what they claim, and the stored instruction data decodes and
/// re-encodes to itself.
#[test]
fn stored_layouts_and_instructions_decode() {
    let v = load();
    let l = &v["layouts"];
    Config::decode(&unhex(&l["config"])).unwrap();
    Treasury::decode(&unhex(&l["treasury"])).unwrap();
    let server = unhex(&l["server"]);
    let s = ServerAccount::decode(&server).unwrap();
    assert_eq!(s.offers.price_of(MODEL), Some(2_000_000));
    let request = unhex(&l["request"]);
    let r = chainference_core::state::RequestAccount::decode(&request).unwrap();
    assert_eq!(r.model, MODEL);
    let response = unhex(&l["response"]);
    let resp = chainference_core::state::ResponseAccount::decode(&response).unwrap();
    // The client reads the whole answer back from the stored account with only its wallet signature.
    let secret = ClientSecret::from_wallet_signature(&unhex(&v["keys"]["wallet_signature"]).try_into().unwrap());
    let request_addr: [u8; 32] = unhex(&v["keys"]["request"]).try_into().unwrap();
    let keys = secret.request_keys(&request_addr);
    let text = keys.response_opener(&request_addr, &resp.header.server).open_all(resp.chunks()).unwrap();
    assert_eq!(String::from_utf8(text.to_vec()).unwrap(), ANSWER.concat());
    assert_eq!(&*keys.open_own_prompt(r.prompt, &request_addr).unwrap(), PROMPT);

    let ixs = v["instructions"].as_array().unwrap();
    assert_eq!(ixs.len(), 20);
    for (i, ix) in ixs.iter().enumerate() {
        let data = unhex(&ix["data"]);
        assert_eq!(usize::from(data[0]), i, "tags are the variant numbers, in order");
        let decoded = Instruction::decode(&data).unwrap();
        assert_eq!(decoded.encode().unwrap(), data, "{}", ix["name"]);
    }
}
