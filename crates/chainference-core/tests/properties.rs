//! Property tests: pricing against `u128`, decoders against arbitrary bytes, instruction
//! round trips, and the lifecycle's conservation of the escrow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic
)]

use chainference_core::Error;
use chainference_core::envelope::{self, ClientSecret, ResponseSealer, ServerKeyPair};
use chainference_core::instruction::{Instruction, OpenRequestArgs, encode_offers};
use chainference_core::lifecycle::{Event, NewRequest, ServerView};
use chainference_core::model::ModelId;
use chainference_core::pricing::{self, Rounding, ServerStats, mul_div};
use chainference_core::state::{
    Config, ConfigParams, DeclineReasons, Offers, RequestAccount, RequestHeader, RequestStatus, ResponseAccount,
    ServerAccount, Treasury,
};
use chainference_core::wire::Reader;
use proptest::prelude::*;

fn reference_mul_div(a: u64, b: u64, d: u32, up: bool) -> Option<u64> {
    if d == 0 {
        return None;
    }
    let p = u128::from(a) * u128::from(b);
    let q = if up { p.div_ceil(u128::from(d)) } else { p / u128::from(d) };
    u64::try_from(q).ok()
}

/// Values that stress the edges: zero, one, powers of two and their neighbours, MAX.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        (0u32..64).prop_map(|s| 1u64 << s),
        (1u32..64).prop_map(|s| (1u64 << s) - 1),
        any::<u64>(),
        any::<u32>().prop_map(u64::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

    #[test]
    fn mul_div_matches_u128(a in edgy_u64(), b in edgy_u64(), d in prop_oneof![Just(1u32), Just(u32::MAX), Just(1_000_000), Just(10_000), any::<u32>()]) {
        prop_assert_eq!(mul_div(a, b, d, Rounding::Down), reference_mul_div(a, b, d, false));
        prop_assert_eq!(mul_div(a, b, d, Rounding::Up), reference_mul_div(a, b, d, true));
    }

    #[test]
    fn settlement_conserves_and_never_exceeds_stake(tokens in edgy_u64(), price in edgy_u64(), stake in edgy_u64(), fee_bps in 0u16..=10_000) {
        let s = pricing::settle(tokens, price, stake, fee_bps).unwrap();
        let exact = (u128::from(tokens) * u128::from(price)).div_ceil(1_000_000);
        prop_assert_eq!(u128::from(s.cost), exact.min(u128::from(stake)));
        prop_assert!(s.cost <= stake);
        prop_assert_eq!(u128::from(s.fee), u128::from(s.cost) * u128::from(fee_bps) / 10_000);
        prop_assert_eq!(s.fee + s.server, s.cost);
        prop_assert_eq!(s.cost + s.refund, stake);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Instruction::decode(&bytes);
        let _ = Config::decode(&bytes);
        let _ = Treasury::decode(&bytes);
        let _ = ServerAccount::decode(&bytes);
        let _ = RequestHeader::decode(&bytes);
        let _ = RequestAccount::decode(&bytes);
        let _ = ResponseAccount::decode(&bytes);
        let _ = envelope::parse_envelope(&bytes);
        let _ = Offers::read(&mut Reader::new(&bytes));
        let _ = chainference_core::state::account_kind(&bytes);
        if let Ok(text) = core::str::from_utf8(&bytes) {
            let _ = ModelId::parse(text);
            let _ = chainference_core::base58::decode(text);
        }
    }

    /// A valid request with any header byte changed decodes or fails with a precise error:
    /// random bytes rarely pass the kind and version checks, so this reaches the field checks
    /// (an allow-list count of 16 or more once overflowed a shift).
    #[test]
    fn a_request_with_one_header_byte_changed_never_panics(at in 0usize..RequestHeader::LEN, value in any::<u8>()) {
        let mut data = sample_request_account();
        data[at] = value;
        let _ = RequestHeader::decode(&data);
        let _ = RequestAccount::decode(&data);
    }

    /// Stop sequences cut streamed text the same however it is split into pieces.
    #[test]
    fn stop_sequences_do_not_depend_on_how_text_is_split(
        text in "[abc✓]{0,24}",
        stops in proptest::collection::vec("[abc✓]{1,4}", 0..4),
        cuts in proptest::collection::vec(0usize..30, 0..6),
    ) {
        use chainference_core::prompt::StopMatcher;
        let run = |pieces: &[&str]| {
            let mut matcher = StopMatcher::new(&stops);
            let mut shown: String = pieces.iter().map(|p| matcher.push(p)).collect();
            shown.push_str(&matcher.finish());
            (shown, matcher.is_stopped())
        };
        let mut bounds: Vec<usize> = cuts.iter().map(|c| *c % (text.len() + 1)).filter(|c| text.is_char_boundary(*c)).collect();
        bounds.push(0);
        bounds.push(text.len());
        bounds.sort_unstable();
        bounds.dedup();
        let pieces: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        prop_assert_eq!(run(&pieces), run(&[text.as_str()]));
        // One character at a time, as a model streams.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        prop_assert_eq!(run(&chars), run(&[text.as_str()]));
    }

    /// Any prefix of valid data decodes as Truncated (or another precise error), never Ok with
    /// garbage, and valid data with a byte appended is rejected.
    #[test]
    fn truncation_and_trailing_bytes_are_rejected(cut in 0usize..400, extra in any::<u8>()) {
        let data = sample_request_account();
        let cut = cut.min(data.len() - 1);
        prop_assert!(RequestAccount::decode(&data[..cut]).is_err());
        let mut longer = data.clone();
        longer.push(extra);
        prop_assert_eq!(RequestAccount::decode(&longer), Err(Error::TrailingBytes));
    }

    #[test]
    fn open_request_round_trips(
        nonce in any::<u64>(), stake in any::<u64>(), max_tokens in any::<u32>(), timeout in any::<u32>(),
        min_completed in any::<u64>(), min_success_bps in any::<u16>(), n in 1usize..=8,
        chunk in proptest::collection::vec(any::<u8>(), 0..600), prompt_len in any::<u32>(),
    ) {
        let allowed: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
        let args = OpenRequestArgs {
            nonce, bump: 254, stake, max_price_per_mtok: stake ^ nonce, max_tokens, timeout, min_completed, min_success_bps,
            response_key: &[7; 32], commitment: &[8; 32], model: "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1",
            allowed: &allowed, prompt_len, prompt_chunk: &chunk,
        };
        let ix = Instruction::OpenRequest(args);
        let data = ix.encode().unwrap();
        prop_assert_eq!(Instruction::decode(&data).unwrap(), ix);
        for cut in [1, data.len() / 2, data.len() - 1] {
            prop_assert!(Instruction::decode(&data[..cut]).is_err());
        }
    }

    /// Random event sequences: whatever succeeds, the escrow pays out exactly the stake once the
    /// request is terminal (less the server's share it still holds), and never more.
    #[test]
    fn lifecycle_conserves_the_escrow(events in proptest::collection::vec((0u8..11, 0i64..700, any::<u16>()), 1..40)) {
        let params = ConfigParams::default();
        let new = NewRequest { client: [1; 32], nonce: 0, bump: 255, stake: 5_000_000, max_price_per_mtok: 40_000_000,
            max_tokens: 1_000, timeout: 300, min_completed: 0, min_success_bps: 0, allowed_count: 2, prompt_len: 64 };
        let mut req = new.create(&params, 0).unwrap();
        let allowed = [[9u8; 32], [10u8; 32]];
        let mut paid = 0u64;
        let mut locks = 0i64;
        let mut now = 0i64;
        for (kind, dt, x) in events {
            now += dt;
            let server = &allowed[usize::from(x % 2)];
            let view = ServerView { authority: server, active: true, stats: ServerStats::default(), price_for_model: Some(u64::from(x) * 1_000) };
            let event = match kind {
                0 => Event::PromptWritten { signer: &[1; 32], offset: req.prompt_written, len: u32::from(x % 65).max(1) },
                1 => Event::Cancel { signer: &[1; 32] },
                2 => Event::Lock { server: view, allowed: &allowed, fee_bps: 1_000 },
                3 => Event::Append { server, response_finished: false },
                4 => Event::Release { signer: if x % 3 == 0 { &[1; 32] } else { server }, lock_window: 30 },
                5 => Event::Complete { server, tokens: u64::from(x % 2_000), response_finished: true,
                    response_len: u32::from(x % 1_500), min_counted_fee: 100 },
                6 => Event::Reclaim,
                7 => Event::Flag { signer: &[1; 32], flag_window: 60, flag_refund_bps: x % 10_001, refund: x % 2 == 0 },
                8 => Event::Claim { signer: server, flag_window: 60 },
                9 => Event::Decline { server: if x % 5 == 0 { &[1; 32] } else { server }, allowed: &allowed,
                    reasons: DeclineReasons((x >> 8) as u8) },
                _ => Event::Close { signer: &[1; 32], retention: 120 },
            };
            let before = req;
            match req.apply(event, now) {
                Ok(fx) => {
                    paid += fx.escrow_out().unwrap();
                    locks += i64::from(fx.server.lock_change);
                    prop_assert!(paid <= new.stake);
                    prop_assert!((0..=1).contains(&locks));
                    prop_assert_eq!(locks == 1, req.status == RequestStatus::Locked);
                    // Every reachable header is a valid account header (declines name used slots).
                    let mut bytes = [0u8; RequestHeader::LEN];
                    req.encode_into(&mut bytes).unwrap();
                    prop_assert_eq!(RequestHeader::decode(&bytes).unwrap(), req);
                }
                Err(_) => prop_assert_eq!(req, before, "a failed step changed the header"),
            }
        }
        if req.status.is_terminal() {
            prop_assert_eq!(paid + req.server_due, new.stake);
        } else {
            prop_assert_eq!(paid, 0);
        }
    }
}

