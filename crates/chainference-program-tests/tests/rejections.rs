//! Every rejection, each with its exact error code, against the built `.so`; every failed
//! transaction is checked to have moved no lamport but its fee.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use chainference_core::Error;
use chainference_core::builders::{self, BuiltInstruction, CompareSide, RequestRefs};
use chainference_core::state::{ConfigParams, RequestStatus};
use chainference_program_tests::*;
use solana_account::Account;
use solana_instruction_error::InstructionError;
use solana_transaction_error::TransactionError;

struct World {
    b: Bench,
    s1: TestServer,
    s2: TestServer,
}

/// A bench whose config counts every completion toward reputation (`min_counted_fee` 0), so
/// one-token test requests build it; the attack tests use the default minimum.
fn world() -> World {
    let mut b = Bench::new();
    b.init_config_with(ConfigParams { min_counted_fee: 0, ..ConfigParams::default() });
    let s1 = b.server(1_000_000);
    let s2 = b.server(2_000_000);
    World { b, s1, s2 }
}

fn lock(b: &mut Bench, server: &TestServer, req: &TestRequest) {
    let ix = builders::lock_request(&b.program, &server.authority(), &req.address);
    b.ok(vec![ix], &[&server.wallet.insecure_clone()]);
}

fn watched(w: &World, req: &TestRequest) -> Vec<[u8; 32]> {
    vec![
        key(&w.b.client),
        w.s1.authority(),
        w.s2.authority(),
        w.b.program.treasury,
        req.address,
        req.response,
        w.b.program.server(&w.s1.authority()),
        w.b.program.server(&w.s2.authority()),
    ]
}

/// A request locked by s1 whose stake (500,000 lamports) is below the rent-exempt minimum of an
/// empty wallet (890,880), after its client moved every lamport away; `payer` pays the client's fees.
fn locked_request_of_an_emptied_wallet() -> (World, TestRequest, solana_keypair::Keypair, solana_keypair::Keypair) {
    let mut w = world();
    let mut spec = w.b.spec(&[&w.s1]);
    spec.stake = 500_000;
    let req = w.b.open(&spec);
    lock(&mut w.b, &w.s1, &req);
    let client = w.b.client.insecure_clone();
    let payer = w.b.wallet();
    let all = w.b.lamports(&key(&client));
    w.b.ok(vec![builders::system_transfer(&key(&client), &key(&payer), all)], &[&payer, &client]);
    (w, req, client, payer)
}

fn unsign(mut ix: BuiltInstruction, index: usize) -> BuiltInstruction {
    ix.accounts[index].is_signer = false;
    ix
}

fn replace(mut ix: BuiltInstruction, index: usize, with: [u8; 32]) -> BuiltInstruction {
    ix.accounts[index].pubkey = with;
    ix
}

#[test]
fn missing_signers_are_rejected() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    let stranger = w.b.wallet();
    let client = key(&w.b.client);
    let cancel = unsign(builders::cancel_request(&w.b.program, &client, &req.address), 0);
    w.b.rejects(vec![cancel], &[&stranger], Error::MissingSigner, &acc);
    let lock = unsign(builders::lock_request(&w.b.program, &w.s1.authority(), &req.address), 0);
    w.b.rejects(vec![lock], &[&stranger], Error::MissingSigner, &acc);
    let admin = key(&w.b.admin);
    let update = unsign(builders::update_config(&w.b.program, &admin, ConfigParams::default(), &admin), 0);
    w.b.rejects(vec![update], &[&stranger], Error::MissingSigner, &acc);
}

#[test]
fn declines_are_checked_and_move_nothing() {
    use chainference_core::state::DeclineReasons;
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    let s1 = w.s1.wallet.insecure_clone();
    let s2 = w.s2.wallet.insecure_clone();
    let decline =
        |w: &World, who: &[u8; 32], reasons| builders::decline_request(&w.b.program, who, &req.address, reasons);
    let reason = DeclineReasons::BUDGET_TOO_SMALL;

    let unsigned = unsign(decline(&w, &w.s1.authority(), reason), 0);
    w.b.rejects(vec![unsigned], &[&s2], Error::MissingSigner, &acc);
    w.b.rejects(vec![decline(&w, &w.s1.authority(), DeclineReasons::empty())], &[&s1], Error::NoDeclineReason, &acc);
    w.b.rejects(vec![decline(&w, &w.s2.authority(), reason)], &[&s2], Error::ServerNotAllowed, &acc);
    let mut read_only = decline(&w, &w.s1.authority(), reason);
    read_only.accounts[1].is_writable = false;
    w.b.rejects(vec![read_only], &[&s1], Error::NotWritable, &acc);
    let server_account = w.b.program.server(&w.s1.authority());
    w.b.rejects(
        vec![replace(decline(&w, &w.s1.authority(), reason), 1, server_account)],
        &[&s1],
        Error::WrongAccountKind,
        &acc,
    );
    let mut short = decline(&w, &w.s1.authority(), reason);
    short.accounts.truncate(1);
    w.b.rejects(vec![short], &[&s1], Error::NotEnoughAccounts, &acc);

    w.b.ok(vec![decline(&w, &w.s1.authority(), reason)], &[&s1]);
    w.b.rejects(vec![decline(&w, &w.s1.authority(), reason)], &[&s1], Error::AlreadyDeclined, &acc);
    // A server that declined may still lock; a locked request takes no decline.
    lock(&mut w.b, &w.s1, &req);
    let header = w.b.request(&req.address);
    assert_eq!((header.status, header.declined), (RequestStatus::Locked, 1));
    let other_reason = DeclineReasons::UNREADABLE;
    w.b.rejects(vec![decline(&w, &w.s1.authority(), other_reason)], &[&s1], Error::WrongState, &acc);

    // After the deadline an open request takes no decline either.
    let spec = w.b.spec(&[&w.s1, &w.s2]);
    let late = w.b.open(&spec);
    let deadline = w.b.request(&late.address).deadline;
    w.b.set_time(deadline);
    let ix = builders::decline_request(&w.b.program, &w.s2.authority(), &late.address, reason);
    w.b.rejects(vec![ix], &[&s2], Error::DeadlinePassed, &acc);
}

#[test]
fn wrong_owners_fakes_and_type_confusion_are_rejected() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    let client = w.b.client.insecure_clone();
    let c = key(&client);

    // A system account where a request belongs: wrong owner.
    let plain = key(&w.b.wallet());
    w.b.rejects(vec![builders::cancel_request(&w.b.program, &c, &plain)], &[&client], Error::WrongOwner, &acc);
    // A server account where a request belongs: wrong kind.
    let server_acc = w.b.program.server(&w.s1.authority());
    w.b.rejects(
        vec![builders::cancel_request(&w.b.program, &c, &server_acc)],
        &[&client],
        Error::WrongAccountKind,
        &acc,
    );
    // An account that does not exist.
    w.b.rejects(vec![builders::cancel_request(&w.b.program, &c, &[5; 32])], &[&client], Error::AccountMissing, &acc);

    // A fake config: the real config's bytes in an account some other program owns.
    let real = w.b.svm.get_account(&chainference_chain::address(&w.b.program.config)).unwrap();
    let fake_config = [66u8; 32];
    w.b.set_account(&fake_config, Account { owner: chainference_chain::address(&[8; 32]), ..real.clone() });
    let mut open = w.b.open_ixs(&client, &spec, usize::MAX).1.remove(0);
    open.accounts[2].pubkey = fake_config;
    w.b.rejects(vec![open], &[&client], Error::WrongOwner, &acc);
    // The treasury where the config belongs, and the config where the treasury belongs.
    let mut open = w.b.open_ixs(&client, &spec, usize::MAX).1.remove(0);
    open.accounts[2].pubkey = w.b.program.treasury;
    w.b.rejects(vec![open], &[&client], Error::WrongAccountKind, &acc);
    lock(&mut w.b, &w.s1, &req);
    let refs = w.b.refs(&req);
    let a = w.s1.authority();
    let sw = w.s1.wallet.insecure_clone();
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, true, b"x").unwrap()], &[&sw]);
    let complete = replace(builders::complete_request(&w.b.program, &a, &refs, 1), 5, w.b.program.config);
    w.b.rejects(vec![complete], &[&sw], Error::WrongAccountKind, &acc);
    // A program-owned Treasury-kind account at the wrong address cannot exist; a server account
    // there is the closest forgery: wrong kind.
    let complete = replace(builders::complete_request(&w.b.program, &a, &refs, 1), 5, server_acc);
    w.b.rejects(vec![complete], &[&sw], Error::WrongAccountKind, &acc);
}

