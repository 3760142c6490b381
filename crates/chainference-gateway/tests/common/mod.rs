//! What the gateway's HTTP tests share: serving a gateway on a free port, and counting the
//! request accounts a wallet still has on chain.

#![allow(dead_code, clippy::unwrap_used)]

use chainference_client::chain::{AccountFilter, address};
use chainference_client::core::state::RequestHeader;
use chainference_client::{Address, Chain, EmbeddedChain};
use chainference_gateway::Gateway;

/// Serves `gateway` standalone ([`Gateway::serve`], as `chainference gateway` does) on a free
/// port; returns its base URL (`http://127.0.0.1:PORT/v1`).
pub async fn serve(gateway: Gateway) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    base
}

/// Request accounts of `payer` still on chain (open, settled or not yet closed).
pub async fn requests_of(chain: &EmbeddedChain, payer: &Address) -> usize {
    let filter = AccountFilter::Memcmp { offset: RequestHeader::CLIENT_OFFSET, bytes: payer.to_bytes().to_vec() };
    chain.program_accounts(&address(&chain.program().id), &[filter]).await.unwrap().len()
}