fn sample_request_account() -> Vec<u8> {
    let model = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
    let prompt_len = 40;
    let size = RequestHeader::account_size(model.len(), prompt_len);
    let mut data = vec![0u8; size];
    let header = NewRequest {
        client: [1; 32],
        nonce: 3,
        bump: 255,
        stake: 9,
        max_price_per_mtok: 9,
        max_tokens: 9,
        timeout: 0,
        min_completed: 0,
        min_success_bps: 0,
        allowed_count: 1,
        prompt_len: prompt_len as u32,
    }
    .create(&ConfigParams::default(), 5)
    .unwrap();
    header.encode_into(&mut data).unwrap();
    data[RequestHeader::ALLOWED_OFFSET..RequestHeader::ALLOWED_OFFSET + 32].copy_from_slice(&[4; 32]);
    let tail = RequestHeader::TAIL_OFFSET;
    data[tail..tail + 4].copy_from_slice(&(model.len() as u32).to_le_bytes());
    data[tail + 4..tail + 4 + model.len()].copy_from_slice(model.as_bytes());
    assert!(RequestAccount::decode(&data).is_ok());
    data
}

#[test]
fn offers_reject_duplicates_bad_models_and_counts() {
    assert!(encode_offers(&[("a/b:Q8_0", 1)]).is_ok());
    assert_eq!(encode_offers(&[("a/b:Q8_0", 1), ("a/b:Q8_0", 2)]), Err(Error::DuplicateOffer));
    assert_eq!(encode_offers(&[("a/b:q8_0", 1)]), Err(Error::InvalidModelId), "non-canonical quant");
    assert_eq!(encode_offers(&[]), Err(Error::InvalidOfferCount));
    let nine: Vec<(String, u64)> = (0..9).map(|i| (format!("a/m{i}"), 1)).collect();
    let nine: Vec<(&str, u64)> = nine.iter().map(|(m, p)| (m.as_str(), *p)).collect();
    assert_eq!(encode_offers(&nine), Err(Error::InvalidOfferCount));
}

