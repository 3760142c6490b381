//! Issue 18's eight attacks written against the v1 program (commit 33e1077), where each succeeds.
//! Evidence for the issue; not built here. To run it:
//!
//! ```text
//! git worktree add /tmp/v1 33e1077 && cp docs/v1-attacks/v1_attacks.rs /tmp/v1/crates/chainference-program-tests/tests/
//! cd /tmp/v1 && cargo xtask build-sbf && CHAINFERENCE_PROGRAM_SO=$PWD/target/deploy/chainference_program.so \
//!     cargo test -p chainference-program-tests --test v1_attacks
//! ```
//!
//! v2 refuses each or makes it worthless: `crates/chainference-program-tests/tests/rejections.rs`, `attack_*`.


#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use chainference_core::builders::{self, ServerProfile};
use chainference_core::envelope::ServerKeyPair;
use chainference_core::state::{ConfigParams, RequestStatus};
use chainference_program_tests::*;

#[test]
fn attack_1_self_dealing_farms_completed() {
    let mut b = Bench::new();
    b.init_config();
    // The client's own wallet registers a server at price 0 and serves its own request.
    let own = b.client.insecure_clone();
    let keys = ServerKeyPair::generate().unwrap();
    let pk = keys.public_key();
    let profile = ServerProfile { hpke_key: &pk, endpoint: "", offers: &[(MODEL, 0)] };
    b.ok(vec![builders::register_server(&b.program, &key(&own), &profile).unwrap()], &[&own]);
    let me = TestServer { wallet: own.insecure_clone(), keys };
    let req = b.open(&b.spec(&[&me]));
    b.serve(&me, &req, 0);
    let h = b.server_header(&key(&own));
    assert_eq!(h.stats.completed, 1, "v1: +1 completed for free, by dealing with yourself");
}

#[test]
fn attack_2_sybil_comparisons_count() {
    let mut b = Bench::new();
    b.init_config();
    let (s1, s2) = (b.server(0), b.server(0));
    let r1 = b.open(&b.spec(&[&s1]));
    let r2 = b.open(&b.spec(&[&s2]));
    b.serve(&s1, &r1, 0);
    b.serve(&s2, &r2, 0);
    let client = b.client.insecure_clone();
    b.ok(vec![b.compare_ix([(&r1, &s1), (&r2, &s2)], 1)], &[&client]);
    assert_eq!(b.server_header(&s2.authority()).stats.preferred, 1, "v1: a free comparison counts");
}

#[test]
fn attack_3_a_lock_can_be_squatted_to_the_deadline() {
    let mut b = Bench::new();
    b.init_config();
    let (squatter, honest) = (b.server(1_000_000), b.server(1_000_000));
    let req = b.open(&b.spec(&[&squatter, &honest]));
    let sw = squatter.wallet.insecure_clone();
    b.ok(vec![builders::lock_request(&b.program, &squatter.authority(), &req.address)], &[&sw]);
    // Minutes later, no chunk: nobody else may release it, and the client may not cancel it.
    b.set_time(T0 + 299);
    let stranger = b.wallet();
    let hw = honest.wallet.insecure_clone();
    let release = builders::release_request(&b.program, &honest.authority(), &req.address, &req.response);
    b.fails(vec![release], &[&hw], chainference_core::Error::NotLockedByServer);
    let client = b.client.insecure_clone();
    b.fails(vec![builders::cancel_request(&b.program, &key(&client), &req.address)], &[&client], chainference_core::Error::WrongState);
    let _ = stranger;
    assert_eq!(b.request(&req.address).status, RequestStatus::Locked);
}

