//! The main job so far: the whole protocol on the real program `.so` in an in-process Solana
//! runtime (LiteSVM), with real HPKE sealing and real prices. Two servers and one that stalls;
//! a client sends an encrypted prompt and reads the sealed answer as it streams; the same prompt
//! goes to both good servers for a comparison; a flag; the stalled request is reclaimed after its
//! deadline; everything is closed; then a settlement table, the reputation table, and a lamport
//! conservation check (exit code 1 if a lamport went missing).
//!
//! The answers are written by the demo's servers (the server SDK with the real model is the
//! next issue); everything else is the real thing. Run with `cargo xtask demo`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use chainference_core::builders::{self, CompareSide};
use chainference_core::envelope::{self, ResponseSealer};
use chainference_core::state::{RequestAccount, ServerAccount};
use chainference_program_tests::*;

/// A request the demo opened: label, accounts, who pays its response rent, rent locked, fees.
type Tracked = (&'static str, TestRequest, [u8; 32], u64, u64);

fn open(b: &mut Bench, tracked: &mut Vec<Tracked>, label: &'static str, spec: &RequestSpec, payer: [u8; 32]) -> usize {
    let fees0 = b.fees;
    let req = b.open(spec);
    let rent = b.lamports(&req.address) - req.stake;
    tracked.push((label, req, payer, rent, b.fees - fees0));
    tracked.len() - 1
}

struct Row {
    label: &'static str,
    stake: u64,
    tokens: u64,
    cost: u64,
    fee: u64,
    refund: u64,
    rent: u64,
    fees: u64,
}

fn sol(l: u64) -> String {
    format!("{:.6}", l as f64 / 1e9)
}

/// A server reads the sealed prompt from chain, "answers" it, and streams sealed chunks:
/// lock + first chunk in one transaction, then one chunk per transaction, the last with complete.
/// (Each demo request allows one server, so the server reads envelope slot 0.)
fn serve(b: &mut Bench, server: &TestServer, req: &TestRequest, answer: &[&str], show: bool) -> u64 {
    let fees0 = b.fees;
    let data = b.data(&req.address);
    let prompt =
        envelope::open_prompt(RequestAccount::decode(&data).unwrap().prompt, &req.address, 0, server.keys.secret())
            .unwrap();
    let a = server.authority();
    let keys_pub = *RequestAccount::decode(&data).unwrap().response_key;
    let mut sealer = ResponseSealer::new(&keys_pub, &req.address, &a).unwrap();
    let refs = b.refs(req);
    let client_keys = b.secret.request_keys(&req.address);
    let mut opener = client_keys.response_opener(&req.address, &a);
    let tokens = (prompt.len() / 4 + answer.concat().len() / 4) as u64;
    let w = server.wallet.insecure_clone();
    for (i, part) in answer.iter().enumerate() {
        let last = i + 1 == answer.len();
        let chunk = sealer.seal_chunk(part.as_bytes(), last).unwrap();
        let mut ixs = Vec::new();
        if i == 0 {
            ixs.push(builders::lock_request(&b.program, &a, &req.address));
        }
        ixs.push(builders::append_response(&b.program, &a, &refs, last, &chunk).unwrap());
        if last {
            ixs.push(builders::complete_request(&b.program, &a, &refs, tokens));
        }
        b.ok(ixs, &[&w]);
        // The client reads the new chunk from the response account and opens it.
        let chunks = b.response_chunks(&req.response);
        let (text, _) = opener.open_chunk(chunks.last().unwrap()).unwrap();
        if show {
            print!("{}", String::from_utf8_lossy(&text));
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
    }
    if show {
        println!();
    }
    b.fees - fees0
}

fn main() {
    let mut b = Bench::new();
    b.init_config();
    let client = b.client.insecure_clone();
    let c = key(&client);
    let alice = b.server(2_000_000);
    let bob = b.server(3_000_000);
    let stall = b.server(1_000_000);
    let names = [("alice", &alice), ("bob", &bob), ("stalled", &stall)];
    let mut watched = vec![c, b.program.treasury, b.program.config, key(&b.admin)];
    for (_, s) in names {
        watched.push(s.authority());
        watched.push(b.program.server(&s.authority()));
    }
    let start_total = b.total(&watched);
    let start_fees = b.fees;

    println!(
        "Chainference demo: the real program ({}) in LiteSVM, real HPKE, real prices.\n",
        chainference_core::pda::PROGRAM_ID_BASE58
    );
    println!("{:<8} {:>22} {:>9} {:>11}", "server", "price (lamports/Mtok)", "success", "preference");
    for (name, s) in names {
        let acc = b.data(&b.program.server(&s.authority()));
        let acc = ServerAccount::decode(&acc).unwrap();
        println!(
            "{name:<8} {:>22} {:>8.2}% {:>11}",
            acc.offers.price_of(MODEL).unwrap(),
            f64::from(acc.header.stats.success_bps()) / 100.0,
            "-"
        );
    }

    // Each request's label, accounts, the rent it locked and the fees its transactions cost.
    let mut tracked: Vec<Tracked> = Vec::new();
    let (aa, ab, sa) = (alice.authority(), bob.authority(), stall.authority());

    // 1. An encrypted prompt to alice; the answer streams back sealed, chunk by chunk.
    let mut spec = b.spec(&[&alice]);
    spec.prompt = b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n".to_vec();
    let first = open(&mut b, &mut tracked, "alice", &spec, aa);
    println!(
        "\nclient -> alice: a {}-byte prompt sealed into a {}-byte envelope",
        spec.prompt.len(),
        tracked[first].1.envelope.len()
    );
    print!("alice streams: ");
    let f = serve(&mut b, &alice, &tracked[first].1, &["The capital", " of France", " is Paris."], true);
    tracked[first].4 += f;

    // 2. The same prompt to alice and bob, neither knowing it will be compared.
    let mut spec_a = b.spec(&[&alice]);
    spec_a.prompt = spec.prompt.clone();
    let mut spec_b = b.spec(&[&bob]);
    spec_b.prompt = spec.prompt.clone();
    let ra = open(&mut b, &mut tracked, "cmp:alice", &spec_a, aa);
    let rb = open(&mut b, &mut tracked, "cmp:bob", &spec_b, ab);
    tracked[ra].4 += serve(&mut b, &alice, &tracked[ra].1, &["Paris."], false);
    tracked[rb].4 += serve(&mut b, &bob, &tracked[rb].1, &["The capital of France is Paris, on the Seine."], false);
    let digest = b.secret.prompt_digest(MODEL, &spec.prompt);
    let (req_a, req_b) = (tracked[ra].1.address, tracked[rb].1.address);
    let (salt_a, salt_b) = (b.secret.commitment_salt(&req_a), b.secret.commitment_salt(&req_b));
    let cmp = builders::compare_responses(
        &b.program,
        &c,
        [
            CompareSide { request: &req_a, served_by: &aa, salt: &salt_a },
            CompareSide { request: &req_b, served_by: &ab, salt: &salt_b },
        ],
        &digest,
        1,
    );
    let fees0 = b.fees;
    b.ok(vec![cmp], &[&client]);
    println!("client compared alice's and bob's answers to the same prompt and preferred bob's");
    b.ok(vec![builders::flag_response(&b.program, &c, &req_a, &aa)], &[&client]);
    println!("client flagged alice's terse answer");
    tracked[ra].4 += b.fees - fees0;

    // 3. The stalled server locks and never answers; after the deadline the client reclaims.
    let mut spec_s = b.spec(&[&stall]);
    spec_s.timeout = 30;
    let rs = open(&mut b, &mut tracked, "stalled", &spec_s, sa);
    let fees0 = b.fees;
    b.ok(vec![builders::lock_request(&b.program, &sa, &tracked[rs].1.address)], &[&stall.wallet.insecure_clone()]);
    b.set_time(b.now() + 30);
    b.ok(vec![builders::reclaim_request(&b.program, &tracked[rs].1.address, &c, Some(&sa))], &[&client]);
    tracked[rs].4 += b.fees - fees0;
    println!("the stalled server locked a request and went silent: reclaimed after its 30 s deadline, stake refunded");

    // 4. Close everything: each rent goes back to whoever paid it.
    let mut rows = Vec::new();
    for (label, req, payer, rent, fees) in &tracked {
        let h = b.request(&req.address);
        let fees0 = b.fees;
        b.ok(vec![builders::close_request(&b.program, &c, &b.refs(req), payer)], &[&client]);
        let row = Row {
            label,
            stake: req.stake,
            tokens: h.tokens,
            cost: h.cost,
            fee: h.fee,
            refund: h.stake - h.cost,
            rent: *rent,
            fees: fees + b.fees - fees0,
        };
        rows.push(row);
    }

    println!("\nSettlement (lamports)");
    println!(
        "{:<10} {:>10} {:>6} {:>8} {:>6} {:>10} {:>16} {:>8}",
        "request", "stake", "tokens", "cost", "fee", "refund", "rent lock/return", "tx fees"
    );
    for r in &rows {
        println!(
            "{:<10} {:>10} {:>6} {:>8} {:>6} {:>10} {:>16} {:>8}",
            r.label,
            r.stake,
            r.tokens,
            r.cost,
            r.fee,
            r.refund,
            format!("{}/{}", r.rent, r.rent),
            r.fees
        );
    }
    println!("\nReputation");
    println!(
        "{:<8} {:>9} {:>7} {:>9} {:>8} {:>11} {:>9} {:>11}",
        "server", "completed", "flagged", "timed out", "released", "comparisons", "success", "preference"
    );
    for (name, s) in names {
        let h = b.server_header(&s.authority());
        let st = h.stats;
        println!(
            "{name:<8} {:>9} {:>7} {:>9} {:>8} {:>11} {:>8.2}% {:>11}",
            st.completed,
            st.flagged,
            st.timed_out,
            st.released,
            st.comparisons,
            f64::from(st.success_bps()) / 100.0,
            st.preference_bps().map_or("-".into(), |p| format!("{:.2}%", f64::from(p) / 100.0))
        );
    }
    let treasury_fees = b.lamports(&b.program.treasury) - b.svm.minimum_balance_for_rent_exemption(3);
    let end_total = b.total(&watched);
    let fees = b.fees - start_fees;
    println!(
        "\ntreasury collected {treasury_fees} lamports; transaction fees burned: {fees} lamports ({} SOL)",
        sol(fees)
    );
    let leftover: u64 = tracked.iter().map(|t| b.lamports(&t.1.address) + b.lamports(&t.1.response)).sum();
    if end_total + u128::from(fees) != start_total || leftover != 0 {
        eprintln!(
            "LAMPORTS NOT CONSERVED: start {start_total}, end {end_total} + fees {fees}, left in closed accounts {leftover}"
        );
        std::process::exit(1);
    }
    println!(
        "conserved: every lamport is where the protocol says ({start_total} = {end_total} + {fees} in fees), no account left holding any"
    );
}
