//! wasm-bindgen tests, run under node and (with `WASM_BINDGEN_USE_BROWSER=1` and ChromeDriver)
//! in headless Chromium by `cargo xtask test`: core's test vectors byte for byte from inside
//! wasm, key derivation, sealing and opening with the platform's own randomness, and bad input
//! from JS giving a clear `Error`, never a trap.

#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use chainference_core::envelope::{self, ClientSecret, FixedRandomness, ResponseSealer, ServerKeyPair};
use chainference_wasm::*;
use js_sys::{Array, Reflect, Uint8Array};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

const VECTORS: &str = include_str!("../../chainference-core/tests/vectors/core-v1.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn field(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap()
}

fn u8s(v: &JsValue) -> Vec<u8> {
    Uint8Array::from(v.clone()).to_vec()
}

fn code_of(err: &JsValue) -> Option<u32> {
    field(err, "code").as_f64().map(|c| c as u32)
}

#[wasm_bindgen_test]
fn key_derivation_matches_the_vectors() {
    let v = vectors();
    let k = &v["keys"];
    let keys = ClientKeys::from_wallet_signature(&unhex(&k["wallet_signature"])).unwrap();
    assert_eq!(u8s(&keys.export_secret().into()), unhex(&k["client_secret"]));
    let request = unhex(&k["request"]);
    let rk = keys.request_keys(&request).unwrap();
    assert_eq!(u8s(&rk.prompt_public_key().into()), unhex(&k["prompt_slot_public"]));
    assert_eq!(u8s(&rk.response_public_key().into()), unhex(&k["response_public"]));
    let model = k["model"].as_str().unwrap();
    assert_eq!(u8s(&keys.prompt_digest(model, &unhex(&k["prompt"])).into()), unhex(&k["prompt_digest"]));
    assert_eq!(u8s(&keys.commitment_salt(&request).unwrap().into()), unhex(&k["commitment_salt"]));
    assert_eq!(u8s(&keys.commitment(&request, model, &unhex(&k["prompt"])).unwrap().into()), unhex(&k["commitment"]));
    assert_eq!(u8s(&client_key_message().into()), unhex(&k["signed_message"]));
}