#[test]
fn attack_4_a_one_byte_answer_bills_max_tokens_and_is_paid_at_once() {
    let mut b = Bench::new();
    b.init_config();
    let s = b.server(1_000_000);
    let req = b.open(&b.spec(&[&s]));
    let before = b.lamports(&s.authority());
    let meta = b.serve(&s, &req, 1_000); // "sealed chunk": 12 bytes of answer, 1,000 tokens billed
    let h = b.request(&req.address);
    assert_eq!((h.status, h.tokens), (RequestStatus::Completed, 1_000));
    let rent = b.lamports(&req.response);
    assert_eq!(b.lamports(&s.authority()) + meta.fee + rent - before, h.cost - h.fee, "v1: paid in full at completion");
}

#[test]
fn attack_5_the_server_cannot_take_its_response_rent_back() {
    let mut b = Bench::new();
    b.init_config();
    let s = b.server(1_000_000);
    let req = b.open(&b.spec(&[&s]));
    b.serve(&s, &req, 10);
    // After the flag window only the client may close (the server has no instruction for it).
    b.set_time(T0 + i64::from(ConfigParams::default().flag_window) + 1);
    let refs = b.refs(&req);
    let sw = s.wallet.insecure_clone();
    let close = builders::close_request(&b.program, &s.authority(), &refs, &s.authority());
    b.fails(vec![close], &[&sw], chainference_core::Error::RetentionNotElapsed);
    assert!(b.exists(&req.response), "v1: the response rent stays locked");
}

#[test]
fn attack_6_a_flag_on_a_one_lamport_request_counts() {
    let mut b = Bench::new();
    b.init_config();
    let s = b.server(1_000_000);
    let req = b.open(&b.spec(&[&s]));
    b.serve(&s, &req, 1); // a cost of 1 lamport, fee 0
    let client = b.client.insecure_clone();
    b.ok(vec![builders::flag_response(&b.program, &key(&client), &req.address, &s.authority())], &[&client]);
    assert_eq!(b.server_header(&s.authority()).stats.flagged, 1, "v1: a free flag counts");
}

#[test]
fn attack_7_flag_and_third_party_close_overlap() {
    let mut b = Bench::new();
    b.init_config_with(ConfigParams { retention: 3_600, flag_window: 3_600, ..ConfigParams::default() });
    let s = b.server(1_000_000);
    let req = b.open(&b.spec(&[&s]));
    b.serve(&s, &req, 10);
    let settled = b.request(&req.address).settled_at;
    b.set_time(settled + 3_600);
    // The same second: the client may still flag, and a stranger may already close.
    let stranger = b.wallet();
    let refs = b.refs(&req);
    let close = builders::close_request(&b.program, &key(&stranger), &refs, &s.authority());
    b.ok(vec![close], &[&stranger]);
    assert!(!b.exists(&req.address), "v1: a third party's close front-ran the client's last flag");
}

#[test]
fn attack_8_a_non_canonical_request_bump_is_accepted() {
    let mut b = Bench::new();
    b.init_config();
    let s = b.server(1_000_000);
    let spec = b.spec(&[&s]);
    let client = b.client.insecure_clone();
    let (req, mut ixs) = b.open_ixs(&client, &spec, usize::MAX);
    let nonce_le = req.nonce.to_le_bytes();
    let client_key = key(&client);
    let seeds = chainference_core::pda::request_seeds(&client_key, &nonce_le);
    let canonical = b.program.request(&key(&client), req.nonce).1;
    let other = (0..canonical)
        .rev()
        .find(|bump| chainference_core::pda::create_program_address(&seeds, *bump, &b.program.id).is_some())
        .unwrap();
    let other_address = chainference_core::pda::create_program_address(&seeds, other, &b.program.id).unwrap();
    let data = ixs[0].data.clone();
    let mut decoded = chainference_core::instruction::Instruction::decode(&data).unwrap();
    if let chainference_core::instruction::Instruction::OpenRequest(args) = &mut decoded {
        args.bump = other;
        args.response_bump = b.program.response(&other_address).1;
    }
    ixs[0].data = decoded.encode().unwrap();
    ixs[0].accounts[1].pubkey = other_address;
    b.ok(ixs, &[&client]);
    assert!(b.exists(&other_address), "v1: a second address for one (client, nonce)");
}
