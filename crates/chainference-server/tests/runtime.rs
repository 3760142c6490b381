//! The server runtime on the embedded chain with the real program `.so` and the real model:
//! clients from the client SDK ask, servers answer, settlement is exact, lamports are conserved.

#![cfg(feature = "candle")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chainference_chain::{Chain, EmbeddedChain, Keypair, Signer};
use chainference_client::{Answer, AnswerEvent, Ask, Client, RequestState};
use chainference_core::pricing;
use chainference_core::prompt::{ChatMessage, Role};
use chainference_core::state::{ConfigParams, DeclineReasons, RequestStatus, ServerHeader};
use chainference_server::candle::{CandleBackend, ModelSource};
use chainference_server::runtime::{AcceptPolicy, ReleaseReason, Server, ServerBuilder, ServerEvent, ServerHandle};
use chainference_server::{
    BackendError, Generation, GenerationEvent, GenerationStream, InferenceBackend, InferenceBackendExt,
};
use futures::StreamExt;
use tokio::sync::broadcast;

const FUNDS: u64 = 20_000_000_000;

/// One model for the whole binary (loading takes seconds).
fn model() -> Arc<CandleBackend> {
    static MODEL: OnceLock<Arc<CandleBackend>> = OnceLock::new();
    Arc::clone(MODEL.get_or_init(|| {
        Arc::new(CandleBackend::load(&ModelSource::default_model()).expect("the model (run `cargo xtask setup`)"))
    }))
}

fn chain() -> Arc<EmbeddedChain> {
    Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"))
}

async fn funded(chain: &EmbeddedChain) -> Keypair {
    let wallet = Keypair::new();
    chain.airdrop(&wallet.pubkey(), FUNDS).await.unwrap();
    wallet
}

fn france() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are a helpful assistant."),
        ChatMessage::new(Role::User, "What is the capital of France?"),
    ]
}

fn story() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are a helpful assistant."),
        ChatMessage::new(Role::User, "Write a long story about a lighthouse keeper and a storm."),
    ]
}

/// A copy of the wallet for a second process with the same identity (a restart).
fn same_wallet(wallet: &Keypair) -> Keypair {
    Keypair::try_from(wallet.to_bytes().as_slice()).unwrap()
}

fn builder<B: InferenceBackend + 'static>(
    chain: &Arc<EmbeddedChain>,
    wallet: Keypair,
    backend: B,
    price: u64,
) -> ServerBuilder<Arc<EmbeddedChain>, B> {
    Server::builder(Arc::clone(chain), wallet, backend)
        .program(*chain.program())
        .price(price)
        .flush_interval(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(100))
}

async fn start<B: InferenceBackend + 'static>(
    chain: &Arc<EmbeddedChain>,
    wallet: Keypair,
    backend: B,
    price: u64,
) -> ServerHandle {
    builder(chain, wallet, backend, price).start().await.unwrap()
}