#[test]
fn wrong_pdas_are_rejected() {
    let mut w = world();
    let stranger = w.b.wallet();
    let s = key(&stranger);
    let pk = [3u8; 32];
    let profile = builders::ServerProfile { hpke_key: &pk, endpoint: "", offers: &[(MODEL, 1)] };
    // Registering at another authority's PDA.
    let ix = replace(builders::register_server(&w.b.program, &s, &profile).unwrap(), 1, w.b.program.server(&[9; 32]));
    w.b.rejects(vec![ix], &[&stranger], Error::WrongAddress, &[s]);
    // A request at an address the seeds do not derive: the runtime refuses the signature.
    let spec = w.b.spec(&[&w.s1]);
    let client = w.b.client.insecure_clone();
    let (_, mut ixs) = w.b.open_ixs(&client, &spec, usize::MAX);
    // The program never derives the request address: the runtime checks it when the program
    // signs the account's creation with the seeds and bump 255.
    let fake = [1u8; 32];
    ixs[0].accounts[1].pubkey = fake;
    let f = w.b.send(ixs, &[&client]).unwrap_err();
    assert!(
        matches!(f.err, TransactionError::InstructionError(0, InstructionError::PrivilegeEscalation)),
        "{:?}",
        f.err
    );
    // Config init at a non-canonical address.
    let admin = w.b.admin.insecure_clone();
    let ix = replace(builders::init_config(&w.b.program, &key(&admin), ConfigParams::default()), 1, [45; 32]);
    w.b.rejects(vec![ix], &[&admin], Error::WrongAddress, &[]);
}

#[test]
fn config_is_guarded() {
    let mut b = Bench::new();
    let stranger = b.wallet();
    // Only the upgrade authority may initialize.
    let ix = builders::init_config(&b.program, &key(&stranger), ConfigParams::default());
    b.rejects(vec![ix], &[&stranger], Error::NotAdmin, &[]);
    let admin = b.admin.insecure_clone();
    let bad = ConfigParams { fee_bps: 10_001, ..ConfigParams::default() };
    b.rejects(vec![builders::init_config(&b.program, &key(&admin), bad)], &[&admin], Error::InvalidFeeBps, &[]);
    let bad = ConfigParams { min_timeout: 500, ..ConfigParams::default() };
    b.rejects(vec![builders::init_config(&b.program, &key(&admin), bad)], &[&admin], Error::InvalidTimeout, &[]);
    let bad = ConfigParams { retention: 10, ..ConfigParams::default() };
    b.rejects(vec![builders::init_config(&b.program, &key(&admin), bad)], &[&admin], Error::InvalidTimeout, &[]);
    b.init_config();
    let again = builders::init_config(&b.program, &key(&admin), ConfigParams::default());
    b.rejects(vec![again], &[&admin], Error::AlreadyInitialized, &[]);
    let ix = builders::update_config(&b.program, &key(&stranger), ConfigParams::default(), &key(&stranger));
    b.rejects(vec![ix], &[&stranger], Error::NotAdmin, &[]);
    let ix = builders::withdraw_fees(&b.program, &key(&admin), &key(&stranger), 1);
    b.rejects(vec![ix], &[&admin], Error::TreasuryInsufficient, &[b.program.treasury]);
    let ix = builders::withdraw_fees(&b.program, &key(&stranger), &key(&stranger), 0);
    b.rejects(vec![ix], &[&stranger], Error::NotAdmin, &[b.program.treasury]);
}

#[test]
fn wrong_states_and_deadlines_are_rejected() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1, &w.s2]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    let client = w.b.client.insecure_clone();
    let (a, sw) = (w.s1.authority(), w.s1.wallet.insecure_clone());
    let refs = w.b.refs(&req);
    // Complete and release need a lock.
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a, &refs, 1)], &[&sw], Error::WrongState, &acc);
    w.b.rejects(
        vec![builders::release_request(&w.b.program, &a, &req.address, &req.response)],
        &[&sw],
        Error::WrongState,
        &acc,
    );
    // Too early to reclaim.
    let reclaim = builders::reclaim_request(&w.b.program, &req.address, &key(&client), None);
    w.b.rejects(vec![reclaim], &[&client], Error::DeadlineNotReached, &acc);
    // Two servers race: exactly one wins.
    let l1 = builders::lock_request(&w.b.program, &a, &req.address);
    let l2 = builders::lock_request(&w.b.program, &w.s2.authority(), &req.address);
    w.b.ok(vec![l1], &[&sw]);
    w.b.rejects(vec![l2], &[&w.s2.wallet.insecure_clone()], Error::WrongState, &acc);
    // Cancel only while Open; flag only once completed.
    w.b.rejects(
        vec![builders::cancel_request(&w.b.program, &key(&client), &req.address)],
        &[&client],
        Error::WrongState,
        &acc,
    );
    w.b.rejects(
        vec![builders::flag_response(&w.b.program, &key(&client), &req.address, &a)],
        &[&client],
        Error::WrongState,
        &acc,
    );
    // Closing needs a terminal request.
    let close = builders::close_request(&w.b.program, &key(&client), &refs, &a);
    w.b.rejects(vec![close], &[&client], Error::WrongState, &acc);
    // The other server cannot append, release or complete.
    let (a2, sw2) = (w.s2.authority(), w.s2.wallet.insecure_clone());
    let app = builders::append_response(&w.b.program, &a2, &refs, false, b"x").unwrap();
    w.b.rejects(vec![app], &[&sw2], Error::NotLockedByServer, &acc);
    // Another server (or anyone) may release only a lock that showed no progress within the
    // lock window.
    w.b.rejects(
        vec![builders::release_request(&w.b.program, &a2, &req.address, &req.response)],
        &[&sw2],
        Error::LockWindowOpen,
        &acc,
    );
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a2, &refs, 1)], &[&sw2], Error::NotLockedByServer, &acc);
    // Past the deadline: no append, no complete, no release.
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, false, b"x").unwrap()], &[&sw]);
    w.b.set_time(T0 + 300);
    let app = builders::append_response(&w.b.program, &a, &refs, true, b"y").unwrap();
    w.b.rejects(vec![app], &[&sw], Error::DeadlinePassed, &acc);
    w.b.rejects(
        vec![builders::release_request(&w.b.program, &a, &req.address, &req.response)],
        &[&sw],
        Error::DeadlinePassed,
        &acc,
    );
    // Reclaim of a locked request needs the locking server's account, not another one.
    let reclaim = builders::reclaim_request(&w.b.program, &req.address, &key(&client), None);
    w.b.rejects(vec![reclaim], &[&client], Error::NotEnoughAccounts, &acc);
    let reclaim = builders::reclaim_request(&w.b.program, &req.address, &key(&client), Some(&a2));
    w.b.rejects(vec![reclaim], &[&client], Error::ServerMismatch, &acc);
    let reclaim = builders::reclaim_request(&w.b.program, &req.address, &a2, Some(&a));
    w.b.rejects(vec![reclaim], &[&client], Error::ClientAccountMismatch, &acc);
    w.b.ok(vec![builders::reclaim_request(&w.b.program, &req.address, &key(&client), Some(&a))], &[&client]);
    let reclaim = builders::reclaim_request(&w.b.program, &req.address, &key(&client), Some(&a));
    w.b.rejects(vec![reclaim], &[&client], Error::WrongState, &acc);

    // Lock after the deadline.
    let spec = w.b.spec(&[&w.s1]);
    let late = w.b.open(&spec);
    w.b.set_time(T0 + 300 + 300);
    let l = builders::lock_request(&w.b.program, &a, &late.address);
    w.b.rejects(vec![l], &[&sw], Error::DeadlinePassed, &acc);
}

