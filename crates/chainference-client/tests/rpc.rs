//! The client over `RpcChain` against a real validator (`chainference-localnet`, started by
//! `cargo xtask test`, which sets `CHAINFERENCE_RPC_URL` and `CHAINFERENCE_LOCALNET_ADMIN`).
//! Lamports are conserved over every account the flow touches.

#![cfg(feature = "rpc")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod common;

use std::time::Instant;

use chainference_client::chain::{Chain, Keypair, RpcChain, Signer, address, instruction};
use chainference_client::{AnswerEvent, Ask, Client};
use chainference_core::builders::{self, Program};
use chainference_core::state::ConfigParams;
use common::{MODEL, TestServer, funded};
use futures::StreamExt;

fn localnet() -> Option<(String, Keypair)> {
    let Ok(url) = std::env::var("CHAINFERENCE_RPC_URL") else {
        assert!(
            std::env::var_os("CHAINFERENCE_REQUIRE_RPC").is_none(),
            "CHAINFERENCE_REQUIRE_RPC is set but CHAINFERENCE_RPC_URL is not"
        );
        eprintln!("skipped: no CHAINFERENCE_RPC_URL (cargo xtask test starts a validator and sets it)");
        return None;
    };
    let path = std::env::var("CHAINFERENCE_LOCALNET_ADMIN").expect("CHAINFERENCE_LOCALNET_ADMIN");
    let text = std::fs::read_to_string(&path).unwrap();
    let bytes: Vec<u8> = text.trim().trim_matches(['[', ']']).split(',').map(|b| b.trim().parse().unwrap()).collect();
    Some((url, Keypair::try_from(bytes.as_slice()).unwrap()))
}

/// Initializes the config once per validator (the admin is its upgrade authority).
async fn configure(chain: &RpcChain, admin: &Keypair) {
    let program = Program::default();
    if chain.account(&address(&program.config)).await.unwrap().is_some() {
        return;
    }
    chain.airdrop(&admin.pubkey(), 2_000_000_000).await.unwrap();
    let ix = builders::init_config(&program, &admin.pubkey().to_bytes(), ConfigParams::default());
    if let Err(err) = chain.send(&[instruction(ix)], &[admin]).await {
        // Another test may have configured it in between.
        assert!(chain.account(&address(&program.config)).await.unwrap().is_some(), "init_config: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_stream_settle_close_on_a_real_validator() {
    let Some((url, admin)) = localnet() else { return };
    let chain = std::sync::Arc::new(RpcChain::connect(url));
    configure(&chain, &admin).await;
    let server = TestServer::register(chain.as_ref(), 2_000_000).await;
    let client = Client::new(std::sync::Arc::clone(&chain), funded(chain.as_ref(), 5_000_000_000).await);
    let program = Program::default();

    let ask = Ask::new(MODEL, "What is the capital of France?").to_servers([server.authority()]).max_tokens(400);
    let estimate = client.estimate(&ask).await.unwrap();
    let watched = |request: &chainference_client::Address| {
        let response = address(&program.response(&request.to_bytes()).0);
        vec![client.address(), server.authority(), address(&program.treasury), *request, response]
    };
    let sum = |balances: Vec<u64>| balances.iter().map(|b| u128::from(*b)).sum::<u128>();
    let balance_before = client.balance().await.unwrap();
    let sent_at = Instant::now();
    let request = client.ask(ask).await.unwrap();
    let accounts = watched(&request.address());
    let mut before = Vec::new();
    for account in &accounts {
        before.push(chain.balance(account).await.unwrap());
    }
    // Counted from after the open: the request's own lamports are in `before` already.
    let open_fees = request.transaction_fees();
    assert_eq!(balance_before - client.balance().await.unwrap(), estimate.total_needed());

    let mut events = request.events();
    let serving = async {
        server.serve(chain.as_ref(), &request.address(), &["The capital ", "of France ", "is Paris."], 300).await;
    };
    let reading = async {
        let mut text = String::new();
        let mut first = None;
        loop {
            match events.next().await.expect("events ended").unwrap() {
                AnswerEvent::Text(piece) => {
                    first.get_or_insert_with(|| sent_at.elapsed());
                    text.push_str(&piece);
                }
                AnswerEvent::Completed(receipt) => return (text, first.unwrap(), receipt),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let ((), (text, first, receipt)) = tokio::join!(serving, reading);
    println!("send to first decrypted chunk (validator): {first:?}");
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!((receipt.cost, receipt.fee, receipt.refund), (600, 60, 200));
    request.close().await.unwrap();
    let mut after = Vec::new();
    for account in &accounts {
        after.push(chain.balance(account).await.unwrap());
    }
    let fees = request.transaction_fees() - open_fees + server.fees();
    assert_eq!(sum(before) - sum(after), u128::from(fees), "lamports conserved over the touched accounts");
    println!("fees: client {} lamports, server {} lamports", request.transaction_fees(), server.fees());
}