#[test]
fn instruction_decoder_rejects_bad_tags_and_trailing_bytes() {
    assert_eq!(Instruction::decode(&[]), Err(Error::UnknownInstruction));
    assert_eq!(Instruction::decode(&[20]), Err(Error::UnknownInstruction));
    assert_eq!(Instruction::decode(&[19]), Err(Error::Truncated), "DeclineRequest needs its reasons");
    assert_eq!(Instruction::decode(&[19, 1, 0]), Err(Error::TrailingBytes));
    assert_eq!(Instruction::decode(&[255]), Err(Error::UnknownInstruction));
    assert_eq!(Instruction::decode(&[9, 0]), Err(Error::TrailingBytes));
    assert_eq!(Instruction::decode(&[12, 1, 2]), Err(Error::Truncated));
    assert_eq!(Instruction::decode(&[5, 2]), Err(Error::InvalidTag));
}

// ---------------------------------------------------------------------------------------------
// Envelope: tampering of every kind fails with an error, never garbage.
// ---------------------------------------------------------------------------------------------

struct Fixture {
    request: [u8; 32],
    servers: Vec<ServerKeyPair>,
    secret: ClientSecret,
    sealed: Vec<u8>,
}

fn fixture(prompt: &[u8]) -> Fixture {
    let request = [42u8; 32];
    let servers: Vec<ServerKeyPair> = (0..3u8).map(|i| ServerKeyPair::from_seed(&[i + 1; 32])).collect();
    let secret = ClientSecret::from_wallet_signature(&[5; 64]);
    let keys = secret.request_keys(&request);
    let pks: Vec<[u8; 32]> = servers.iter().map(ServerKeyPair::public_key).collect();
    let sealed = envelope::seal_prompt(&request, &pks, &keys.prompt_public_key(), prompt).unwrap();
    Fixture { request, servers, secret, sealed }
}

