//! Every client API call against the embedded chain running the real program `.so`, with the
//! server role played through core and raw instructions. Every test checks lamport
//! conservation: the chain's total drops by exactly the transaction fees everyone paid.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainference_client::chain::{Chain as _, EmbeddedChain, Signer};
use chainference_client::{
    AnswerEvent, Ask, ChatMessage, Client, ClientError, Exclusion, Filtered as _, HistoryQuery, Policy, Role,
    ServerChoice, ServerQuery,
};
use chainference_core::state::{ConfigParams, DeclineReasons, RequestStatus};
use chainference_core::{builders, pricing};
use common::{FUNDS, MODEL, TestServer, chain, funded};
use futures::StreamExt;

type Chain = Arc<EmbeddedChain>;

async fn client(chain: &Chain) -> Client<Chain> {
    let wallet = funded(chain.as_ref(), FUNDS).await;
    Client::new(Arc::clone(chain), wallet)
}

/// Total lamports on the chain, to compare before and after a flow.
fn total(chain: &Chain) -> u128 {
    chain.total_lamports()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_estimate_ask_stream_settle_close() {
    let chain = chain();
    let cheap = TestServer::register(chain.as_ref(), 2_000_000).await;
    let dear = TestServer::register(chain.as_ref(), 5_000_000).await;
    let client = client(&chain).await;

    let found = client.servers(&ServerQuery::new("HuggingFaceTB/SmolLM2-135M-Instruct:q4_1")).await.unwrap();
    assert_eq!(found.model.as_deref(), Some(MODEL));
    assert_eq!(found.eligible.len(), 2, "{}", found.explain());
    assert!(found.eligible.iter().all(|s| s.success_bps == 10_000 && s.preference_bps.is_none()));
    let priced: Vec<u64> = found.eligible.iter().filter_map(|s| s.price).collect();
    assert!(priced.contains(&2_000_000) && priced.contains(&5_000_000));

    let ask = Ask::new(MODEL, "What is the capital of France?").best(1, Policy::Cheapest).max_tokens(400);
    let estimate = client.estimate(&ask).await.unwrap();
    assert_eq!(estimate.servers.len(), 1);
    assert_eq!(estimate.servers[0].authority, cheap.authority());
    // Auto stake: max_tokens at the allowed server's price, rounded up.
    assert_eq!(estimate.stake, 800);
    assert_eq!(estimate.transactions, 1);
    assert_eq!(estimate.transaction_fees, 5_000);

    println!("estimate: {estimate:?}");
    let start_total = total(&chain);
    let start_balance = client.balance().await.unwrap();
    let sent_at = Instant::now();
    let request = client.ask(ask).await.unwrap();
    assert_eq!(request.transaction_fees(), estimate.transaction_fees);
    assert_eq!(start_balance - client.balance().await.unwrap(), estimate.total_needed(), "estimate == spent");
    let state = request.state().await.unwrap();
    assert_eq!(state.status, RequestStatus::Open);

    let mut events = request.events();
    let server_chain = Arc::clone(&chain);
    let address = request.address();
    let serving = tokio::spawn(async move {
        cheap.serve(server_chain.as_ref(), &address, &["The capital ", "of France ", "is Paris."], 300).await;
        cheap
    });
    let mut text = String::new();
    let mut first_chunk = None;
    let receipt = loop {
        match events.next().await.expect("events ended").unwrap() {
            AnswerEvent::Text(piece) => {
                first_chunk.get_or_insert_with(|| sent_at.elapsed());
                text.push_str(&piece);
            }
            AnswerEvent::Completed(receipt) => break receipt,
            other => panic!("unexpected {other:?}"),
        }
    };
    let cheap = serving.await.unwrap();
    println!("send to first decrypted chunk (embedded): {:?}", first_chunk.unwrap());
    assert_eq!(text, "The capital of France is Paris.");
    let settlement = pricing::settle(300, 2_000_000, 800, ConfigParams::default().fee_bps).unwrap();
    assert_eq!(receipt.tokens, 300);
    assert_eq!(receipt.cost, 600);
    assert_eq!(receipt.cost, settlement.cost);
    assert_eq!(receipt.fee, 60);
    assert_eq!(receipt.server_share, 540);
    assert_eq!(receipt.refund, 200);
    assert_eq!(receipt.server, cheap.authority());
    assert_eq!(receipt.rent_locked, estimate.rent_locked);

    // wait() on a completed request returns the same answer at once.
    let answer = request.wait().await.unwrap();
    assert_eq!(answer.text, text);
    assert_eq!(answer.receipt.cost, 600);

    let returned = request.close().await.unwrap();
    assert_eq!(returned, estimate.rent_locked - estimate.close_fee);
    let spent = start_balance - client.balance().await.unwrap();
    assert_eq!(spent, receipt.cost + estimate.transaction_fees + estimate.close_fee);
    assert!(spent <= estimate.max_spend());
    let fees = request.transaction_fees() + cheap.fees();
    assert_eq!(start_total - total(&chain), u128::from(fees), "lamports conserved");
    assert!(chain.account(&request.address()).await.unwrap().is_none());
    drop(dear);
}

/// A lost connection while the answer is followed (the deadline check's clock read fails, a
/// subscription cannot be opened) pauses the follower; it does not end it (the soak's RPC
/// refusal found `wait` failing within half a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_followed_through_a_chain_outage() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 2_000_000).await;
    let outage = Arc::new(chainference_client::chain::outage::Outage::new(Arc::clone(&chain)));
    let wallet = funded(chain.as_ref(), FUNDS).await;
    let client = Client::new(Arc::clone(&outage), wallet);
    let start_total = total(&chain);
    for phase in ["down while following", "down before following"] {
        let ask = Ask::new(MODEL, "What is the capital of France?").to_servers([server.authority()]).max_tokens(400);
        let request = client.ask(ask).await.unwrap();
        let follower = client.request(&request.address()).await.unwrap();
        if phase == "down before following" {
            outage.set_down(true);
        }
        let waiting = tokio::spawn(async move { follower.wait().await });
        if phase == "down before following" {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            outage.set_down(true);
            // Several deadline checks (every 500 ms) fail meanwhile.
            tokio::time::sleep(Duration::from_millis(1_600)).await;
        }
        outage.set_down(false);
        server.serve(chain.as_ref(), &request.address(), &["The capital ", "of France ", "is Paris."], 300).await;
        let answer = waiting.await.unwrap().unwrap_or_else(|err| panic!("{phase}: {err}"));
        assert_eq!(answer.text, "The capital of France is Paris.", "{phase}");
        request.close().await.unwrap();
    }
    // Each phase: one open and one close transaction.
    assert_eq!(start_total - total(&chain), u128::from(server.fees() + 4 * 5_000), "lamports conserved");
}

