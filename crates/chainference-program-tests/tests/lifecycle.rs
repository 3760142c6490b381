//! The happy path of every instruction against the built `.so`, each asserting lamport
//! conservation: the sum over every touched account changes only by the fees the runtime burned.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use chainference_core::builders::{self, ServerProfile};
use chainference_core::envelope::{self, ResponseSealer};
use chainference_core::pricing;
use chainference_core::state::{Config, ConfigParams, RequestStatus};
use chainference_program_tests::*;
use solana_signer::Signer;

/// Asserts that `accounts` hold `before` lamports minus the fees paid since `fees_before`.
fn assert_conserved(bench: &Bench, accounts: &[[u8; 32]], before: u128, fees_before: u64) {
    let after = bench.total(accounts);
    assert_eq!(after + u128::from(bench.fees - fees_before), before, "lamports not conserved");
}

#[test]
fn a_request_lives_its_whole_life_and_every_lamport_is_accounted_for() {
    let mut b = Bench::new();
    b.init_config();
    let cheap = b.server(20_000_000);
    let dear = b.server(30_000_000);
    let client = key(&b.client);
    let treasury = b.program.treasury;
    let spec = b.spec(&[&cheap, &dear]);
    let all = |b: &Bench, req: &TestRequest| {
        vec![
            client,
            cheap.authority(),
            dear.authority(),
            treasury,
            req.address,
            req.response,
            b.program.server(&cheap.authority()),
        ]
    };

    let (req, ixs) = b.open_ixs(&b.client.insecure_clone(), &spec, usize::MAX);
    let accounts = all(&b, &req);
    let (before, fees0) = (b.total(&accounts), b.fees);
    let client_before = b.lamports(&client);
    assert_eq!(ixs.len(), 1, "the prompt fits one transaction");
    b.ok(ixs, &[&b.client.insecure_clone()]);
    let header = b.request(&req.address);
    assert_eq!(header.status, RequestStatus::Open);
    assert_eq!(header.deadline, T0 + 300);
    let request_rent = b.lamports(&req.address) - req.stake;
    assert_eq!(request_rent, b.svm.minimum_balance_for_rent_exemption(b.data(&req.address).len()));

    // The server opens the prompt from the chain.
    let on_chain = chainference_core::state::RequestAccount::decode(&b.data(&req.address)).unwrap().prompt.to_vec();
    let opened = envelope::open_prompt(&on_chain, &req.address, 0, cheap.keys.secret()).unwrap();
    assert_eq!(&*opened, &req.prompt[..]);

    // Lock, stream three sealed chunks in three transactions, complete.
    let a = cheap.authority();
    let w = cheap.wallet.insecure_clone();
    b.set_time(T0 + 5);
    b.ok(vec![builders::lock_request(&b.program, &a, &req.address)], &[&w]);
    assert_eq!(b.request(&req.address).status, RequestStatus::Locked);
    assert_eq!(b.server_header(&a).locked_count, 1);
    let keys = b.secret.request_keys(&req.address);
    let mut sealer = ResponseSealer::new(&keys.response_public_key(), &req.address, &a).unwrap();
    let parts = ["The capital", " of France", " is Paris."];
    let refs = b.refs(&req);
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let chunk = sealer.seal_chunk(part.as_bytes(), last).unwrap();
        b.ok(vec![builders::append_response(&b.program, &a, &refs, last, &chunk).unwrap()], &[&w]);
    }
    let chunks = b.response_chunks(&req.response);
    let text = keys.response_opener(&req.address, &a).open_all(chunks.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(String::from_utf8(text.to_vec()).unwrap(), "The capital of France is Paris.");

    let treasury_before = b.lamports(&treasury);
    let server_before = b.lamports(&a);
    let tokens = 300;
    let meta = b.ok(vec![builders::complete_request(&b.program, &a, &refs, tokens)], &[&w]);
    let s = pricing::settle(tokens, 20_000_000, req.stake, 1_000).unwrap();
    assert_eq!((s.cost, s.fee, s.server), (6_000, 600, 5_400));
    let h = b.request(&req.address);
    assert_eq!(
        (h.status, h.tokens, h.cost, h.fee, h.server_due, h.fee_bps, h.price_per_mtok),
        (RequestStatus::Completed, tokens, s.cost, s.fee, s.server, 1_000, 20_000_000)
    );
    assert_eq!(b.lamports(&treasury) - treasury_before, s.fee);
    assert_eq!(server_before - b.lamports(&a), meta.fee, "the server's share is held, not paid");
    assert_eq!(b.lamports(&req.address), request_rent + s.server, "rent and the held share are left");
    let stats = b.server_header(&a);
    assert_eq!(
        (stats.stats.completed, stats.stats.counted, stats.stats.fees, stats.locked_count),
        (1, 1, 600, 0),
        "a fee of 600 >= min_counted_fee 100 counts"
    );

    // Flag within the window: a mark on the server, no lamport back (a dispute would take
    // part of the share back instead, and leave no mark).
    let client_before_flag = b.lamports(&client);
    b.ok(vec![builders::flag_response(&b.program, &client, &req.address, &a)], &[&b.client.insecure_clone()]);
    assert_eq!(client_before_flag - b.lamports(&client), 5_000, "a flag pays the flagger nothing");
    assert_eq!(b.request(&req.address).server_due, s.server);
    assert_eq!(b.server_header(&a).stats.flagged, 1);
    assert_eq!(b.server_header(&a).stats.success_bps(), 0);
    // Close: the held share and the response's rent to the server, the request's rent to the
    // client.
    let response_rent = b.lamports(&req.response);
    let server_before_close = b.lamports(&a);
    b.ok(vec![builders::close_request(&b.program, &client, &refs, &a)], &[&b.client.insecure_clone()]);
    assert!(!b.exists(&req.address) && !b.exists(&req.response), "both accounts closed");
    assert_eq!(
        b.lamports(&a) - server_before_close,
        response_rent + s.server,
        "the server's rent and its share came back"
    );
    assert_conserved(&b, &accounts, before, fees0);
    // The client paid exactly the cost plus its own transaction fees (open, flag, close).
    assert_eq!(client_before - b.lamports(&client), s.cost + 3 * 5_000);
}