#[wasm_bindgen_test]
fn sealed_bytes_and_stream_match_the_vectors() {
    let v = vectors();
    let (k, e) = (&v["keys"], &v["envelope"]);
    let request: [u8; 32] = unhex(&k["request"]).try_into().unwrap();
    let secret = ClientSecret::from_wallet_signature(&unhex(&k["wallet_signature"]).try_into().unwrap());
    let keys = secret.request_keys(&request);
    let servers: Vec<ServerKeyPair> = k["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ServerKeyPair::from_seed(&unhex(&s["ikmR"]).try_into().unwrap()))
        .collect();
    let pks: Vec<[u8; 32]> = servers.iter().map(ServerKeyPair::public_key).collect();
    let mut rng = FixedRandomness::from_bytes(unhex(&e["randomness"]));
    let sealed =
        envelope::seal_prompt_with_rng(&mut rng, &request, &pks, &keys.prompt_public_key(), &unhex(&e["prompt"]))
            .unwrap();
    assert_eq!(sealed, unhex(&e["sealed"]), "the same sealed bytes as native");
    // And the JS API opens the stored envelope for every recipient.
    for (slot, s) in k["servers"].as_array().unwrap().iter().enumerate() {
        let sk = ServerKeys::from_seed(&unhex(&s["ikmR"])).unwrap();
        assert_eq!(u8s(&sk.open_prompt(&sealed, &request, slot as u8).unwrap().into()), unhex(&e["prompt"]));
    }
    let js_keys = ClientKeys::from_wallet_signature(&unhex(&k["wallet_signature"])).unwrap();
    let rk = js_keys.request_keys(&request).unwrap();
    assert_eq!(u8s(&rk.open_own_prompt(&sealed).unwrap().into()), unhex(&e["prompt"]));

    let st = &v["stream"];
    let server: [u8; 32] = unhex(&st["server"]).try_into().unwrap();
    let hpke = v["hpke"].as_array().unwrap().iter().find(|h| h["name"] == "response stream").unwrap();
    let mut rng = FixedRandomness::from_bytes(unhex(&hpke["ikmE"]));
    let mut sealer = ResponseSealer::with_rng(&mut rng, &keys.response_public_key(), &request, &server).unwrap();
    let chunks: Vec<Vec<u8>> = st["chunks"].as_array().unwrap().iter().map(unhex).collect();
    let mut opener = rk.response_opener(&server).unwrap();
    let mut text = Vec::new();
    for (i, (chunk, enc)) in chunks.iter().zip(hpke["encryptions"].as_array().unwrap()).enumerate() {
        let last = i + 1 == chunks.len();
        assert_eq!(&sealer.seal_chunk(&unhex(&enc["pt"]), last).unwrap(), chunk, "chunk {i} byte for byte");
        let opened = opener.open_chunk(chunk).unwrap();
        text.extend(u8s(&field(&opened, "text")));
        assert_eq!(field(&opened, "isFinal").as_bool(), Some(last));
    }
    assert_eq!(String::from_utf8(text).unwrap(), st["answer"].as_str().unwrap());
    opener.finish().unwrap();
}

#[wasm_bindgen_test]
fn layouts_pdas_and_instruction_data_match_the_vectors() {
    let v = vectors();
    let l = &v["layouts"];
    let server = decode_server(&unhex(&l["server"])).unwrap();
    assert_eq!(field(&server, "endpoint").as_string().unwrap(), "https://server-a.example/stream");
    let offers = Array::from(&field(&server, "offers"));
    assert_eq!(offers.length(), 2);
    assert_eq!(field(&field(&server, "stats"), "successBps").as_f64(), Some(8_181.0));
    let request = decode_request(&unhex(&l["request"])).unwrap();
    assert_eq!(field(&request, "status").as_string().unwrap(), "Open");
    assert_eq!(Array::from(&field(&request, "declined")).length(), 0);
    assert_eq!(field(&request, "declinedByAll").as_bool(), Some(false));
    // Declines as the program records them: a bit per allow-list slot, the union of reasons.
    let mut declined = unhex(&l["request"]);
    let at = chainference_core::state::RequestHeader::DECLINED_OFFSET;
    declined[at] = 0b10;
    declined[at + 1] = 8;
    let one = decode_request(&declined).unwrap();
    let allowed = Array::from(&field(&one, "allowed"));
    let by = Array::from(&field(&one, "declined"));
    assert_eq!((by.length(), by.get(0).as_string()), (1, allowed.get(1).as_string()));
    assert_eq!(field(&one, "declinedByAll").as_bool(), Some(false));
    assert_eq!(Array::from(&field(&one, "declineReasons")).get(0).as_string().unwrap(), "client not served");
    declined[at] = 0b11;
    declined[at + 1] = 8 | 1;
    let all = decode_request(&declined).unwrap();
    assert_eq!(field(&all, "declinedByAll").as_bool(), Some(true));
    assert_eq!(Array::from(&field(&all, "declineReasons")).length(), 2);
    let config = decode_config(&unhex(&l["config"])).unwrap();
    assert_eq!(field(&config, "feeBps").as_f64(), Some(1_000.0));
    let response = decode_response(&unhex(&l["response"])).unwrap();
    assert_eq!(Array::from(&field(&response, "chunks")).length(), 3);

    let p = &v["pdas"];
    let client = from_base58(p["request"]["client"].as_str().unwrap()).unwrap().to_vec();
    let nonce = p["request"]["nonce"].as_u64().unwrap();
    let addr = request_address(&client, nonce, None).unwrap().to_vec();
    assert_eq!(to_base58(&addr).unwrap(), p["request"]["address"].as_str().unwrap());
    assert_eq!(
        to_base58(&response_address(&addr, None).unwrap().to_vec()).unwrap(),
        p["response"]["address"].as_str().unwrap()
    );
    assert_eq!(program_id(), p["program_id"].as_str().unwrap());

    // Client-side instructions from the JS builders carry the same data as native's.
    let ixs: Vec<&Value> = v["instructions"].as_array().unwrap().iter().collect();
    let by_name = |n: &str| ixs.iter().find(|i| i["name"] == n).copied().unwrap();
    let req = unhex(&v["keys"]["request"]);
    let cancel = cancel_request_instruction(&client, &req, None).unwrap();
    assert_eq!(u8s(&field(&cancel, "data")), unhex(&by_name("CancelRequest")["data"]));
    let keys = Array::from(&field(&cancel, "keys"));
    assert_eq!(keys.length(), 2);
    assert_eq!(field(&keys.get(0), "isSigner").as_bool(), Some(true));
    let accounts = Array::from(&field(&cancel, "accounts"));
    assert_eq!(field(&accounts.get(0), "role").as_f64(), Some(3.0), "writable signer in @solana/kit's roles");
    let a1 = hex::decode("2222222222222222222222222222222222222222222222222222222222222222").unwrap();
    let flag = flag_response_instruction(&client, &req, &a1, None, None).unwrap();
    assert_eq!(u8s(&field(&flag, "data")), unhex(&by_name("FlagResponse")["data"]));
    // A dispute is the same instruction with its refund byte set.
    let dispute = flag_response_instruction(&client, &req, &a1, None, Some(true)).unwrap();
    assert_eq!(u8s(&field(&dispute, "data")), vec![15, 1]);
    let reclaim = reclaim_request_instruction(&req, &client, Some(a1.clone()), None).unwrap();
    assert_eq!(u8s(&field(&reclaim, "data")), unhex(&by_name("ReclaimRequest")["data"]));
    assert_eq!(Array::from(&field(&reclaim, "keys")).length(), 3);
    let decline = decline_request_instruction(&a1, &req, 8 | 2, None).unwrap();
    assert_eq!(u8s(&field(&decline, "data")), vec![19, 10]);
    assert_eq!(field(&Array::from(&field(&decline, "keys")).get(0), "isSigner").as_bool(), Some(true));
    assert_eq!(code_of(&decline_request_instruction(&a1, &req, 0, None).err().unwrap()), Some(107));
}

#[wasm_bindgen_test]
fn prices_and_models_match_core() {
    let v = vectors();
    for case in v["prices"].as_array().unwrap() {
        let n = |k: &str| case[k].as_str().unwrap().parse::<u64>().unwrap();
        let s = settle(n("tokens"), n("price_per_mtok"), n("stake"), case["fee_bps"].as_u64().unwrap() as u16).unwrap();
        for k in ["cost", "fee", "server", "refund"] {
            let got = u64::try_from(field(&s, k).dyn_into::<js_sys::BigInt>().unwrap()).unwrap();
            assert_eq!(got, n(k), "{k}");
        }
    }
    assert_eq!(success_bps(8, 2, 1, 1), 6_000);
    assert_eq!(preference_bps(1, 0), None);
    let m = parse_model_id("HuggingFaceTB/SmolLM2-135M-Instruct:q4_1").unwrap();
    assert_eq!(field(&m, "canonical").as_string().unwrap(), "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1");
}

#[wasm_bindgen_test]
fn seal_and_open_with_platform_randomness() {
    let request = [9u8; 32];
    let server = ServerKeys::generate().unwrap();
    let keys = ClientKeys::from_wallet_signature(&[3u8; 64]).unwrap();
    let rk = keys.request_keys(&request).unwrap();
    let servers = Array::new();
    servers.push(&server.public_key());
    let prompt = b"Hello from the browser";
    let a = seal_prompt(&request, servers.clone().into(), &rk.prompt_public_key().to_vec(), prompt).unwrap().to_vec();
    let b = seal_prompt(&request, servers.into(), &rk.prompt_public_key().to_vec(), prompt).unwrap().to_vec();
    assert_ne!(a, b, "fresh randomness for each seal");
    assert_eq!(a.len(), envelope_length(1, prompt.len()));
    assert_eq!(u8s(&server.open_prompt(&a, &request, 0).unwrap().into()), prompt);
    assert_eq!(u8s(&rk.open_own_prompt(&b).unwrap().into()), prompt);
}

#[wasm_bindgen_test]
fn bad_input_throws_errors_with_codes() {
    // Wrong lengths.
    let e = ClientKeys::from_wallet_signature(&[1u8; 10]).err().unwrap();
    assert!(e.is_instance_of::<js_sys::Error>());
    assert_eq!(code_of(&e), Some(chainference_core::Error::LengthOutOfRange.code()));
    assert!(request_address(&[1u8; 31], 0, None).is_err());
    // Wrong types.
    let e = seal_prompt(&[1u8; 32], JsValue::from_str("not an array"), &[2u8; 32], b"x").err().unwrap();
    assert!(e.is_instance_of::<js_sys::TypeError>());
    let e = open_request_instructions(JsValue::from(js_sys::Object::new())).err().unwrap();
    assert!(e.is_instance_of::<js_sys::Error>());
    // Malformed accounts and envelopes.
    let e = decode_request(&[3, 2, 0]).err().unwrap();
    assert_eq!(code_of(&e), Some(chainference_core::Error::Truncated.code()));
    assert_eq!(field(&e, "name").as_string().unwrap(), "Truncated");
    // A version-1 account (before the v2 layout bump) is refused by name.
    let e = decode_request(&[3, 1, 0]).err().unwrap();
    assert_eq!(field(&e, "name").as_string().unwrap(), "UnsupportedVersion");
    let e = decode_server(&[9; 200]).err().unwrap();
    assert_eq!(code_of(&e), Some(chainference_core::Error::WrongAccountKind.code()));
    let server = ServerKeys::from_seed(&[4u8; 32]).unwrap();
    let e = server.open_prompt(&[1, 2, 3], &[0u8; 32], 0).err().unwrap();
    assert_eq!(code_of(&e), Some(chainference_core::Error::MalformedEnvelope.code()));
    // Tampered and reordered chunks.
    let request = [5u8; 32];
    let keys = ClientKeys::from_wallet_signature(&[6u8; 64]).unwrap();
    let rk = keys.request_keys(&request).unwrap();
    let mut sealer =
        ResponseSealer::new(&rk.response_public_key().to_vec().try_into().unwrap(), &request, &[7u8; 32]).unwrap();
    let c0 = sealer.seal_chunk(b"one", false).unwrap();
    let c1 = sealer.seal_chunk(b"two", true).unwrap();
    let mut opener = rk.response_opener(&[7u8; 32]).unwrap();
    let e = opener.open_chunk(&c1).err().unwrap();
    assert_eq!(code_of(&e), Some(chainference_core::Error::OpenFailed.code()), "out of order");
    opener.open_chunk(&c0).unwrap();
    let mut bad = c1.clone();
    bad[0] ^= 1;
    assert_eq!(code_of(&opener.open_chunk(&bad).err().unwrap()), Some(chainference_core::Error::OpenFailed.code()));
    assert_eq!(code_of(&opener.finish().err().unwrap()), Some(chainference_core::Error::StreamTruncated.code()));
    opener.open_chunk(&c1).unwrap();
    opener.finish().unwrap();
}

#[wasm_bindgen_test]
fn open_request_instructions_chunk_a_large_prompt() {
    let keys = ClientKeys::from_wallet_signature(&[8u8; 64]).unwrap();
    let client = [1u8; 32];
    let nonce = usable_nonce(&client, 3, None).unwrap();
    let request = request_address(&client, nonce, None).unwrap().to_vec();
    let rk = keys.request_keys(&request).unwrap();
    let server = ServerKeys::from_seed(&[2u8; 32]).unwrap();
    let servers = Array::new();
    servers.push(&server.public_key());
    let prompt = vec![b'p'; 2_000];
    let sealed = seal_prompt(&request, servers.clone().into(), &rk.prompt_public_key().to_vec(), &prompt).unwrap();
    let params = js_sys::Object::new();
    let put = |k: &str, v: JsValue| {
        Reflect::set(&params, &k.into(), &v).unwrap();
    };
    put("client", Uint8Array::from(&client[..]).into());
    put("nonce", JsValue::from(js_sys::BigInt::from(nonce)));
    put("stake", JsValue::from(js_sys::BigInt::from(10_000_000u64)));
    put("maxPricePerMtok", JsValue::from(js_sys::BigInt::from(2_000_000u64)));
    put("maxTokens", JsValue::from(512));
    put("model", JsValue::from_str("HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1"));
    let allowed = Array::new();
    allowed.push(&Uint8Array::from(&[7u8; 32][..]));
    put("allowed", allowed.into());
    put("responseKey", rk.response_public_key().into());
    put("commitment", keys.commitment(&request, "m/x", &prompt).unwrap().into());
    put("envelope", sealed.into());
    let ixs = open_request_instructions(params.clone().into()).unwrap();
    // 2,178 envelope bytes: the first transaction carries what fits, WritePrompt the rest, split
    // by core's one sizing rule (the Rust client's too), each transaction keeping the reserve free.
    let sizes = chainference_core::builders::PromptUpload::with_reserve(
        &[],
        40,
        1,
        chainference_core::builders::TRANSACTION_RESERVE,
    );
    assert!(sizes.chunk < chainference_core::builders::WRITE_PROMPT_CHUNK_MAX);
    let rest = 2_178 - sizes.first_chunk;
    assert_eq!(ixs.length() as usize, 1 + rest.div_ceil(sizes.chunk));
    assert_eq!(u8s(&field(&ixs.get(1), "data")).len(), 1 + 4 + 4 + sizes.chunk, "a full WritePrompt chunk");
    let first = u8s(&field(&ixs.get(0), "data"));
    assert_eq!(first[0], 7);
    assert_eq!(u8s(&field(&ixs.get(1), "data"))[0], 8);
    // A non-canonical model id is refused before anything is sent.
    put("model", JsValue::from_str("HuggingFaceTB/SmolLM2-135M-Instruct:q4_1"));
    let e = open_request_instructions(params.into()).err().unwrap();
    assert_eq!(code_of(&e), Some(chainference_core::Error::InvalidModelId.code()));
}