#[test]
fn allow_list_filters_model_and_activity_are_enforced_at_lock() {
    let mut w = world();
    let (a1, sw1) = (w.s1.authority(), w.s1.wallet.insecure_clone());
    let (a2, sw2) = (w.s2.authority(), w.s2.wallet.insecure_clone());
    // Not on the allow-list.
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    w.b.rejects(vec![builders::lock_request(&w.b.program, &a2, &req.address)], &[&sw2], Error::ServerNotAllowed, &acc);
    // Filters: s2 has no completed request yet.
    let mut spec = w.b.spec(&[&w.s2]);
    spec.min_completed = 1;
    let req = w.b.open(&spec);
    w.b.rejects(
        vec![builders::lock_request(&w.b.program, &a2, &req.address)],
        &[&sw2],
        Error::MinCompletedNotMet,
        &acc,
    );
    // s1 completes one, which the client flags: success ratio 0.
    let spec1 = w.b.spec(&[&w.s1]);
    let r = w.b.open(&spec1);
    w.b.serve(&w.s1, &r, 1);
    let client = w.b.client.insecure_clone();
    w.b.ok(vec![builders::flag_response(&w.b.program, &key(&client), &r.address, &a1)], &[&client]);
    let mut spec = w.b.spec(&[&w.s1]);
    spec.min_success_bps = 5_000;
    let req = w.b.open(&spec);
    w.b.rejects(vec![builders::lock_request(&w.b.program, &a1, &req.address)], &[&sw1], Error::MinSuccessNotMet, &acc);
    // A model the server does not offer.
    let mut spec = w.b.spec(&[&w.s1]);
    spec.model = "HuggingFaceTB/SmolLM2-360M-Instruct".into();
    let req = w.b.open(&spec);
    w.b.rejects(vec![builders::lock_request(&w.b.program, &a1, &req.address)], &[&sw1], Error::ModelNotOffered, &acc);
    // An inactive server.
    w.b.ok(vec![builders::set_server_active(&w.b.program, &a2, false)], &[&sw2]);
    let spec = w.b.spec(&[&w.s2]);
    let req = w.b.open(&spec);
    w.b.rejects(vec![builders::lock_request(&w.b.program, &a2, &req.address)], &[&sw2], Error::ServerInactive, &acc);
    // Another server's wallet cannot lock with s2's account.
    let mut ix = builders::lock_request(&w.b.program, &a1, &req.address);
    ix.accounts[1].pubkey = w.b.program.server(&a2);
    w.b.rejects(vec![ix], &[&sw1], Error::NotServerAuthority, &acc);
}

#[test]
fn bad_request_parameters_are_rejected_at_open() {
    let mut w = world();
    let client = w.b.client.insecure_clone();
    let c = key(&client);
    let base = w.b.spec(&[&w.s1]);
    type Edit = Box<dyn Fn(&mut RequestSpec)>;
    let cases: Vec<(Edit, Error)> = vec![
        (Box::new(|s| s.stake = 0), Error::ZeroStake),
        (Box::new(|s| s.timeout = 1), Error::InvalidTimeout),
        (Box::new(|s| s.timeout = 1_000_000), Error::InvalidTimeout),
        (Box::new(|s| s.min_success_bps = 10_001), Error::InvalidFilter),
        (Box::new(|s| s.model = "HuggingFaceTB/SmolLM2-135M-Instruct:q4_1".into()), Error::InvalidModelId),
        (Box::new(|s| s.model = "not a model".into()), Error::InvalidModelId),
        (Box::new(|s| s.stake = FUNDS * 2), Error::InsufficientFunds),
        (
            Box::new(|s| {
                s.allowed.push(s.allowed[0]);
                s.server_keys.push(s.server_keys[0]);
            }),
            Error::DuplicateAllowedServer,
        ),
    ];
    for (edit, expected) in cases {
        let mut spec = base.clone();
        edit(&mut spec);
        let (req, ixs) = w.b.open_ixs(&client, &spec, usize::MAX);
        w.b.rejects(ixs, &[&client], expected, &[c, req.address]);
    }
    // Nine servers (the envelope builder refuses, so build the instruction by hand).
    let mut spec = base.clone();
    let (_, mut ixs) = w.b.open_ixs(&client, &spec, usize::MAX);
    spec.allowed = (1..=9u8).map(|i| [i; 32]).collect();
    let original = ixs[0].data.clone();
    let mut decoded = chainference_core::instruction::Instruction::decode(&original).unwrap();
    if let chainference_core::instruction::Instruction::OpenRequest(args) = &mut decoded {
        args.allowed = &spec.allowed;
    }
    ixs[0].data = decoded.encode().unwrap();
    w.b.rejects(ixs, &[&client], Error::InvalidAllowList, &[c]);
    // Prompt chunks out of place, and no more chunks once published.
    let (req, ixs) = w.b.open_ixs(&client, &base, 100);
    w.b.ok(vec![ixs[0].clone()], &[&client]);
    let skip = builders::write_prompt(&w.b.program, &c, &req.address, 150, &req.envelope[150..200]).unwrap();
    w.b.rejects(vec![skip], &[&client], Error::PromptChunkOutOfPlace, &[c, req.address]);
    let past_end = builders::write_prompt(&w.b.program, &c, &req.address, 100, &vec![0; req.envelope.len()]).unwrap();
    w.b.rejects(vec![past_end], &[&client], Error::PromptChunkOutOfPlace, &[c, req.address]);
    let stranger = w.b.wallet();
    let theirs =
        builders::write_prompt(&w.b.program, &key(&stranger), &req.address, 100, &req.envelope[100..200]).unwrap();
    w.b.rejects(vec![theirs], &[&stranger], Error::NotClient, &[c, req.address]);
    w.b.ok(ixs[1..].to_vec(), &[&client]);
    let again = builders::write_prompt(&w.b.program, &c, &req.address, 0, &req.envelope[..10]).unwrap();
    w.b.rejects(vec![again], &[&client], Error::WrongState, &[c, req.address]);
}