/// The open lands but its reply is lost and the chain refuses for a while after: `ask` finds
/// the request on chain and returns it, rather than an error for a request that exists and that
/// nobody would follow (the soak's RPC refusal left such orphans to its final sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_whose_reply_is_lost_is_found_on_chain() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 2_000_000).await;
    let outage = Arc::new(chainference_client::chain::outage::Outage::new(Arc::clone(&chain)));
    let client = Client::new(Arc::clone(&outage), funded(chain.as_ref(), FUNDS).await);
    let start_total = total(&chain);
    let ask = Ask::new(MODEL, "What is the capital of France?").to_servers([server.authority()]).max_tokens(400);
    let estimate = client.estimate(&ask).await.unwrap();
    outage.lose_next_reply(Duration::from_secs(2));
    let request = client.ask(ask).await.expect("the open landed: ask returns it");
    assert_eq!(request.state().await.unwrap().status, RequestStatus::Open);
    server.serve(chain.as_ref(), &request.address(), &["The capital ", "of France ", "is Paris."], 300).await;
    assert_eq!(request.wait().await.unwrap().text, "The capital of France is Paris.");
    request.close().await.unwrap();
    // The lost reply's fee is the open's: the estimate's one transaction.
    assert_eq!(start_total - total(&chain), u128::from(server.fees() + estimate.transaction_fees + 5_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusions_are_explained_and_refused() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 9_000_000).await;
    let client = client(&chain).await;

    let query = ServerQuery::new(MODEL).max_price(1_000_000).min_completed(5);
    let found = client.servers(&query).await.unwrap();
    assert!(found.eligible.is_empty());
    let (excluded, reasons) = &found.excluded[0];
    assert_eq!(excluded.authority, server.authority());
    assert!(reasons.contains(&Exclusion::PriceAbove { price: 9_000_000, max: 1_000_000 }));
    assert!(reasons.contains(&Exclusion::TooFewCompleted { completed: 0, min: 5 }));
    let explained = found.explain();
    assert!(explained.contains("above your cap") && explained.contains("fewer than the 5 required"), "{explained}");

    let before = total(&chain);
    let refused = client.ask(Ask::new(MODEL, "hi").max_price(1_000_000)).await.unwrap_err();
    match &refused {
        ClientError::AllServersExcluded { excluded, .. } => assert_eq!(excluded[0].0, server.authority()),
        other => panic!("expected AllServersExcluded, got {other:?}"),
    }
    assert!(refused.to_string().contains("above your cap"), "{refused}");
    let unknown = client.ask(Ask::new("acme/unknown-model", "hi")).await.unwrap_err();
    assert!(matches!(unknown, ClientError::NoServerOffersModel { .. }), "{unknown:?}");
    let explicit =
        client.ask(Ask::new(MODEL, "hi").min_completed(1).to_servers([server.authority()])).await.unwrap_err();
    assert!(matches!(explicit, ClientError::ServerExcluded { .. }), "{explicit:?}");
    // The program's allow-list rule, checked before anything is sent, naming what broke it.
    let twice = client.ask(Ask::new(MODEL, "hi").to_servers([server.authority(), server.authority()])).await;
    let twice = twice.unwrap_err().to_string();
    assert!(twice.contains("listed twice") && twice.contains(&server.authority().to_string()), "{twice}");
    let nine = (0..9).map(|_| chainference_client::Keypair::new().pubkey());
    let too_many = client.ask(Ask::new(MODEL, "hi").to_servers(nine)).await.unwrap_err().to_string();
    assert!(too_many.contains("1 to 8") && too_many.contains("9 servers named"), "{too_many}");
    let none = client.ask(Ask::new(MODEL, "hi").to_servers([])).await.unwrap_err().to_string();
    assert!(none.contains("0 servers named"), "{none}");
    let invalid = client.ask(Ask::new("not a model id", "hi")).await.unwrap_err();
    assert!(matches!(invalid, ClientError::Core(chainference_core::Error::InvalidModelId)), "{invalid:?}");
    assert_eq!(total(&chain), before, "refused requests sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_says_how_much_is_missing() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 1_000_000).await;
    let poor = funded(chain.as_ref(), 1_000_000).await;
    let client = Client::new(Arc::clone(&chain), poor);
    let ask = Ask::new(MODEL, "hi").to_servers([server.authority()]).stake(5_000_000);
    let estimate = client.estimate(&ask).await.unwrap();
    match client.ask(ask).await.unwrap_err() {
        ClientError::InsufficientFunds { needed, available, missing } => {
            assert_eq!(needed, estimate.total_needed());
            assert_eq!(available, 1_000_000);
            assert_eq!(missing, needed - available);
        }
        other => panic!("expected InsufficientFunds, got {other:?}"),
    }
    assert_eq!(client.balance().await.unwrap(), 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_chunk_is_caught() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 1_000_000).await;
    let client = client(&chain).await;
    let start = total(&chain);
    let request = client.ask(Ask::new(MODEL, "hi").to_servers([server.authority()])).await.unwrap();
    let mut locked = server.lock(chain.as_ref(), &request.address()).await.unwrap();
    server.append(chain.as_ref(), &mut locked, "fine so far", false).await.unwrap();
    let mut evil = locked.sealer.seal_chunk(b" then altered", false).unwrap();
    let last = evil.len() - 1;
    evil[last] ^= 1;
    server.append_raw(chain.as_ref(), &locked, &evil, false).await.unwrap();
    let mut text = request.stream();
    assert_eq!(text.next().await.unwrap().unwrap(), "fine so far");
    match text.next().await.unwrap() {
        Err(ClientError::TamperedChunk { index, server: by }) => {
            assert_eq!(index, 1);
            assert_eq!(by, server.authority());
        }
        other => panic!("expected TamperedChunk, got {other:?}"),
    }
    // The server can still release; the client gets its stake back after close.
    server.release(chain.as_ref(), &locked).await.unwrap();
    request.cancel().await.unwrap();
    request.close().await.unwrap();
    assert_eq!(start - total(&chain), u128::from(request.transaction_fees() + server.fees()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_reclaimed() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 1_000_000).await;
    let client = client(&chain).await;
    let start = total(&chain);
    let before = client.balance().await.unwrap();
    let request =
        client.ask(Ask::new(MODEL, "hello?").to_servers([server.authority()]).timeout_secs(10)).await.unwrap();
    let _locked = server.lock(chain.as_ref(), &request.address()).await.unwrap();
    let early = request.reclaim().await.unwrap_err();
    assert!(matches!(early, ClientError::WrongState { .. }), "{early:?}");
    let waiting = tokio::spawn({
        let events = request.events();
        async move { events.collect::<Vec<_>>().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    chain.advance(Duration::from_secs(11));
    let events = waiting.await.unwrap();
    assert!(
        matches!(events.last(), Some(Err(ClientError::DeadlinePassed { .. }))),
        "expected DeadlinePassed, got {events:?}"
    );
    let stake = request.stake();
    assert_eq!(request.reclaim().await.unwrap(), stake);
    assert_eq!(request.state().await.unwrap().status, RequestStatus::Expired);
    let found = client.server(&server.authority(), MODEL).await.unwrap().unwrap();
    assert_eq!(found.stats.timed_out, 1);
    assert_eq!(found.success_bps, 0);
    request.close().await.unwrap();
    assert_eq!(before - client.balance().await.unwrap(), request.transaction_fees(), "only fees were spent");
    assert_eq!(start - total(&chain), u128::from(request.transaction_fees() + server.fees()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_every_server_declines_ends_at_once_with_the_reasons_and_everything_back() {
    let chain = chain();
    let small = TestServer::register(chain.as_ref(), 1_000_000).await;
    let picky = TestServer::register(chain.as_ref(), 2_000_000).await;
    let client = client(&chain).await;
    let start = total(&chain);
    let before = client.balance().await.unwrap();
    let request = client
        .ask(Ask::new(MODEL, "a long story, please").to_servers([small.authority(), picky.authority()]))
        .await
        .unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let events = request.events();
        async move { events.collect::<Vec<_>>().await }
    });

    // One of two declined: still open, still waiting (the other may answer).
    small.decline(chain.as_ref(), &request.address(), DeclineReasons::PROMPT_TOO_LARGE).await.unwrap();
    let state = request.state().await.unwrap();
    assert_eq!((state.status, state.allowed_servers, state.declined_by), (RequestStatus::Open, 2, 1));
    assert_eq!(state.decline_reasons, DeclineReasons::PROMPT_TOO_LARGE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "one decline of two does not end the request");

    // Both declined: the SDK cancels and closes in one transaction and says why.
    picky.decline(chain.as_ref(), &request.address(), DeclineReasons::CLIENT_EXCLUDED).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("ended within 10 s").unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let Some(Err(refused @ ClientError::Refused { .. })) = events.last() else {
        panic!("expected Refused: {events:?}")
    };
    let ClientError::Refused { request: which, servers, reasons, refunded } = refused else { unreachable!() };
    assert_eq!(*which, request.address());
    assert_eq!(servers, &[small.authority(), picky.authority()]);
    assert_eq!(*reasons, DeclineReasons::PROMPT_TOO_LARGE.union(DeclineReasons::CLIENT_EXCLUDED));
    let message = refused.to_string();
    assert!(message.contains("prompt too large") && message.contains("client not served"), "{message}");
    assert!(matches!(request.state().await, Err(ClientError::RequestNotFound(_))), "closed");
    // Stake and rent back: only the open's and the cancel+close's fees were spent.
    assert_eq!(*refunded, request.stake() + request.rent_locked() - 5_000);
    assert_eq!(before - client.balance().await.unwrap(), request.transaction_fees());
    assert_eq!(request.transaction_fees(), 10_000, "one signature to open, one to cancel and close");
    let server_fees = small.fees() + picky.fees();
    assert_eq!(start - total(&chain), u128::from(request.transaction_fees() + server_fees));
    // A server cannot decline twice, nor a request that is gone.
    assert!(small.decline(chain.as_ref(), &request.address(), DeclineReasons::TERMS_NOT_MET).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_refunds_everything_but_fees() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 1_000_000).await;
    let client = client(&chain).await;
    let start = total(&chain);
    let before = client.balance().await.unwrap();
    let request = client.ask(Ask::new(MODEL, "never mind").to_servers([server.authority()])).await.unwrap();
    let events = request.events();
    assert_eq!(request.cancel().await.unwrap(), request.stake());
    let collected: Vec<_> = events.collect().await;
    assert!(
        matches!(collected.last(), Some(Err(ClientError::Ended { status: RequestStatus::Cancelled, .. }))),
        "{collected:?}"
    );
    let locking = server.lock(chain.as_ref(), &request.address()).await;
    assert!(locking.is_err(), "a cancelled request cannot be locked");
    let again = request.cancel().await.unwrap_err();
    assert!(matches!(again, ClientError::WrongState { .. }), "{again:?}");
    request.close().await.unwrap();
    assert_eq!(before - client.balance().await.unwrap(), request.transaction_fees());
    assert_eq!(start - total(&chain), u128::from(request.transaction_fees() + server.fees()));
    let history = client.history().await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].state.status, history[0].state.cost), (RequestStatus::Cancelled, 0));
    assert_eq!(history[0].prompt.as_ref().unwrap().messages[0].content, "never mind");
    assert_eq!(history[0].answer, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_prompt_is_uploaded_in_chunks_and_read_back() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 1_000_000).await;
    let client = client(&chain).await;
    let long: String = (0..600).map(|i| format!("word{i} ")).collect();
    let ask = Ask::chat(
        MODEL,
        vec![ChatMessage::new(Role::System, "Summarize."), ChatMessage::new(Role::User, long.clone())],
    )
    .to_servers([server.authority()])
    .max_tokens(4_000)
    .temperature(0.7)
    .seed(42);
    let estimate = client.estimate(&ask).await.unwrap();
    assert!(
        estimate.transactions >= 4,
        "{} transactions for a {} B envelope",
        estimate.transactions,
        estimate.envelope_len
    );
    // Split by core's one sizing rule (the wasm bindings' default too): every transaction keeps
    // the reserve free for a wallet's compute-budget instruction.
    let sizes = builders::PromptUpload::with_reserve(&[], MODEL.len(), 1, builders::TRANSACTION_RESERVE);
    let rest = estimate.envelope_len - sizes.first_chunk;
    assert_eq!(estimate.transactions, 1 + rest.div_ceil(sizes.chunk), "{estimate:?}");
    let start = total(&chain);
    let before = client.balance().await.unwrap();
    let request = client.ask(ask).await.unwrap();
    assert_eq!(before - client.balance().await.unwrap(), estimate.total_needed());
    let locked = server.serve(chain.as_ref(), &request.address(), &["Words."], 3_000).await;
    assert_eq!(locked.payload.messages[1].content, long, "the server decrypted the whole prompt");
    assert_eq!(locked.payload.temperature_milli, 700);
    assert_eq!(locked.payload.seed, 42);
    let answer = request.wait().await.unwrap();
    assert_eq!(answer.text, "Words.");

    let history = client.history().await.unwrap();
    assert_eq!(history.len(), 1);
    let entry = &history[0];
    assert_eq!(entry.prompt.as_ref().unwrap().messages[1].content, long);
    assert_eq!(entry.answer.as_deref(), Some("Words."));
    assert!(entry.answer_complete && entry.problem.is_none());
    request.close().await.unwrap();
    assert_eq!(start - total(&chain), u128::from(request.transaction_fees() + server.fees()));
    // Closed: the prompt comes back from the open and every write, in order.
    let history = client.history().await.unwrap();
    let entry = history.iter().find(|e| e.address == request.address()).expect("recovered");
    assert_eq!(entry.prompt.as_ref().unwrap().messages[1].content, long);
    assert_eq!(entry.answer.as_deref(), Some("Words."));
    assert!(entry.closed && entry.closed_at.is_some() && entry.problem.is_none(), "{entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_at_once() {
    let chain = chain();
    let server = Arc::new(TestServer::register(chain.as_ref(), 1_000_000).await);
    let alice = client(&chain).await;
    let bob = client(&chain).await;
    let start = total(&chain);
    let (a, b) = tokio::join!(
        alice.ask(Ask::new(MODEL, "alice asks").to_servers([server.authority()])),
        bob.ask(Ask::new(MODEL, "bob asks").to_servers([server.authority()])),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (wait_a, wait_b) = (a.wait(), b.wait());
    let serve = {
        let (server, chain, ra, rb) = (Arc::clone(&server), Arc::clone(&chain), a.address(), b.address());
        async move {
            let la = server.lock(chain.as_ref(), &ra).await.unwrap();
            let lb = server.lock(chain.as_ref(), &rb).await.unwrap();
            for mut locked in [la, lb] {
                let reply = format!("you said: {}", locked.payload.messages[0].content);
                server.append(chain.as_ref(), &mut locked, &reply, true).await.unwrap();
                server.complete(chain.as_ref(), &locked, 10).await.unwrap();
            }
        }
    };
    let (answer_a, answer_b, ()) = tokio::join!(wait_a, wait_b, serve);
    assert_eq!(answer_a.unwrap().text, "you said: alice asks");
    assert_eq!(answer_b.unwrap().text, "you said: bob asks");
    a.close().await.unwrap();
    b.close().await.unwrap();
    let on_chain = alice.history_with(HistoryQuery { include_closed: false, ..HistoryQuery::default() });
    assert_eq!(on_chain.await.unwrap().len(), 0, "closed requests leave no account");
    // ...and come back from transaction history, decrypted with the wallet alone.
    let history = alice.history().await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    let entry = &history[0];
    assert_eq!(entry.address, a.address());
    assert!(entry.closed && entry.closed_at.is_some_and(|closed| closed >= entry.created_at));
    assert_eq!(entry.prompt.as_ref().unwrap().messages[0].content, "alice asks");
    assert_eq!(entry.answer.as_deref(), Some("you said: alice asks"));
    assert!(entry.answer_complete && entry.problem.is_none(), "{entry:?}");
    assert_eq!((entry.state.status, entry.state.locked_by), (RequestStatus::Completed, Some(server.authority())));
    assert_eq!((entry.state.tokens, entry.state.cost, entry.state.stake), (10, 10, a.stake()));
    let later = HistoryQuery { since: Some(entry.created_at + 1), ..HistoryQuery::default() };
    assert!(alice.history_with(later).await.unwrap().is_empty(), "--since leaves it out");
    let fees = a.transaction_fees() + b.transaction_fees() + server.fees();
    assert_eq!(start - total(&chain), u128::from(fees));
}

/// One client comparing one pair again and again is one voice in the SDK's preference score
/// (issue 18, attack 2): the raw on-chain share follows the comparisons, the weighed one the
/// clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_comparisons_of_one_pair_count_as_one_voice() {
    let chain = chain();
    let a = TestServer::register(chain.as_ref(), 100_000_000).await;
    let b = TestServer::register(chain.as_ref(), 100_000_000).await;
    let (eager, other) = (client(&chain).await, client(&chain).await);
    for (who, rounds, winner) in [(&eager, 3, 0), (&other, 1, 1)] {
        for _ in 0..rounds {
            let (to_a, to_b) =
                who.ask_pair(Ask::new(MODEL, "Name a prime."), a.authority(), b.authority()).await.unwrap();
            a.serve(chain.as_ref(), &to_a.address(), &["7"], 20).await;
            b.serve(chain.as_ref(), &to_b.address(), &["5"], 20).await;
            to_a.wait().await.unwrap();
            to_b.wait().await.unwrap();
            let preferred = if winner == 0 { to_a.address() } else { to_b.address() };
            who.compare(&to_a.address(), &to_b.address(), &preferred).await.unwrap();
        }
    }
    let found = other.servers(&ServerQuery::new(MODEL)).await.unwrap();
    let info = |authority: chainference_client::Address| {
        found.eligible.iter().find(|s| s.authority == authority).unwrap().clone()
    };
    let (ia, ib) = (info(a.authority()), info(b.authority()));
    assert_eq!((ia.preference_bps, ia.preference_by_client_bps), (Some(7_500), Some(5_000)));
    assert_eq!((ib.preference_bps, ib.preference_by_client_bps), (Some(2_500), Some(5_000)));
    let unweighed = other.servers(&ServerQuery::new(MODEL).weigh_comparisons(false)).await.unwrap();
    assert!(unweighed.eligible.iter().all(|s| s.preference_by_client_bps.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_flag_build_reputation() {
    let chain = chain();
    // Prices at which 20 tokens pay a fee of at least the config's min_counted_fee (100): only
    // counted completions can be compared and flagged against a server's reputation.
    let first = TestServer::register(chain.as_ref(), 100_000_000).await;
    let second = TestServer::register(chain.as_ref(), 150_000_000).await;
    let client = client(&chain).await;
    let start = total(&chain);
    let (a, b) =
        client.ask_pair(Ask::new(MODEL, "Name a prime."), first.authority(), second.authority()).await.unwrap();
    let la = first.serve(chain.as_ref(), &a.address(), &["7"], 20).await;
    let lb = second.serve(chain.as_ref(), &b.address(), &["9"], 20).await;
    assert_eq!(la.payload, lb.payload, "both servers got the same prompt");
    assert_eq!(a.wait().await.unwrap().text, "7");
    assert_eq!(b.wait().await.unwrap().text, "9");

    let wrong = client.compare(&a.address(), &b.address(), &first.authority()).await.unwrap_err();
    assert!(matches!(wrong, ClientError::Invalid(_)));
    client.compare(&a.address(), &b.address(), &a.address()).await.unwrap();
    let twice = client.compare(&a.address(), &b.address(), &a.address()).await.unwrap_err();
    assert_eq!(twice.program_error(), Some(chainference_core::Error::AlreadyCompared), "{twice:?}");
    client.flag(&b.address()).await.unwrap();
    let twice = client.flag(&b.address()).await.unwrap_err();
    assert_eq!(twice.program_error(), Some(chainference_core::Error::AlreadyFlagged), "{twice:?}");

    let winner = client.server(&first.authority(), MODEL).await.unwrap().unwrap();
    let loser = client.server(&second.authority(), MODEL).await.unwrap().unwrap();
    assert_eq!((winner.stats.comparisons, winner.stats.preferred, winner.preference_bps), (1, 1, Some(10_000)));
    assert_eq!((loser.stats.comparisons, loser.stats.preferred, loser.preference_bps), (1, 0, Some(0)));
    assert_eq!((loser.stats.completed, loser.stats.flagged, loser.success_bps), (1, 1, 0));
    // A reputation filter now excludes the flagged server.
    let found = client.servers(&ServerQuery::new(MODEL).min_success_bps(5_000)).await.unwrap();
    assert_eq!(found.eligible.len(), 1);
    assert_eq!(found.excluded[0].1, vec![Exclusion::SuccessBelow { success_bps: 0, min: 5_000 }]);

    let history = client.history().await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|e| e.state.compared));
    assert_eq!(history.iter().filter(|e| e.state.flagged).count(), 1);
    a.close().await.unwrap();
    b.close().await.unwrap();
    let fees = a.transaction_fees() + b.transaction_fees() + first.fees() + second.fees();
    // compare and flag were paid by the client outside the two handles.
    let client_other_fees = 2 * 5_000 + 2 * 5_000;
    assert_eq!(start - total(&chain), u128::from(fees + client_other_fees));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_mid_answer_restarts_the_stream_with_another_server() {
    let chain = chain();
    let quitter = TestServer::register(chain.as_ref(), 1_000_000).await;
    let finisher = TestServer::register(chain.as_ref(), 1_000_000).await;
    let client = client(&chain).await;
    let start = total(&chain);
    let request = client
        .ask(
            Ask::new(MODEL, "Tell me a story.")
                .servers(ServerChoice::Explicit(vec![quitter.authority(), finisher.authority()])),
        )
        .await
        .unwrap();
    let mut events = request.events();
    let mut locked = quitter.lock(chain.as_ref(), &request.address()).await.unwrap();
    quitter.append(chain.as_ref(), &mut locked, "Once upon", false).await.unwrap();
    assert_eq!(events.next().await.unwrap().unwrap(), AnswerEvent::Text("Once upon".into()));
    quitter.release(chain.as_ref(), &locked).await.unwrap();
    assert_eq!(events.next().await.unwrap().unwrap(), AnswerEvent::Restarted { server: quitter.authority() });
    finisher.serve(chain.as_ref(), &request.address(), &["A time ", "ago."], 50).await;
    let mut text = String::new();
    loop {
        match events.next().await.unwrap().unwrap() {
            AnswerEvent::Text(piece) => text.push_str(&piece),
            AnswerEvent::Completed(receipt) => {
                assert_eq!(receipt.server, finisher.authority());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(text, "A time ago.");
    let state = request.state().await.unwrap();
    assert_eq!(state.release_count, 1);
    request.close().await.unwrap();
    let fees = request.transaction_fees() + quitter.fees() + finisher.fees();
    assert_eq!(start - total(&chain), u128::from(fees));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reloaded_by_address_and_split_utf8() {
    let chain = chain();
    let server = TestServer::register(chain.as_ref(), 1_000_000).await;
    let client = client(&chain).await;
    let request = client.ask(Ask::new(MODEL, "Say é and 日本").to_servers([server.authority()])).await.unwrap();
    let mut locked = server.lock(chain.as_ref(), &request.address()).await.unwrap();
    // "é" and "日" cut between chunks: the client holds the partial bytes back.
    let text = "é 日本".as_bytes();
    for (i, part) in [&text[..1], &text[1..4], &text[4..]].iter().enumerate() {
        let sealed = locked.sealer.seal_chunk(part, i == 2).unwrap();
        server.append_raw(chain.as_ref(), &locked, &sealed, i == 2).await.unwrap();
    }
    server.complete(chain.as_ref(), &locked, 9).await.unwrap();
    let again = client.request(&request.address()).await.unwrap();
    let pieces: Vec<String> = again.stream().map(Result::unwrap).collect().await;
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')), "{pieces:?}");
    assert_eq!(pieces.concat(), "é 日本");
    let stranger = Client::new(Arc::clone(&chain), funded(chain.as_ref(), FUNDS).await);
    assert!(matches!(stranger.request(&request.address()).await, Err(ClientError::Invalid(_))));
    assert_eq!(again.model(), MODEL);
    let _ = client.address().to_string();
    let _ = chain.admin().pubkey();
}