#[test]
fn every_recipient_opens_and_nobody_else() {
    let f = fixture(b"the prompt");
    assert_eq!(f.sealed.len(), envelope::envelope_len(3, 10));
    for (i, s) in f.servers.iter().enumerate() {
        assert_eq!(&*envelope::open_prompt(&f.sealed, &f.request, i as u8, s.secret()).unwrap(), b"the prompt");
    }
    let keys = f.secret.request_keys(&f.request);
    assert_eq!(&*keys.open_own_prompt(&f.sealed, &f.request).unwrap(), b"the prompt");
    // A server's key on another slot, an outsider, another request address: all fail.
    assert_eq!(envelope::open_prompt(&f.sealed, &f.request, 1, f.servers[0].secret()), Err(Error::OpenFailed));
    let outsider = ServerKeyPair::from_seed(&[99; 32]);
    assert_eq!(envelope::open_prompt(&f.sealed, &f.request, 0, outsider.secret()), Err(Error::OpenFailed));
    assert_eq!(envelope::open_prompt(&f.sealed, &[43; 32], 0, f.servers[0].secret()), Err(Error::OpenFailed));
    assert_eq!(envelope::open_prompt(&f.sealed, &f.request, 4, f.servers[0].secret()), Err(Error::NoSuchRecipient));
    // Another client's secret cannot read the history.
    let other = ClientSecret::from_wallet_signature(&[6; 64]).request_keys(&f.request);
    assert_eq!(other.open_own_prompt(&f.sealed, &f.request).map(|_| ()), Err(Error::OpenFailed));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_flipped_bit_fails(pos in 0usize..300, bit in 0u8..8) {
        let f = fixture(b"a prompt of some length for the body");
        let mut bad = f.sealed.clone();
        let pos = pos % bad.len();
        bad[pos] ^= 1 << bit;
        // Slot 0's opener reads the header, its own slot and the body: any flip there fails; a
        // flip in another slot fails too, because the body's aad covers every slot.
        prop_assert!(envelope::open_prompt(&bad, &f.request, 0, f.servers[0].secret()).is_err());
    }
}