#[test]
fn responses_and_completion_are_checked() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let other = w.b.open(&spec);
    let acc = watched(&w, &req);
    let (a, sw) = (w.s1.authority(), w.s1.wallet.insecure_clone());
    let refs = w.b.refs(&req);
    lock(&mut w.b, &w.s1, &req);
    lock(&mut w.b, &w.s1, &other);
    w.b.rejects(
        vec![builders::append_response(&w.b.program, &a, &refs, false, b"").unwrap()],
        &[&sw],
        Error::EmptyChunk,
        &acc,
    );
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, false, b"one").unwrap()], &[&sw]);
    // Complete before the final chunk.
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a, &refs, 1)], &[&sw], Error::ResponseNotFinished, &acc);
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, true, b"two").unwrap()], &[&sw]);
    w.b.rejects(
        vec![builders::append_response(&w.b.program, &a, &refs, true, b"3").unwrap()],
        &[&sw],
        Error::ResponseFinished,
        &acc,
    );
    // Another request's response.
    let other_refs = w.b.refs(&other);
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &other_refs, true, b"x").unwrap()], &[&sw]);
    let mixed = RequestRefs { response: other.response, ..refs };
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a, &mixed, 1)], &[&sw], Error::ResponseMismatch, &acc);
    let app = builders::append_response(&w.b.program, &a, &mixed, false, b"x").unwrap();
    w.b.rejects(vec![app], &[&sw], Error::ResponseMismatch, &acc);
    // Tokens over the request's max.
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a, &refs, 1_001)], &[&sw], Error::TokensExceedMax, &acc);
    // The refund must go to the request's client.
    let wrong_client = RequestRefs { client: a, ..refs };
    w.b.rejects(
        vec![builders::complete_request(&w.b.program, &a, &wrong_client, 1)],
        &[&sw],
        Error::ClientAccountMismatch,
        &acc,
    );
    // Wrong system program on append.
    let mut app = builders::append_response(&w.b.program, &a, &refs, false, b"x").unwrap();
    app.accounts[3].pubkey = [1; 32];
    w.b.rejects(vec![app], &[&sw], Error::WrongSystemProgram, &acc);
    // A server still holding locks cannot close.
    w.b.rejects(vec![builders::close_server(&w.b.program, &a)], &[&sw], Error::ServerBusy, &acc);
    // Within max_tokens but more tokens than bytes of sealed prompt and answer.
    let bytes = req.envelope.len() as u64 + 2 * (4 + 3);
    w.b.rejects(
        vec![builders::complete_request(&w.b.program, &a, &refs, bytes + 1)],
        &[&sw],
        Error::TokensExceedBytes,
        &acc,
    );
    w.b.ok(vec![builders::complete_request(&w.b.program, &a, &refs, bytes)], &[&sw]);
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a, &refs, 1)], &[&sw], Error::WrongState, &acc);
}

#[test]
fn flags_are_once_and_within_the_window() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    w.b.serve(&w.s1, &req, 1);
    let client = w.b.client.insecure_clone();
    let a = w.s1.authority();
    let stranger = w.b.wallet();
    let ix = builders::flag_response(&w.b.program, &key(&stranger), &req.address, &a);
    w.b.rejects(vec![ix], &[&stranger], Error::NotClient, &acc);
    let ix = builders::flag_response(&w.b.program, &key(&client), &req.address, &w.s2.authority());
    w.b.rejects(vec![ix], &[&client], Error::ServerMismatch, &acc);
    w.b.ok(vec![builders::flag_response(&w.b.program, &key(&client), &req.address, &a)], &[&client]);
    let ix = builders::flag_response(&w.b.program, &key(&client), &req.address, &a);
    w.b.rejects(vec![ix], &[&client], Error::AlreadyFlagged, &acc);
    let late = w.b.open(&spec);
    w.b.serve(&w.s1, &late, 1);
    w.b.set_time(T0 + i64::from(ConfigParams::default().flag_window) + 1);
    let ix = builders::flag_response(&w.b.program, &key(&client), &late.address, &a);
    w.b.rejects(vec![ix], &[&client], Error::FlagWindowClosed, &acc);
}

#[test]
fn comparisons_are_checked() {
    let mut w = world();
    let s3 = w.b.server(1_000_000);
    let client = w.b.client.insecure_clone();
    let c = key(&client);
    let (a1, a2, a3) = (w.s1.authority(), w.s2.authority(), s3.authority());
    let mut reqs = Vec::new();
    for s in [&w.s1, &w.s2, &w.s1, &s3] {
        let spec = w.b.spec(&[s]);
        let r = w.b.open(&spec);
        w.b.serve(s, &r, 1);
        reqs.push(r);
    }
    let mut spec = w.b.spec(&[&s3]);
    spec.prompt = b"a different prompt".to_vec();
    let different = w.b.open(&spec);
    w.b.serve(&s3, &different, 1);
    let acc = watched(&w, &reqs[0]);
    let digest = w.b.secret.prompt_digest(MODEL, &reqs[0].prompt);
    let salt = |w: &World, r: &TestRequest| w.b.secret.commitment_salt(&r.address);
    let cmp = |w: &World, x: (&TestRequest, &[u8; 32]), y: (&TestRequest, &[u8; 32]), d: &[u8; 32], p: u8| {
        let (sx, sy) = (salt(w, x.0), salt(w, y.0));
        builders::compare_responses(
            &w.b.program,
            &c,
            [
                CompareSide { request: &x.0.address, served_by: x.1, salt: &sx },
                CompareSide { request: &y.0.address, served_by: y.1, salt: &sy },
            ],
            d,
            p,
        )
    };
    // The same request twice.
    let ix = cmp(&w, (&reqs[0], &a1), (&reqs[0], &a1), &digest, 0);
    w.b.rejects(vec![ix], &[&client], Error::DuplicateAccount, &acc);
    // Two answers from the same server.
    let ix = cmp(&w, (&reqs[0], &a1), (&reqs[2], &a1), &digest, 0);
    w.b.rejects(vec![ix], &[&client], Error::SameServer, &acc);
    // A digest of another prompt: the commitments do not open.
    let ix = cmp(&w, (&reqs[0], &a1), (&different, &a3), &digest, 0);
    w.b.rejects(vec![ix], &[&client], Error::CommitmentMismatch, &acc);
    let wrong = w.b.secret.prompt_digest(MODEL, b"guess");
    let ix = cmp(&w, (&reqs[0], &a1), (&reqs[1], &a2), &wrong, 0);
    w.b.rejects(vec![ix], &[&client], Error::CommitmentMismatch, &acc);
    let ix = cmp(&w, (&reqs[0], &a1), (&reqs[1], &a2), &digest, 2);
    w.b.rejects(vec![ix], &[&client], Error::InvalidPreference, &acc);
    // Servers passed in the wrong order.
    let ix = cmp(&w, (&reqs[0], &a2), (&reqs[1], &a1), &digest, 0);
    w.b.rejects(vec![ix], &[&client], Error::ServerMismatch, &acc);
    let stranger = w.b.wallet();
    let mut ix = cmp(&w, (&reqs[0], &a1), (&reqs[1], &a2), &digest, 0);
    ix.accounts[0].pubkey = key(&stranger);
    w.b.rejects(vec![ix], &[&stranger], Error::NotClient, &acc);
    w.b.ok(vec![cmp(&w, (&reqs[0], &a1), (&reqs[1], &a2), &digest, 0)], &[&client]);
    // Already compared.
    let ix = cmp(&w, (&reqs[0], &a1), (&reqs[3], &a3), &digest, 0);
    w.b.rejects(vec![ix], &[&client], Error::AlreadyCompared, &acc);
    assert_eq!(w.b.server_header(&a1).stats.preferred, 1);
}