async fn next_event(events: &mut broadcast::Receiver<ServerEvent>, want: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let event = events.recv().await.unwrap();
            if want(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the server event did not come")
}

/// Collects a request's answer, counting restarts.
async fn collect_answer(request: &chainference_client::PendingRequest<Arc<EmbeddedChain>>) -> (Answer, u32) {
    let mut events = request.events();
    let mut text = String::new();
    let mut restarts = 0;
    let receipt = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            match events.next().await.expect("events ended").unwrap() {
                AnswerEvent::Text(piece) => text.push_str(&piece),
                AnswerEvent::Restarted { .. } => {
                    restarts += 1;
                    text.clear();
                }
                AnswerEvent::Completed(receipt) => break receipt,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the answer did not come");
    (Answer { text, receipt }, restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asks_the_server_answers_and_settlement_is_exact() {
    let chain = chain();
    let server_wallet = funded(&chain).await;
    let client_wallet = funded(&chain).await;
    // Airdrops pay fees too: count from after them.
    let start_total = chain.total_lamports();
    // A flush interval longer than the short answer takes, so it goes out in one transaction.
    let server = builder(&chain, server_wallet, model(), 2_000_000)
        .flush_interval(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let mut events = server.events();
    let registered_address = server.server_address();
    let registered =
        ServerHeader::decode(&chain.account(&server.server_address()).await.unwrap().unwrap().data).unwrap();
    assert!(registered.active());
    assert_eq!(registered.hpke_key, server.public_key().await);

    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let request = client.ask(Ask::chat(model().model_id(), france()).max_tokens(400)).await.unwrap();
    let (answer, restarts) = collect_answer(&request).await;
    assert_eq!(restarts, 0);
    assert_eq!(answer.text, "The capital of France is Paris.");

    // The billed tokens are checkable: the same job on the bare backend counts the same.
    let (bare, usage) = model().complete(Generation { messages: france(), ..Generation::user("", 400) }).await.unwrap();
    assert_eq!(bare, answer.text);
    let receipt = &answer.receipt;
    assert_eq!(receipt.tokens, usage.billed_tokens());
    assert_eq!(receipt.server, server.authority());
    let settlement =
        pricing::settle(receipt.tokens, 2_000_000, receipt.stake, ConfigParams::default().fee_bps).unwrap();
    assert_eq!((receipt.cost, receipt.fee, receipt.refund), (settlement.cost, settlement.fee, settlement.refund));

    // A short answer is one transaction: lock + final chunk + complete.
    let completed = next_event(&mut events, |e| matches!(e, ServerEvent::Completed { .. })).await;
    let ServerEvent::Completed { tokens, earned, transactions, .. } = completed else { unreachable!() };
    assert_eq!(tokens, receipt.tokens);
    assert_eq!(earned, receipt.server_share);
    assert_eq!(transactions, 1, "lock, append and complete in one transaction");

    // Rotation: a new key is published, and the next request (sealed to it) is served.
    let old_key = server.public_key().await;
    let new_key = server.rotate_key().await.unwrap();
    assert_ne!(new_key, old_key);
    let published =
        ServerHeader::decode(&chain.account(&server.server_address()).await.unwrap().unwrap().data).unwrap();
    assert_eq!(published.hpke_key, new_key);
    let second = client.ask(Ask::chat(model().model_id(), story()).max_tokens(300)).await.unwrap();
    let (long, _) = collect_answer(&second).await;
    assert!(long.receipt.tokens <= 300 && long.text.len() > 200, "{long:?}");
    let completed = next_event(&mut events, |e| matches!(e, ServerEvent::Completed { .. })).await;
    let ServerEvent::Completed { transactions, .. } = completed else { unreachable!() };
    assert!(transactions >= 2, "a long answer streams over several transactions");

    request.close().await.unwrap();
    second.close().await.unwrap();
    let counters = server.shutdown().await.unwrap();
    assert_eq!(counters.completed, 2);
    assert_eq!(counters.earned, receipt.server_share + long.receipt.server_share);
    let after = ServerHeader::decode(&chain.account(&registered_address).await.unwrap().unwrap().data).unwrap();
    assert!(!after.active(), "shutdown marks the server inactive");
    assert_eq!(after.stats.completed, 2);

    let fees = counters.fees_paid + request.transaction_fees() + second.transaction_fees();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}

/// The real model with a fault injected after `texts` pieces of text: a backend failing
/// mid-answer.
struct FailsMidAnswer {
    inner: Arc<CandleBackend>,
    texts: u32,
}

#[async_trait::async_trait]
impl InferenceBackend for FailsMidAnswer {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    async fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, BackendError> {
        self.inner.prompt_tokens(messages).await
    }
    async fn generate(&self, job: Generation) -> Result<GenerationStream, BackendError> {
        let seen = Arc::new(AtomicU32::new(0));
        let limit = self.texts;
        let inner = self.inner.generate(job).await?;
        Ok(Box::pin(inner.map(move |event| match event {
            Ok(GenerationEvent::Text { .. }) if seen.fetch_add(1, Ordering::Relaxed) >= limit => {
                Err(BackendError::Inference("injected fault: the GPU fell off the bus".into()))
            }
            other => other,
        })))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_passes_declines_on_chain_once_unless_told_not_to() {
    let chain = chain();
    let (declining_wallet, silent_wallet, client_wallet, busy_wallet) =
        (funded(&chain).await, funded(&chain).await, funded(&chain).await, funded(&chain).await);
    let start_total = chain.total_lamports();
    let client_address = client_wallet.pubkey();
    let turned_away = || AcceptPolicy { deny_clients: vec![client_address], ..AcceptPolicy::default() };
    let declining = builder(&chain, declining_wallet, model(), 1_000_000).accept(turned_away()).start().await.unwrap();
    let silent =
        builder(&chain, silent_wallet, model(), 1_000_000).accept(turned_away()).declines(false).start().await.unwrap();
    let mut events = declining.events();

    // The declining server is busy (one request at a time) with a long answer for another client.
    let other = Client::with_program(Arc::clone(&chain), busy_wallet, *chain.program());
    let long = other
        .ask(Ask::chat(model().model_id(), story()).max_tokens(400).to_servers([declining.authority()]))
        .await
        .unwrap();
    next_event(&mut events, |e| matches!(e, ServerEvent::Locked { .. })).await;

    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let ask = Ask::chat(model().model_id(), france()).to_servers([declining.authority(), silent.authority()]);
    let request = client.ask(ask).await.unwrap();
    let declined = next_event(&mut events, |e| matches!(e, ServerEvent::Declined { .. })).await;
    let ServerEvent::Declined { request: which, reasons } = declined else { unreachable!() };
    assert_eq!((which, reasons), (request.address(), DeclineReasons::CLIENT_EXCLUDED));
    assert_eq!(long.state().await.unwrap().status, RequestStatus::Locked, "declined while busy answering");
    // Several polls later: declined once, by the declining server only, and still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let state = request.state().await.unwrap();
    assert_eq!((state.status, state.declined_by, state.decline_reasons), (RequestStatus::Open, 1, reasons));
    assert_eq!((declining.counters().declined, silent.counters().declined), (1, 0));

    request.cancel().await.unwrap();
    request.close().await.unwrap();
    long.wait().await.unwrap();
    long.close().await.unwrap();
    let declining = declining.shutdown().await.unwrap();
    let silent = silent.shutdown().await.unwrap();
    let fees = declining.fees_paid + silent.fees_paid + request.transaction_fees() + long.transaction_fees();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_mid_answer_releases_and_another_server_completes() {
    let chain = chain();
    let (failing_wallet, good_wallet, client_wallet) =
        (funded(&chain).await, funded(&chain).await, funded(&chain).await);
    let start_total = chain.total_lamports();
    let good_authority = good_wallet.pubkey();
    let client_address = client_wallet.pubkey();
    let good_again = same_wallet(&good_wallet);
    // The good server registers (the client's allow-list needs it on chain) but turns this
    // client away, and stops; it comes back after the failing server released the request.
    let registering = builder(&chain, good_wallet, model(), 3_000_000)
        .accept(AcceptPolicy { deny_clients: vec![client_address], ..AcceptPolicy::default() })
        .start()
        .await
        .unwrap();
    let registering = registering.abort().await;
    let failing = start(&chain, failing_wallet, FailsMidAnswer { inner: model(), texts: 40 }, 1_000_000).await;
    let mut failing_events = failing.events();

    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let ask = Ask::chat(model().model_id(), story()).max_tokens(250).to_servers([failing.authority(), good_authority]);
    let request = client.ask(ask).await.unwrap();
    let collecting = {
        let request = client.request(&request.address()).await.unwrap();
        tokio::spawn(async move { collect_answer(&request).await })
    };
    let released = next_event(&mut failing_events, |e| matches!(e, ServerEvent::Released { .. })).await;
    assert!(matches!(released, ServerEvent::Released { reason: ReleaseReason::BackendFailed(_), .. }), "{released:?}");
    assert_eq!(request.state().await.unwrap().status, RequestStatus::Open, "released, not stranded");

    let good = start(&chain, good_again, model(), 3_000_000).await;
    let (answer, restarts) = collecting.await.unwrap();
    assert_eq!(restarts, 1, "the client saw the failed server's text withdrawn");
    assert_eq!(answer.receipt.server, good_authority);
    let state: RequestState = request.state().await.unwrap();
    assert_eq!(state.release_count, 1);
    assert_eq!(answer.receipt.price_per_mtok, 3_000_000);

    request.close().await.unwrap();
    let failing = failing.shutdown().await.unwrap();
    let good = good.shutdown().await.unwrap();
    assert_eq!((failing.released, failing.completed), (1, 0));
    assert_eq!(good.completed, 1);
    let fees = registering.fees_paid + failing.fees_paid + good.fees_paid + request.transaction_fees();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_race_and_every_request_is_served_once() {
    let chain = chain();
    let (a_wallet, b_wallet, client_wallet) = (funded(&chain).await, funded(&chain).await, funded(&chain).await);
    let start_total = chain.total_lamports();
    let a = start(&chain, a_wallet, model(), 2_000_000).await;
    let b = start(&chain, b_wallet, model(), 2_000_000).await;
    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let mut requests = Vec::new();
    for _ in 0..3 {
        let ask = Ask::chat(model().model_id(), france()).max_tokens(200).to_servers([a.authority(), b.authority()]);
        requests.push(client.ask(ask).await.unwrap());
    }
    for request in &requests {
        let (answer, _) = collect_answer(request).await;
        assert_eq!(answer.text, "The capital of France is Paris.");
        request.close().await.unwrap();
    }
    let a = a.shutdown().await.unwrap();
    let b = b.shutdown().await.unwrap();
    assert_eq!(a.completed + b.completed, 3, "each request served exactly once: {a:?} {b:?}");
    assert_eq!(a.failed + b.failed + a.released + b.released, 0);
    println!("race: a {a:?}\n      b {b:?}");
    let fees = a.fees_paid + b.fees_paid + requests.iter().map(|r| r.transaction_fees()).sum::<u64>();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_answer_releases_and_serves_again() {
    let chain = chain();
    let (server_wallet, client_wallet) = (funded(&chain).await, funded(&chain).await);
    let start_total = chain.total_lamports();
    let restarted_wallet = same_wallet(&server_wallet);
    let first = start(&chain, server_wallet, model(), 2_000_000).await;
    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let request = client.ask(Ask::chat(model().model_id(), story()).max_tokens(250)).await.unwrap();
    let mut events = request.events();
    // Crash once the answer has started streaming.
    let started = events.next().await.unwrap().unwrap();
    assert!(matches!(started, AnswerEvent::Text(_)), "{started:?}");
    let crashed = first.abort().await;
    assert_eq!(request.state().await.unwrap().status, RequestStatus::Locked);
    let key_before =
        ServerHeader::decode(&chain.account(&request_server(&chain, &restarted_wallet)).await.unwrap().unwrap().data)
            .unwrap()
            .hpke_key;

    let second = start(&chain, restarted_wallet, model(), 2_000_000).await;
    assert_eq!(second.public_key().await, key_before, "the wallet-derived key is found again");
    // The release happened inside `start`, before anyone could subscribe; the first subscriber
    // still sees it (an operator's log, the soak's counters).
    let mut startup = second.events();
    let first_event = next_event(&mut startup, |_| true).await;
    assert!(matches!(first_event, ServerEvent::Registered { created: false, .. }), "{first_event:?}");
    let released = next_event(&mut startup, |e| matches!(e, ServerEvent::Released { .. })).await;
    assert!(matches!(released, ServerEvent::Released { reason: ReleaseReason::Restarted, .. }), "{released:?}");
    let mut restarts = 0;
    let receipt = loop {
        match events.next().await.unwrap().unwrap() {
            AnswerEvent::Text(_) => {}
            AnswerEvent::Restarted { .. } => restarts += 1,
            AnswerEvent::Completed(receipt) => break receipt,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(restarts, 1, "the half answer was withdrawn once");
    assert_eq!(receipt.server, second.authority());
    assert_eq!(request.state().await.unwrap().release_count, 1);
    request.close().await.unwrap();
    let second = second.shutdown().await.unwrap();
    assert_eq!((second.released, second.completed), (1, 1));
    let fees = crashed.fees_paid + second.fees_paid + request.transaction_fees();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}

fn request_server(chain: &EmbeddedChain, wallet: &Keypair) -> chainference_chain::Address {
    chainference_chain::address(&chain.program().server(&wallet.pubkey().to_bytes()))
}

/// The reply to the one transaction that locks, answers and completes a short request is lost,
/// and the chain refuses for a while after: the runtime waits for the chain to say what
/// happened and counts the completion (the soak found servers counting such a completion as a
/// failure, their counters disagreeing with their on-chain stats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_whose_reply_is_lost_is_counted_from_the_chain() {
    use chainference_chain::outage::Outage;
    let chain = chain();
    let (server_wallet, client_wallet) = (funded(&chain).await, funded(&chain).await);
    let start_total = chain.total_lamports();
    let outage = Arc::new(Outage::new(Arc::clone(&chain)));
    let server = Server::builder(Arc::clone(&outage), server_wallet, model())
        .program(*chain.program())
        .price(2_000_000)
        .flush_interval(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let mut events = server.events();
    outage.lose_next_reply(Duration::from_secs(2));
    let client = Client::with_program(Arc::clone(&chain), client_wallet, *chain.program());
    let request = client.ask(Ask::chat(model().model_id(), france()).max_tokens(400)).await.unwrap();
    let answer = request.wait().await.unwrap();
    assert_eq!(answer.text, "The capital of France is Paris.");
    let completed =
        next_event(&mut events, |e| matches!(e, ServerEvent::Completed { .. } | ServerEvent::Failed { .. })).await;
    assert!(matches!(completed, ServerEvent::Completed { .. }), "{completed:?}");
    request.close().await.unwrap();
    let counters = server.shutdown().await.unwrap();
    assert_eq!((counters.completed, counters.failed, counters.released), (1, 0, 0));
    // The lost reply carried the fee of its transaction (one signature): the runtime never saw it.
    let fees = counters.fees_paid + 5_000 + request.transaction_fees();
    assert_eq!(start_total - chain.total_lamports(), u128::from(fees), "lamports conserved");
}