#[test]
fn swapped_slots_fail() {
    let f = fixture(b"p");
    let mut swapped = f.sealed.clone();
    let (a, b) = (2, 2 + envelope::SLOT_LEN);
    let slot0: Vec<u8> = swapped[a..b].to_vec();
    let slot1: Vec<u8> = swapped[b..b + envelope::SLOT_LEN].to_vec();
    swapped[a..b].copy_from_slice(&slot1);
    swapped[b..b + envelope::SLOT_LEN].copy_from_slice(&slot0);
    assert_eq!(envelope::open_prompt(&swapped, &f.request, 1, f.servers[0].secret()), Err(Error::OpenFailed));
    assert_eq!(envelope::open_prompt(&swapped, &f.request, 0, f.servers[1].secret()), Err(Error::OpenFailed));
}

fn stream(parts: &[&str]) -> (ClientSecret, [u8; 32], [u8; 32], Vec<Vec<u8>>) {
    let secret = ClientSecret::from_wallet_signature(&[8; 64]);
    let (request, server) = ([1u8; 32], [2u8; 32]);
    let keys = secret.request_keys(&request);
    let mut sealer = ResponseSealer::new(&keys.response_public_key(), &request, &server).unwrap();
    let chunks =
        parts.iter().enumerate().map(|(i, p)| sealer.seal_chunk(p.as_bytes(), i + 1 == parts.len()).unwrap()).collect();
    (secret, request, server, chunks)
}

#[test]
fn response_stream_opens_in_order_only() {
    let (secret, request, server, chunks) = stream(&["Hello", ", ", "world", "!"]);
    let keys = secret.request_keys(&request);
    let all = keys.response_opener(&request, &server).open_all(chunks.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(&*all, b"Hello, world!");

    // Reordered.
    let mut o = keys.response_opener(&request, &server);
    o.open_chunk(&chunks[0]).unwrap();
    assert_eq!(o.open_chunk(&chunks[2]).map(|_| ()), Err(Error::OpenFailed));
    // ...and the opener still accepts the right next chunk after a bad one.
    assert_eq!(&*o.open_chunk(&chunks[1]).unwrap().0, b", ");

    // Dropped chunk: the next one fails.
    let mut o = keys.response_opener(&request, &server);
    o.open_chunk(&chunks[0]).unwrap();
    assert!(o.open_chunk(&chunks[3]).is_err());

    // Truncated: no final chunk.
    let truncated = keys.response_opener(&request, &server).open_all(chunks[..3].iter().map(Vec::as_slice));
    assert_eq!(truncated.map(|_| ()), Err(Error::StreamTruncated));

    // Extra chunk after the final one.
    let mut o = keys.response_opener(&request, &server);
    for c in &chunks {
        o.open_chunk(c).unwrap();
    }
    assert_eq!(o.open_chunk(&chunks[0]).map(|_| ()), Err(Error::StreamFinished));

    // Tampered chunk, wrong server id, wrong key.
    let mut bad = chunks[1].clone();
    bad[3] ^= 0x40;
    let mut o = keys.response_opener(&request, &server);
    o.open_chunk(&chunks[0]).unwrap();
    assert_eq!(o.open_chunk(&bad).map(|_| ()), Err(Error::OpenFailed));
    let mut o = keys.response_opener(&request, &[3; 32]);
    assert_eq!(o.open_chunk(&chunks[0]).map(|_| ()), Err(Error::OpenFailed));
    let other = ClientSecret::from_wallet_signature(&[9; 64]).request_keys(&request);
    assert_eq!(other.response_opener(&request, &server).open_chunk(&chunks[0]).map(|_| ()), Err(Error::OpenFailed));
}

#[test]
fn commitments_match_only_for_the_same_prompt_and_model() {
    let s = ClientSecret::from_wallet_signature(&[1; 64]);
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let m = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
    assert_ne!(s.commitment(&a, m, b"x"), s.commitment(&b, m, b"x"), "unlinkable across requests");
    let d = s.prompt_digest(m, b"x");
    assert_eq!(envelope::commitment(&s.commitment_salt(&a), &d), s.commitment(&a, m, b"x"));
    assert_ne!(s.prompt_digest(m, b"y"), d);
    assert_ne!(s.prompt_digest("a/b", b"x"), d);
    assert_ne!(ClientSecret::from_wallet_signature(&[2; 64]).prompt_digest(m, b"x"), d, "keyed per client");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 50_000, ..ProptestConfig::default() })]

    /// The program's one-pass validator accepts exactly the canonical ids the parser accepts.
    #[test]
    fn canonical_check_agrees_with_the_parser(text in "[a-cA-C0-2._/@:-]{0,24}") {
        let by_parser = ModelId::parse(&text).is_ok_and(|m| m.quant().is_none_or(|q| !q.bytes().any(|c| c.is_ascii_lowercase())));
        prop_assert_eq!(chainference_core::model::check_canonical_model(&text).is_ok(), by_parser, "{}", text);
    }

    /// Both share one scanner, so check that scanner against the grammar written the obvious way
    /// (split at the separators, check each part): same verdict, same parts.
    #[test]
    fn the_model_id_grammar_matches_a_split_based_reference(text in "[a-cA-C0-2._/@:-]{0,24}") {
        let parsed = ModelId::parse(&text).ok().map(|m| (m.org(), m.name(), m.revision(), m.quant()));
        prop_assert_eq!(parsed, reference_model_id(&text), "{}", text);
    }
}