#[test]
fn closing_is_once_and_closed_accounts_stay_dead() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    w.b.serve(&w.s1, &req, 1);
    let client = w.b.client.insecure_clone();
    let c = key(&client);
    let a = w.s1.authority();
    let refs = w.b.refs(&req);
    // A stranger may not close before the retention period; the response rent must go to its payer.
    let stranger = w.b.wallet();
    let ix = builders::close_request(&w.b.program, &key(&stranger), &refs, &a);
    w.b.rejects(vec![ix], &[&stranger], Error::RetentionNotElapsed, &acc);
    let ix = builders::close_request(&w.b.program, &c, &refs, &c);
    w.b.rejects(vec![ix], &[&client], Error::ServerMismatch, &acc);
    // Close, then in the same transaction try to use the request again, even refunded.
    let close = builders::close_request(&w.b.program, &c, &refs, &a);
    let cancel = builders::cancel_request(&w.b.program, &c, &req.address);
    w.b.rejects(vec![close.clone(), cancel.clone()], &[&client], Error::AccountMissing, &acc);
    let revive = BuiltInstruction {
        program_id: [0; 32],
        accounts: vec![
            chainference_core::builders::AccountMeta::writable(c, true),
            chainference_core::builders::AccountMeta::writable(req.address, false),
        ],
        data: {
            let mut d = 2u32.to_le_bytes().to_vec();
            d.extend_from_slice(&10_000_000u64.to_le_bytes());
            d
        },
    };
    w.b.rejects(vec![close.clone(), revive, cancel], &[&client], Error::WrongOwner, &acc);
    assert_eq!(w.b.request(&req.address).status, RequestStatus::Completed, "the failed transactions changed nothing");
    w.b.ok(vec![close.clone()], &[&client]);
    w.b.rejects(vec![close], &[&client], Error::AccountMissing, &acc);
    // After the retention period anyone may close; the rent still goes to the client.
    let old = w.b.open(&spec);
    w.b.serve(&w.s1, &old, 1);
    w.b.set_time(T0 + i64::from(ConfigParams::default().retention));
    let before = w.b.lamports(&c);
    let rent = w.b.lamports(&old.address) - w.b.request(&old.address).server_due;
    let ix = builders::close_request(&w.b.program, &key(&stranger), &w.b.refs(&old), &a);
    w.b.ok(vec![ix], &[&stranger]);
    assert_eq!(w.b.lamports(&c) - before, rent);
}

#[test]
fn malformed_input_gets_precise_errors() {
    let mut w = world();
    let client = w.b.client.insecure_clone();
    let c = key(&client);
    let program_id = w.b.program.id;
    let raw = |data: Vec<u8>, accounts: Vec<[u8; 32]>| BuiltInstruction {
        program_id,
        accounts: accounts.into_iter().map(|a| builders::AccountMeta::writable(a, a == c)).collect(),
        data,
    };
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    w.b.rejects(vec![raw(vec![], vec![c])], &[&client], Error::UnknownInstruction, &acc);
    w.b.rejects(vec![raw(vec![200], vec![c])], &[&client], Error::UnknownInstruction, &acc);
    w.b.rejects(vec![raw(vec![12, 1], vec![c])], &[&client], Error::Truncated, &acc);
    w.b.rejects(vec![raw(vec![9, 0], vec![c, req.address])], &[&client], Error::TrailingBytes, &acc);
    w.b.rejects(vec![raw(vec![9], vec![c])], &[&client], Error::NotEnoughAccounts, &acc);
    w.b.rejects(vec![raw(vec![5, 7], vec![c])], &[&client], Error::InvalidTag, &acc);
    // A writable account passed read-only.
    let mut ix = builders::cancel_request(&w.b.program, &c, &req.address);
    ix.accounts[1].is_writable = false;
    w.b.rejects(vec![ix], &[&client], Error::NotWritable, &acc);
}

#[test]
fn arithmetic_extremes_settle_exactly() {
    let mut b = Bench::new();
    b.init_config();
    let greedy = b.server(u64::MAX);
    let free = b.server(0);
    // A price near u64::MAX: the cost is capped at the stake, never more.
    let mut spec = b.spec(&[&greedy]);
    spec.max_price_per_mtok = u64::MAX;
    let req = b.open(&spec);
    let client_before = b.lamports(&key(&b.client));
    b.serve(&greedy, &req, 1_000);
    let h = b.request(&req.address);
    assert_eq!((h.cost, h.fee), (req.stake, req.stake / 10));
    assert_eq!(b.lamports(&key(&b.client)), client_before, "no refund when the cost reaches the stake");
    // Zero tokens and a zero price cost nothing.
    let mut spec = b.spec(&[&greedy]);
    spec.max_price_per_mtok = u64::MAX;
    let req = b.open(&spec);
    b.serve(&greedy, &req, 0);
    assert_eq!(b.request(&req.address).cost, 0);
    let spec = b.spec(&[&free]);
    let req = b.open(&spec);
    b.serve(&free, &req, 1_000);
    let h = b.request(&req.address);
    assert_eq!((h.cost, h.fee), (0, 0));
    // The largest stake a funded client can post.
    let rich = solana_keypair::Keypair::new();
    let system = chainference_chain::address(&[0; 32]);
    b.set_account(
        &key(&rich),
        Account { lamports: u64::MAX / 4, data: vec![], owner: system, executable: false, rent_epoch: 0 },
    );
    let mut spec = b.spec(&[&greedy]);
    spec.max_price_per_mtok = u64::MAX;
    spec.stake = u64::MAX / 4 - 1_000_000_000;
    let (req, ixs) = b.open_ixs(&rich, &spec, usize::MAX);
    b.ok(ixs, &[&rich]);
    let a = greedy.authority();
    let refs = RequestRefs { request: req.address, response: req.response, client: key(&rich) };
    // An answer long enough to bill 1,000 tokens (each token is at least a byte).
    let ixs = vec![
        builders::lock_request(&b.program, &a, &req.address),
        builders::append_response(&b.program, &a, &refs, false, &[b'x'; 600]).unwrap(),
    ];
    b.ok(ixs, &[&greedy.wallet.insecure_clone()]);
    let ixs = vec![
        builders::append_response(&b.program, &a, &refs, true, &[b'x'; 600]).unwrap(),
        builders::complete_request(&b.program, &a, &refs, 1_000),
    ];
    b.ok(ixs, &[&greedy.wallet.insecure_clone()]);
    let h = b.request(&req.address);
    let exact = (1_000u128 * u128::from(u64::MAX)).div_ceil(1_000_000);
    assert_eq!(u128::from(h.cost), exact, "an exact 128-bit product, below the stake");
    assert_eq!(h.fee, h.cost / 10);
}

#[test]
fn a_request_with_a_response_cannot_drop_it() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let req = w.b.open(&spec);
    let acc = watched(&w, &req);
    let (a, sw) = (w.s1.authority(), w.s1.wallet.insecure_clone());
    let refs = w.b.refs(&req);
    lock(&mut w.b, &w.s1, &req);
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, false, b"partial").unwrap()], &[&sw]);
    assert!(w.b.request(&req.address).has_response());
    // Release, complete and close all insist on the real response account.
    let dummy = key(&w.b.wallet());
    let release = builders::release_request(&w.b.program, &a, &req.address, &dummy);
    w.b.rejects(vec![release], &[&sw], Error::ResponseMismatch, &acc);
    let fake = RequestRefs { response: dummy, ..refs };
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, true, b"end").unwrap()], &[&sw]);
    w.b.rejects(vec![builders::complete_request(&w.b.program, &a, &fake, 1)], &[&sw], Error::ResponseMismatch, &acc);
    w.b.rejects(
        vec![builders::append_response(&w.b.program, &a, &fake, true, b"x").unwrap()],
        &[&sw],
        Error::ResponseMismatch,
        &acc,
    );
    w.b.ok(vec![builders::complete_request(&w.b.program, &a, &refs, 1)], &[&sw]);
    let client = w.b.client.insecure_clone();
    let close = builders::close_request(&w.b.program, &key(&client), &fake, &a);
    w.b.rejects(vec![close], &[&client], Error::ResponseMismatch, &acc);
    w.b.ok(vec![builders::close_request(&w.b.program, &key(&client), &refs, &a)], &[&client]);
    assert!(!w.b.exists(&req.response), "closed with its request");
}