#[test]
fn lock_append_complete_compose_in_one_transaction() {
    let mut b = Bench::new();
    b.init_config();
    let server = b.server(1_000_000);
    let spec = b.spec(&[&server]);
    let req = b.open(&spec);
    let accounts = vec![key(&b.client), server.authority(), b.program.treasury, req.address, req.response];
    let (before, fees0) = (b.total(&accounts), b.fees);
    let meta = b.serve(&server, &req, 42);
    assert_eq!(meta.fee, 5_000, "one signature");
    assert_eq!(b.request(&req.address).status, RequestStatus::Completed);
    assert_eq!(b.request(&req.address).cost, 42);
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn a_large_prompt_uploads_in_chunks_and_opens_only_when_complete() {
    let mut b = Bench::new();
    b.init_config();
    let server = b.server(1_000_000);
    let mut spec = b.spec(&[&server]);
    spec.prompt = vec![b'x'; 3_000];
    let client = b.client.insecure_clone();
    let (req, ixs) = b.open_ixs(&client, &spec, 700);
    assert!(ixs.len() >= 5);
    let accounts = vec![key(&client), server.authority(), req.address];
    let (before, fees0) = (b.total(&accounts), b.fees);
    let mut ixs = ixs.into_iter();
    b.ok(vec![ixs.next().unwrap()], &[&client]);
    assert_eq!(b.request(&req.address).status, RequestStatus::Draft);
    // No server may lock a draft.
    let w = server.wallet.insecure_clone();
    b.fails(
        vec![builders::lock_request(&b.program, &server.authority(), &req.address)],
        &[&w],
        chainference_core::Error::WrongState,
    );
    for ix in ixs {
        b.set_time(b.now() + 1);
        b.ok(vec![ix], &[&client]);
    }
    let h = b.request(&req.address);
    assert_eq!(h.status, RequestStatus::Open);
    assert_eq!(h.deadline, b.now() + 300, "the timeout runs from publication");
    let on_chain = chainference_core::state::RequestAccount::decode(&b.data(&req.address)).unwrap().prompt.to_vec();
    assert_eq!(on_chain, req.envelope);
    assert_eq!(&*envelope::open_prompt(&on_chain, &req.address, 0, server.keys.secret()).unwrap(), &spec.prompt[..]);
    b.ok(vec![builders::lock_request(&b.program, &server.authority(), &req.address)], &[&w]);
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn cancel_refunds_the_stake_and_close_the_rent() {
    let mut b = Bench::new();
    b.init_config();
    let server = b.server(1_000_000);
    let spec = b.spec(&[&server]);
    let client = b.client.insecure_clone();
    let client_before = b.lamports(&key(&client));
    let req = b.open(&spec);
    let refs = b.refs(&req);
    b.ok(vec![builders::cancel_request(&b.program, &key(&client), &req.address)], &[&client]);
    assert_eq!(b.request(&req.address).status, RequestStatus::Cancelled);
    b.ok(vec![builders::close_request(&b.program, &key(&client), &refs, &key(&client))], &[&client]);
    assert!(!b.exists(&req.address));
    assert_eq!(client_before - b.lamports(&key(&client)), 3 * 5_000, "only fees were spent");
}

#[test]
fn every_allowed_server_declines_and_the_client_cancels_and_closes_in_one_transaction() {
    use chainference_core::state::DeclineReasons;
    let mut b = Bench::new();
    b.init_config();
    let first = b.server(1_000_000);
    let second = b.server(1_000_000);
    let spec = b.spec(&[&first, &second]);
    let client = b.client.insecure_clone();
    let accounts = vec![key(&client), first.authority(), second.authority(), b.program.treasury];
    let (before, fees0) = (b.total(&accounts), b.fees);
    let client_before = b.lamports(&key(&client));
    let req = b.open(&spec);

    let decline = |b: &Bench, server: &TestServer, reasons| {
        builders::decline_request(&b.program, &server.authority(), &req.address, reasons)
    };
    let ix = decline(&b, &second, DeclineReasons::PROMPT_TOO_LARGE);
    b.ok(vec![ix], &[&second.wallet.insecure_clone()]);
    let header = b.request(&req.address);
    assert_eq!((header.status, header.declined, header.decline_reasons), (RequestStatus::Open, 0b10, 1));
    assert!(!header.declined_by_all());
    let ix = decline(&b, &first, DeclineReasons::CLIENT_EXCLUDED.union(DeclineReasons::TOO_LITTLE_TIME));
    b.ok(vec![ix], &[&first.wallet.insecure_clone()]);
    let header = b.request(&req.address);
    assert!(header.declined_by_all());
    assert_eq!(header.decline_reasons().to_string(), "prompt too large, too little time left, client not served");

    // The client gives up at once: cancel and close in one transaction, one signature.
    let refs = b.refs(&req);
    let cancel = builders::cancel_request(&b.program, &key(&client), &req.address);
    let close = builders::close_request(&b.program, &key(&client), &refs, &key(&client));
    b.ok(vec![cancel, close], &[&client]);
    assert!(!b.exists(&req.address));
    assert_eq!(client_before - b.lamports(&key(&client)), 2 * 5_000, "the open's and the give-up's fees only");
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn reclaim_after_the_deadline_refunds_all_and_counts_the_timeout() {
    let mut b = Bench::new();
    b.init_config();
    let server = b.server(1_000_000);
    let spec = b.spec(&[&server]);
    let req = b.open(&spec);
    let a = server.authority();
    let w = server.wallet.insecure_clone();
    b.ok(vec![builders::lock_request(&b.program, &a, &req.address)], &[&w]);
    let refs = b.refs(&req);
    b.ok(vec![builders::append_response(&b.program, &a, &refs, false, b"partial").unwrap()], &[&w]);
    let cranker = b.wallet();
    let accounts = vec![key(&b.client), a, req.address, req.response, b.program.server(&a), key(&cranker)];
    let (before, fees0) = (b.total(&accounts), b.fees);
    let client_before = b.lamports(&key(&b.client));
    b.set_time(T0 + 300);
    // Anyone may crank the reclaim; the stake goes to the client.
    b.ok(vec![builders::reclaim_request(&b.program, &req.address, &key(&b.client), Some(&a))], &[&cranker]);
    assert_eq!(b.request(&req.address).status, RequestStatus::Expired);
    assert_eq!(b.lamports(&key(&b.client)) - client_before, req.stake);
    let h = b.server_header(&a);
    assert_eq!((h.stats.timed_out, h.locked_count), (1, 0));
    // The partial response's rent goes back to the server when the request closes.
    let response_rent = b.lamports(&req.response);
    let server_before = b.lamports(&a);
    b.ok(vec![builders::close_request(&b.program, &key(&b.client), &refs, &a)], &[&b.client.insecure_clone()]);
    assert_eq!(b.lamports(&a) - server_before, response_rent);
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn release_hands_the_request_to_another_server() {
    let mut b = Bench::new();
    b.init_config();
    let failing = b.server(1_000_000);
    let backup = b.server(2_000_000);
    let spec = b.spec(&[&failing, &backup]);
    let req = b.open(&spec);
    let (a, w) = (failing.authority(), failing.wallet.insecure_clone());
    let accounts = vec![key(&b.client), a, backup.authority(), b.program.treasury, req.address, req.response];
    let (before, fees0) = (b.total(&accounts), b.fees);
    let refs = b.refs(&req);
    b.ok(vec![builders::lock_request(&b.program, &a, &req.address)], &[&w]);
    b.ok(vec![builders::append_response(&b.program, &a, &refs, false, b"half an answ").unwrap()], &[&w]);
    b.ok(vec![builders::release_request(&b.program, &a, &req.address, &req.response)], &[&w]);
    assert!(!b.exists(&req.response), "the partial response is discarded");
    let h = b.request(&req.address);
    assert_eq!((h.status, h.release_count, h.locked_by), (RequestStatus::Open, 1, [0; 32]));
    assert_eq!(b.server_header(&a).stats.released, 1);
    assert_eq!(b.server_header(&a).stats.success_bps(), 0, "a release counts against the server");
    b.serve(&backup, &req, 100);
    let h = b.request(&req.address);
    assert_eq!((h.status, h.locked_by, h.cost), (RequestStatus::Completed, backup.authority(), 200));
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn compare_counts_both_servers_and_the_preferred_one() {
    let mut b = Bench::new();
    b.init_config();
    // 10 tokens at 100,000,000 per Mtok: a cost of 1,000 and a fee of 100, the least that counts.
    let s1 = b.server(100_000_000);
    let s2 = b.server(100_000_000);
    let spec1 = b.spec(&[&s1]);
    let spec2 = b.spec(&[&s2]);
    let r1 = b.open(&spec1);
    let r2 = b.open(&spec2);
    b.serve(&s1, &r1, 10);
    b.serve(&s2, &r2, 10);
    let client = key(&b.client);
    let (a1, a2) = (s1.authority(), s2.authority());
    let ix = b.compare_ix([(&r1, &s1), (&r2, &s2)], 1);
    let accounts = vec![client, r1.address, r2.address, b.program.server(&a1), b.program.server(&a2)];
    assert_eq!((b.request(&r1.address).fee, b.request(&r2.address).fee), (100, 100));
    let (before, fees0) = (b.total(&accounts), b.fees);
    b.ok(vec![ix], &[&b.client.insecure_clone()]);
    let (h1, h2) = (b.server_header(&a1), b.server_header(&a2));
    assert_eq!((h1.stats.comparisons, h1.stats.preferred), (1, 0));
    assert_eq!((h2.stats.comparisons, h2.stats.preferred), (1, 1));
    assert_eq!(h2.stats.preference_bps(), Some(10_000));
    assert!(b.request(&r1.address).compared() && b.request(&r2.address).compared());
    assert!(b.request(&r2.address).preferred() && !b.request(&r1.address).preferred(), "the winner is marked");
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn servers_update_deactivate_and_close() {
    let mut b = Bench::new();
    b.init_config();
    let s = b.server(1_000_000);
    let a = s.authority();
    let w = s.wallet.insecure_clone();
    let server_account = b.program.server(&a);
    let accounts = vec![a, server_account];
    let (before, fees0) = (b.total(&accounts), b.fees);
    let size0 = b.data(&server_account).len();
    // Grow: two offers and an endpoint; the authority pays the extra rent.
    let pk = [9u8; 32];
    let offers = [(MODEL, 5_000_000), ("HuggingFaceTB/SmolLM2-360M-Instruct", 9_000_000)];
    let profile = ServerProfile { hpke_key: &pk, endpoint: "https://a.example/stream", offers: &offers };
    b.ok(vec![builders::update_server(&b.program, &a, &profile).unwrap()], &[&w]);
    let data = b.data(&server_account);
    assert!(data.len() > size0);
    assert_eq!(b.lamports(&server_account), b.svm.minimum_balance_for_rent_exemption(data.len()));
    let acc = chainference_core::state::ServerAccount::decode(&data).unwrap();
    assert_eq!(
        (acc.header.hpke_key, acc.endpoint, acc.offers.price_of(MODEL)),
        (pk, "https://a.example/stream", Some(5_000_000))
    );
    // Shrink back: the excess rent is refunded.
    let profile = ServerProfile { hpke_key: &pk, endpoint: "", offers: &offers[..1] };
    b.ok(vec![builders::update_server(&b.program, &a, &profile).unwrap()], &[&w]);
    assert_eq!(b.data(&server_account).len(), size0);
    assert_eq!(b.lamports(&server_account), b.svm.minimum_balance_for_rent_exemption(size0));
    b.ok(vec![builders::set_server_active(&b.program, &a, false)], &[&w]);
    assert!(!b.server_header(&a).active());
    b.ok(vec![builders::set_server_active(&b.program, &a, true)], &[&w]);
    assert!(b.server_header(&a).active());
    // Close retires: the offers and endpoint go with their rent, the header (reputation) stays.
    b.ok(vec![builders::close_server(&b.program, &a)], &[&w]);
    let retired_data = b.data(&server_account);
    let retired = chainference_core::state::ServerAccount::decode(&retired_data).unwrap();
    assert!(retired.header.retired() && !retired.header.active() && retired.offers.is_empty());
    assert_eq!(b.data(&server_account).len(), chainference_core::state::ServerHeader::LEN);
    assert_eq!(
        b.lamports(&server_account),
        b.svm.minimum_balance_for_rent_exemption(chainference_core::state::ServerHeader::LEN)
    );
    // Registering again revives it in place.
    b.ok(vec![builders::register_server(&b.program, &a, &profile).unwrap()], &[&w]);
    let revived = b.server_header(&a);
    assert!(revived.active() && !revived.retired());
    assert_eq!(b.data(&server_account).len(), size0);
    assert_conserved(&b, &accounts, before, fees0);
}

#[test]
fn the_admin_updates_the_config_and_withdraws_fees() {
    let mut b = Bench::new();
    b.init_config();
    let s = b.server(1_000_000_000);
    let mut spec = b.spec(&[&s]);
    spec.max_price_per_mtok = u64::MAX;
    let req = b.open(&spec);
    b.serve(&s, &req, 1_000);
    let fee = b.request(&req.address).fee;
    assert_eq!(fee, 100_000);
    let admin = b.admin.insecure_clone();
    let new_admin = b.wallet();
    let dest = key(&b.wallet());
    let accounts = vec![b.program.treasury, dest, key(&admin)];
    let (before, fees0) = (b.total(&accounts), b.fees);
    b.ok(vec![builders::withdraw_fees(&b.program, &key(&admin), &dest, fee)], &[&admin]);
    assert_eq!(b.lamports(&dest), FUNDS + fee);
    assert_conserved(&b, &accounts, before, fees0);
    let params = ConfigParams { fee_bps: 500, ..ConfigParams::default() };
    b.ok(vec![builders::update_config(&b.program, &key(&admin), params, &key(&new_admin))], &[&admin]);
    let cfg = Config::decode(&b.data(&b.program.config)).unwrap();
    assert_eq!((cfg.params.fee_bps, cfg.admin), (500, key(&new_admin)));
    assert_eq!(new_admin.pubkey().to_bytes(), cfg.admin);
}