/// `org/name[@revision][:quant]` by splitting: the quant after the first `:`, the revision after
/// the first `@` before it, the org before the first `/` before that.
fn reference_model_id(text: &str) -> Option<(&str, &str, Option<&str>, Option<&str>)> {
    fn part_ok(part: &str, max: usize) -> bool {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        !part.is_empty()
            && part.len() <= max
            && part.chars().all(ok_char)
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
            && !part.contains("..")
    }
    if text.is_empty() || text.len() > chainference_core::model::MAX_MODEL_ID_LEN {
        return None;
    }
    let (rest, quant) = match text.split_once(':') {
        Some((rest, q)) => (rest, Some(q)),
        None => (text, None),
    };
    let (repo, revision) = match rest.split_once('@') {
        Some((repo, r)) => (repo, Some(r)),
        None => (rest, None),
    };
    let (org, name) = repo.split_once('/')?;
    let max_part = chainference_core::model::MAX_MODEL_PART_LEN;
    if !part_ok(org, max_part) || !part_ok(name, max_part) {
        return None;
    }
    if let Some(r) = revision {
        let ok = !r.is_empty()
            && r.len() <= chainference_core::model::MAX_REVISION_LEN
            && r.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            && !r.starts_with('/')
            && !r.ends_with('/');
        if !ok {
            return None;
        }
    }
    if let Some(q) = quant {
        let ok = !q.is_empty()
            && q.len() <= chainference_core::model::MAX_QUANT_LEN
            && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return None;
        }
    }
    Some((org, name, revision, quant))
}

#[test]
fn model_ids_with_every_part_parse() {
    for ok in ["a/b", "HuggingFaceTB/SmolLM2-135M-Instruct@refs/pr/1:Q4_K_M", "a.b/c_d@v1.0", "a/b:Q8_0", "A-1/b.c-d_e"]
    {
        assert!(ModelId::parse(ok).is_ok(), "{ok}");
        assert!(chainference_core::model::check_canonical_model(ok).is_ok(), "{ok}");
    }
}