#[test]
fn attack_8_a_non_canonical_request_bump_is_refused_at_open() {
    let mut w = world();
    let spec = w.b.spec(&[&w.s1]);
    let client = w.b.client.insecure_clone();
    let (req, mut ixs) = w.b.open_ixs(&client, &spec, usize::MAX);
    // Another valid bump of the same seeds would be a second address for one (client, nonce).
    let other = (0..255u8)
        .rev()
        .find(|b| {
            let nonce_le = req.nonce.to_le_bytes();
            chainference_core::pda::create_program_address(
                &chainference_core::pda::request_seeds(&key(&client), &nonce_le),
                *b,
                &w.b.program.id,
            )
            .is_some()
        })
        .unwrap();
    let original = ixs[0].data.clone();
    let mut decoded = chainference_core::instruction::Instruction::decode(&original).unwrap();
    if let chainference_core::instruction::Instruction::OpenRequest(args) = &mut decoded {
        args.bump = other;
    }
    ixs[0].data = decoded.encode().unwrap();
    let nonce_le = req.nonce.to_le_bytes();
    let other_address = chainference_core::pda::create_program_address(
        &chainference_core::pda::request_seeds(&key(&client), &nonce_le),
        other,
        &w.b.program.id,
    )
    .unwrap();
    ixs[0].accounts[1].pubkey = other_address;
    w.b.rejects(ixs, &[&client], Error::NonCanonicalBump, &[key(&client), other_address]);
}

#[test]
fn a_client_who_empties_its_wallet_cannot_stall_the_settlement() {
    let (mut w, req, client, payer) = locked_request_of_an_emptied_wallet();
    assert_eq!(w.b.lamports(&key(&client)), 0);
    let (a, sw) = (w.s1.authority(), w.s1.wallet.insecure_clone());
    let refs = w.b.refs(&req);
    let rent = w.b.lamports(&req.address) - req.stake;
    w.b.ok(vec![builders::append_response(&w.b.program, &a, &refs, true, b"x").unwrap()], &[&sw]);
    w.b.ok(vec![builders::complete_request(&w.b.program, &a, &refs, 100)], &[&sw]);
    let h = w.b.request(&req.address);
    assert_eq!(h.status, RequestStatus::Completed);
    // The refund waits in the request and comes back with its rent at close.
    assert_eq!(w.b.lamports(&req.address), rent + req.stake - h.cost + h.server_due);
    let close = builders::close_request(&w.b.program, &key(&client), &refs, &a);
    w.b.ok(vec![close], &[&payer, &client]);
    assert_eq!(w.b.lamports(&key(&client)), rent + req.stake - h.cost);
}

// ---------------------------------------------------------------------------------------------
// Protocol v2: the attacks of issue 18 (numbered as there) and the holes of issue 13. Each
// attack step below was a successful transaction on the v1 program; v2 refuses it or makes it
// worthless. The config counts a step from a fee of 100 lamports (min_counted_fee) and gives a
// lock 30 s for its first chunk (lock_window, the default).
// ---------------------------------------------------------------------------------------------

/// A bench whose config counts a step from a fee of 100 lamports, and one honest server at
/// 20,000,000 lamports per Mtok.
fn v2_world() -> (Bench, TestServer) {
    let mut b = Bench::new();
    b.init_config_with(ConfigParams { min_counted_fee: 100, ..ConfigParams::default() });
    let s = b.server(20_000_000);
    (b, s)
}

#[test]
fn attack_1_dealing_with_yourself_builds_no_reputation() {
    let (mut b, _) = v2_world();
    // The client's own wallet runs a server at price 0 and allows only itself.
    let own = b.client.insecure_clone();
    let own_server = b.register(own.insecure_clone(), 0);
    let spec = b.spec(&[&own_server]);
    let req = b.open(&spec);
    let acc = vec![key(&own), req.address, b.program.server(&key(&own))];
    let lock = builders::lock_request(&b.program, &key(&own), &req.address);
    b.rejects(vec![lock], &[&own], Error::SelfDealing, &acc);

    // With a second wallet (a sybil) the lock goes through, but a free completion pays no fee:
    // it is completed, not counted, and `min_completed` filters see nothing.
    let sybil = b.wallet();
    let farm = b.register(sybil, 0);
    for _ in 0..3 {
        let spec = b.spec(&[&farm]);
        let r = b.open(&spec);
        b.serve(&farm, &r, 1);
    }
    let stats = b.server_header(&farm.authority()).stats;
    assert_eq!((stats.completed, stats.counted, stats.fees), (3, 0, 0));
    let mut picky = b.spec(&[&farm]);
    picky.min_completed = 1;
    let r = b.open(&picky);
    let lock = builders::lock_request(&b.program, &farm.authority(), &r.address);
    b.rejects(vec![lock], &[&farm.wallet.insecure_clone()], Error::MinCompletedNotMet, &[r.address]);

    // A counted completion costs at least min_counted_fee of protocol fee (here: 100 tokens at
    // 10,000,000 per Mtok = 1,000 lamports, fee 100).
    let paid = b.server(10_000_000);
    let spec = b.spec(&[&paid]);
    let r = b.open(&spec);
    b.serve(&paid, &r, 100);
    let stats = b.server_header(&paid.authority()).stats;
    assert_eq!((stats.counted, stats.fees), (1, 100));
}

#[test]
fn attack_2_sybil_comparisons_need_paid_requests() {
    let (mut b, _) = v2_world();
    let (s1, s2) = (b.server(0), b.server(0));
    let r1 = b.open(&b.spec(&[&s1]));
    let r2 = b.open(&b.spec(&[&s2]));
    b.serve(&s1, &r1, 1);
    b.serve(&s2, &r2, 1);
    let client = b.client.insecure_clone();
    let acc = vec![r1.address, r2.address, b.program.server(&s1.authority()), b.program.server(&s2.authority())];
    let ix = b.compare_ix([(&r1, &s1), (&r2, &s2)], 1);
    b.rejects(vec![ix], &[&client], Error::BelowCountedFee, &acc);
    assert_eq!(b.server_header(&s2.authority()).stats.comparisons, 0);
}

#[test]
fn attack_3_a_squatted_lock_is_released_by_anyone_and_the_time_given_back() {
    let (mut b, honest) = v2_world();
    let squatter = b.server(20_000_000);
    let spec = b.spec(&[&squatter, &honest]);
    let req = b.open(&spec);
    let deadline = b.request(&req.address).deadline;
    lock(&mut b, &squatter, &req);
    let stranger = b.wallet();
    let acc = vec![req.address, b.program.server(&squatter.authority()), key(&stranger)];
    let release = |b: &Bench| {
        builders::release_stalled_request(
            &b.program,
            &key(&stranger),
            &squatter.authority(),
            &req.address,
            &req.response,
        )
    };
    // Within the lock window only the locking server may let go.
    b.set_time(T0 + 29);
    b.rejects(vec![release(&b)], &[&stranger], Error::LockWindowOpen, &acc);
    // Past it with no first chunk, anyone may; the 30 s the lock held are given back.
    b.set_time(T0 + 30);
    b.ok(vec![release(&b)], &[&stranger]);
    let h = b.request(&req.address);
    assert_eq!((h.status, h.deadline, h.release_count), (RequestStatus::Open, deadline + 30, 1));
    assert_eq!(b.server_header(&squatter.authority()).stats.released, 1);
    assert_eq!(b.server_header(&squatter.authority()).locked_count, 0);
    // The honest server serves it; a server that shows progress cannot be released by others.
    b.serve(&honest, &req, 50);
    let r2 = b.open(&spec);
    lock(&mut b, &honest, &r2);
    let refs = b.refs(&r2);
    let app = builders::append_response(&b.program, &honest.authority(), &refs, false, b"progress").unwrap();
    b.ok(vec![app], &[&honest.wallet.insecure_clone()]);
    b.set_time(T0 + 100);
    let ix =
        builders::release_stalled_request(&b.program, &key(&stranger), &honest.authority(), &r2.address, &r2.response);
    b.rejects(vec![ix], &[&stranger], Error::NotLockedByServer, &[r2.address, r2.response]);
    // After a release the client may also cancel at once.
    let r3 = b.open(&spec);
    let r3_deadline = b.request(&r3.address).deadline;
    lock(&mut b, &squatter, &r3);
    let sw = squatter.wallet.insecure_clone();
    b.set_time(T0 + 150);
    // Its own release (say, to lock again at once) gives no time back: the squat stays bounded by
    // the deadline, and each round costs the squatter a release on its record.
    let relock = vec![
        builders::release_request(&b.program, &squatter.authority(), &r3.address, &r3.response),
        builders::lock_request(&b.program, &squatter.authority(), &r3.address),
    ];
    b.ok(relock, &[&sw]);
    assert_eq!(b.request(&r3.address).deadline, r3_deadline, "a server's own release moves no deadline");
    // A third party's release of a stalled lock gives time back, at most one more timeout in all.
    b.set_time(T0 + 390);
    let ix = builders::release_stalled_request(
        &b.program,
        &key(&stranger),
        &squatter.authority(),
        &r3.address,
        &r3.response,
    );
    b.ok(vec![ix.clone()], &[&stranger]);
    assert_eq!(b.request(&r3.address).deadline, r3_deadline + 240, "the 240 s the lock held come back");
    lock(&mut b, &squatter, &r3);
    b.set_time(T0 + 635);
    b.ok(vec![ix], &[&stranger]);
    let h = b.request(&r3.address);
    assert_eq!(h.deadline, h.created_at + 2 * i64::from(h.timeout), "capped at created_at + 2 × timeout");
    lock(&mut b, &squatter, &r3);
    b.ok(vec![builders::release_request(&b.program, &squatter.authority(), &r3.address, &r3.response)], &[&sw]);
    let client = b.client.insecure_clone();
    b.ok(vec![builders::cancel_request(&b.program, &key(&client), &r3.address)], &[&client]);
}

#[test]
fn attack_4_billing_is_bounded_and_the_share_held_until_the_flag_window_closes() {
    let (mut b, s) = v2_world();
    let spec = b.spec(&[&s]);
    let req = b.open(&spec);
    let (a, sw) = (s.authority(), s.wallet.insecure_clone());
    let refs = b.refs(&req);
    lock(&mut b, &s, &req);
    // A one-byte answer billed at max_tokens: more tokens than bytes.
    b.ok(vec![builders::append_response(&b.program, &a, &refs, true, b"x").unwrap()], &[&sw]);
    let acc = vec![req.address, a, key(&b.client), b.program.treasury];
    let greedy = builders::complete_request(&b.program, &a, &refs, 1_000);
    b.rejects(vec![greedy], &[&sw], Error::TokensExceedBytes, &acc);
    let tokens = req.envelope.len() as u64 + 5;
    let before = b.lamports(&a);
    b.ok(vec![builders::complete_request(&b.program, &a, &refs, tokens)], &[&sw]);
    let h = b.request(&req.address);
    assert_eq!(before - b.lamports(&a), 5_000, "nothing paid to the server at completion, only its fee spent");
    assert!(h.server_due > 0);
    // Claiming inside the window is refused; the client's dispute takes half back, and leaves
    // the server's reputation alone (a flag would mark it and return nothing).
    let claim = builders::claim_payment(&b.program, &a, &req.address, &req.response);
    b.rejects(vec![claim.clone()], &[&sw], Error::FlagWindowOpen, &acc);
    let client = b.client.insecure_clone();
    let client_before = b.lamports(&key(&client));
    b.ok(vec![builders::dispute_response(&b.program, &key(&client), &req.address, &a)], &[&client]);
    let due = b.request(&req.address).server_due;
    assert_eq!(due, h.server_due - h.server_due / 2);
    assert_eq!(b.lamports(&key(&client)) + 5_000 - client_before, h.server_due / 2);
    assert_eq!(b.server_header(&a).stats.flagged, 0, "a dispute is no mark");
    let again = builders::flag_response(&b.program, &key(&client), &req.address, &a);
    b.rejects(vec![again], &[&client], Error::AlreadyFlagged, &acc);
    // After the window the server takes the rest.
    let before = b.lamports(&a);
    let response_rent = b.lamports(&req.response);
    b.claim_after_window(&s, &req);
    assert_eq!(b.lamports(&a) + 5_000 - before, due + response_rent);
    b.rejects(vec![claim], &[&sw], Error::NothingToClaim, &acc);
}

#[test]
fn attack_5_the_server_takes_its_response_rent_back_after_the_flag_window() {
    let (mut b, s) = v2_world();
    let req = b.open(&b.spec(&[&s]));
    b.serve(&s, &req, 100);
    let acc = vec![key(&b.client), s.authority(), req.address, req.response, b.program.treasury];
    let (before, fees0) = (b.total(&acc), b.fees);
    b.claim_after_window(&s, &req);
    assert!(!b.exists(&req.response), "the response account is closed");
    let h = b.request(&req.address);
    assert_eq!((h.status, h.server_due, h.has_response()), (RequestStatus::Completed, 0, false));
    // The client closes whenever it likes; nothing more goes to the server.
    let client = b.client.insecure_clone();
    let refs = b.refs(&req);
    b.ok(vec![builders::close_request(&b.program, &key(&client), &refs, &key(&client))], &[&client]);
    assert!(!b.exists(&req.address));
    assert_eq!(b.total(&acc) + u128::from(b.fees - fees0), before, "lamports conserved");
}

#[test]
fn attack_6_flags_on_requests_below_the_counted_fee_do_not_count() {
    let (mut b, _) = v2_world();
    let s = b.server(1_000_000);
    let client = b.client.insecure_clone();
    // 10 tokens at 1,000,000 per Mtok: a cost of 10 lamports, fee 1, below min_counted_fee.
    let cheap = b.open(&b.spec(&[&s]));
    b.serve(&s, &cheap, 10);
    b.ok(vec![builders::flag_response(&b.program, &key(&client), &cheap.address, &s.authority())], &[&client]);
    let stats = b.server_header(&s.authority()).stats;
    assert_eq!((stats.flagged, stats.success_bps()), (0, 10_000), "a flag costs at least the counted fee to count");
    assert!(b.request(&cheap.address).flagged());
    // A paid request's flag counts, and returns nothing: flagging never pays the flagger.
    let paid = b.open(&b.spec(&[&s]));
    b.serve(&s, &paid, 200);
    assert!(b.request(&paid.address).fee < 100, "still below: 200 tokens cost 200");
    let dear = b.server(50_000_000);
    let paid = b.open(&b.spec(&[&dear]));
    b.serve(&dear, &paid, 200);
    assert_eq!(b.request(&paid.address).fee, 1_000);
    b.ok(vec![builders::flag_response(&b.program, &key(&client), &paid.address, &dear.authority())], &[&client]);
    assert_eq!(b.server_header(&dear.authority()).stats.flagged, 1);
}