/// A decline sets its server's slot and adds its reasons; the request says when every allowed
/// server declined; refusals are precise and leave the header unchanged.
#[test]
fn declines_mark_slots_until_every_server_declined() {
    let params = ConfigParams::default();
    let new = NewRequest {
        client: [1; 32],
        nonce: 0,
        bump: 255,
        stake: 5_000_000,
        max_price_per_mtok: 40_000_000,
        max_tokens: 1_000,
        timeout: 300,
        min_completed: 0,
        min_success_bps: 0,
        allowed_count: 3,
        prompt_len: 4,
    };
    let allowed = [[9u8; 32], [10u8; 32], [11u8; 32]];
    let mut req = new.create(&params, 0).unwrap();
    let decline = |server, reasons| Event::Decline { server, allowed: &allowed, reasons };
    // Not yet published.
    assert_eq!(req.apply(decline(&allowed[0], DeclineReasons::PROMPT_TOO_LARGE), 1), Err(Error::WrongState));
    req.apply(Event::PromptWritten { signer: &[1; 32], offset: 0, len: 4 }, 1).unwrap();
    let before = req;
    assert_eq!(req.apply(decline(&allowed[0], DeclineReasons::empty()), 2), Err(Error::NoDeclineReason));
    assert_eq!(req.apply(decline(&[12; 32], DeclineReasons::PROMPT_TOO_LARGE), 2), Err(Error::ServerNotAllowed));
    assert_eq!(req.apply(decline(&allowed[0], DeclineReasons::PROMPT_TOO_LARGE), 301), Err(Error::DeadlinePassed));
    assert_eq!(req, before);

    let fx = req.apply(decline(&allowed[2], DeclineReasons::CLIENT_EXCLUDED), 2).unwrap();
    assert_eq!(fx, chainference_core::lifecycle::Effects::default(), "a decline moves nothing");
    assert_eq!(req.apply(decline(&allowed[2], DeclineReasons::UNREADABLE), 3), Err(Error::AlreadyDeclined));
    req.apply(decline(&allowed[0], DeclineReasons::BUDGET_TOO_SMALL), 3).unwrap();
    assert!(req.declined_by(0) && !req.declined_by(1) && req.declined_by(2));
    assert!(!req.declined_by_all());
    // A server that declined may still lock; a locked request takes no declines.
    let view =
        ServerView { authority: &allowed[1], active: true, stats: ServerStats::default(), price_for_model: Some(1) };
    let mut locked = req;
    locked.apply(Event::Lock { server: view, allowed: &allowed, fee_bps: 0 }, 4).unwrap();
    assert_eq!(locked.apply(decline(&allowed[1], DeclineReasons::UNREADABLE), 4), Err(Error::WrongState));

    req.apply(decline(&allowed[1], DeclineReasons::BUDGET_TOO_SMALL), 4).unwrap();
    assert!(req.declined_by_all());
    assert_eq!(req.decline_reasons(), DeclineReasons::CLIENT_EXCLUDED.union(DeclineReasons::BUDGET_TOO_SMALL));
    assert_eq!(req.decline_reasons().to_string(), "stake or max_tokens too small for an answer, client not served");
    // The client cancels at once and gets the whole stake back.
    let fx = req.apply(Event::Cancel { signer: &[1; 32] }, 5).unwrap();
    assert_eq!(fx.to_client, new.stake);
}

#[test]
fn an_allow_list_count_out_of_range_is_refused_not_overflowed() {
    let mut data = sample_request_account();
    data[RequestHeader::DECLINED_OFFSET] = 1;
    data[RequestHeader::DECLINED_OFFSET + 1] = 1;
    for count in 9..=255u8 {
        data[5] = count;
        assert_eq!(RequestHeader::decode(&data).err(), Some(Error::InvalidTag), "allowed_count {count}");
    }
}