#[test]
fn attack_7_the_flag_window_and_retention_never_overlap() {
    let mut b = Bench::new();
    let admin = b.admin.insecure_clone();
    let equal = ConfigParams { retention: 3_600, flag_window: 3_600, ..ConfigParams::default() };
    b.fails(vec![builders::init_config(&b.program, &key(&admin), equal)], &[&admin], Error::InvalidTimeout);
    b.init_config();
    b.fails(
        vec![builders::update_config(&b.program, &key(&admin), equal, &key(&admin))],
        &[&admin],
        Error::InvalidTimeout,
    );
    let s = b.server(20_000_000);
    let req = b.open(&b.spec(&[&s]));
    b.serve(&s, &req, 100);
    let settled = b.request(&req.address).settled_at;
    let window = i64::from(ConfigParams::default().flag_window);
    let client = b.client.insecure_clone();
    let flag = builders::flag_response(&b.program, &key(&client), &req.address, &s.authority());
    // The last second of the window: a claim is refused; at its end a flag is.
    b.set_time(settled + window - 1);
    let claim = builders::claim_payment(&b.program, &s.authority(), &req.address, &req.response);
    b.rejects(vec![claim.clone()], &[&s.wallet.insecure_clone()], Error::FlagWindowOpen, &[req.address]);
    b.set_time(settled + window);
    b.rejects(vec![flag], &[&client], Error::FlagWindowClosed, &[req.address]);
    b.ok(vec![claim], &[&s.wallet.insecure_clone()]);
    // A stranger's close is refused for the whole retention, which ends strictly after the window.
    let stranger = b.wallet();
    let refs = b.refs(&req);
    let close = builders::close_request(&b.program, &key(&stranger), &refs, &s.authority());
    b.set_time(settled + i64::from(ConfigParams::default().retention) - 1);
    b.rejects(vec![close.clone()], &[&stranger], Error::RetentionNotElapsed, &[req.address]);
}

#[test]
fn attack_13_closing_and_registering_again_keeps_the_reputation() {
    let (mut b, _) = v2_world();
    let s = b.server(20_000_000);
    let (a, sw) = (s.authority(), s.wallet.insecure_clone());
    let client = b.client.insecure_clone();
    let req = b.open(&b.spec(&[&s]));
    b.serve(&s, &req, 100);
    // The server closes right after a bad answer...
    b.ok(vec![builders::close_server(&b.program, &a)], &[&sw]);
    // ...its answer stays flaggable, and the flag lands on the retired record.
    b.ok(vec![builders::flag_response(&b.program, &key(&client), &req.address, &a)], &[&client]);
    let retired = b.server_header(&a);
    assert!(retired.retired());
    assert_eq!((retired.stats.counted, retired.stats.flagged), (1, 1));
    // Registering again revives the same record: no fresh 100% success ratio.
    let pk = s.keys.public_key();
    let profile = builders::ServerProfile { hpke_key: &pk, endpoint: "", offers: &[(MODEL, 1)] };
    b.ok(vec![builders::register_server(&b.program, &a, &profile).unwrap()], &[&sw]);
    let revived = b.server_header(&a);
    assert!(revived.active() && !revived.retired());
    assert_eq!((revived.stats.counted, revived.stats.flagged, revived.stats.success_bps()), (1, 1, 0));
    assert_eq!(revived.registered_at, retired.registered_at, "the first registration time is kept");
    // A retired server cannot lock, nor be updated or toggled until it registers again.
    b.ok(vec![builders::close_server(&b.program, &a)], &[&sw]);
    let r = b.open(&b.spec(&[&s]));
    b.rejects(vec![builders::lock_request(&b.program, &a, &r.address)], &[&sw], Error::ServerInactive, &[r.address]);
    b.rejects(vec![builders::set_server_active(&b.program, &a, true)], &[&sw], Error::ServerInactive, &[a]);
    b.rejects(vec![builders::close_server(&b.program, &a)], &[&sw], Error::ServerInactive, &[a]);
}

#[test]
fn attack_13_price_cap_and_price_and_fee_snapshots() {
    let (mut b, s) = v2_world();
    let (a, sw) = (s.authority(), s.wallet.insecure_clone());
    let admin = b.admin.insecure_clone();
    // A cap below the server's price: the lock is refused.
    let mut spec = b.spec(&[&s]);
    spec.max_price_per_mtok = 19_999_999;
    let capped = b.open(&spec);
    b.rejects(vec![builders::lock_request(&b.program, &a, &capped.address)], &[&sw], Error::PriceAboveCap, &[a]);
    // Raising the price after the open: over the cap, refused too.
    let spec = b.spec(&[&s]);
    let mut exact = spec.clone();
    exact.max_price_per_mtok = 20_000_000;
    let r = b.open(&exact);
    let pk = s.keys.public_key();
    let dearer = builders::ServerProfile { hpke_key: &pk, endpoint: "", offers: &[(MODEL, 40_000_000)] };
    b.ok(vec![builders::update_server(&b.program, &a, &dearer).unwrap()], &[&sw]);
    b.rejects(vec![builders::lock_request(&b.program, &a, &r.address)], &[&sw], Error::PriceAboveCap, &[a]);
    // Price and fee are snapshot at lock: changes after it do not touch the request.
    let cheaper = builders::ServerProfile { hpke_key: &pk, endpoint: "", offers: &[(MODEL, 20_000_000)] };
    b.ok(vec![builders::update_server(&b.program, &a, &cheaper).unwrap()], &[&sw]);
    let req = b.open(&spec);
    lock(&mut b, &s, &req);
    b.ok(vec![builders::update_server(&b.program, &a, &dearer).unwrap()], &[&sw]);
    let fee_2000 = ConfigParams { fee_bps: 2_000, ..ConfigParams::default() };
    b.ok(vec![builders::update_config(&b.program, &key(&admin), fee_2000, &key(&admin))], &[&admin]);
    let refs = b.refs(&req);
    b.ok(vec![builders::append_response(&b.program, &a, &refs, true, &[1; 100]).unwrap()], &[&sw]);
    b.ok(vec![builders::complete_request(&b.program, &a, &refs, 100)], &[&sw]);
    let h = b.request(&req.address);
    assert_eq!((h.price_per_mtok, h.fee_bps, h.cost, h.fee), (20_000_000, 1_000, 2_000, 200));
}

#[test]
fn a_client_who_empties_its_wallet_cannot_block_the_reclaim() {
    let (mut w, req, client, payer) = locked_request_of_an_emptied_wallet();
    // Past the deadline a cranker reclaims: the stake waits in the request, the server's lock
    // ends (it may retire again) and its timeout counts.
    let a = w.s1.authority();
    w.b.set_time(T0 + 300);
    let cranker = w.b.wallet();
    let reclaim = builders::reclaim_request(&w.b.program, &req.address, &key(&client), Some(&a));
    w.b.ok(vec![reclaim], &[&cranker]);
    let h = w.b.server_header(&a);
    assert_eq!((h.locked_count, h.stats.timed_out), (0, 1));
    assert_eq!(w.b.lamports(&key(&client)), 0);
    let held = w.b.lamports(&req.address);
    let refs = w.b.refs(&req);
    let close = builders::close_request(&w.b.program, &key(&client), &refs, &key(&client));
    w.b.ok(vec![close], &[&payer, &client]);
    assert_eq!(w.b.lamports(&key(&client)), held, "stake and rent come back at close");
}

#[test]
fn the_request_passed_as_its_server_is_a_duplicate_account() {
    let mut w = world();
    let req = w.b.open(&w.b.spec(&[&w.s1]));
    let (a, sw) = (w.s1.authority(), w.s1.wallet.insecure_clone());
    let acc = watched(&w, &req);
    let lock = replace(builders::lock_request(&w.b.program, &a, &req.address), 1, req.address);
    w.b.rejects(vec![lock], &[&sw], Error::DuplicateAccount, &acc);
    w.b.serve(&w.s1, &req, 1);
    let client = w.b.client.insecure_clone();
    let flag = replace(builders::flag_response(&w.b.program, &key(&client), &req.address, &a), 2, req.address);
    w.b.rejects(vec![flag], &[&client], Error::DuplicateAccount, &acc);
    let release = replace(builders::release_request(&w.b.program, &a, &req.address, &req.response), 1, req.address);
    w.b.rejects(vec![release], &[&sw], Error::DuplicateAccount, &acc);
}
