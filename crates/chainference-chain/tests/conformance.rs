//! The transport conformance suite on both backends: [`EmbeddedChain`] always, `RpcChain`
//! against a real validator when `CHAINFERENCE_RPC_URL` names one (`cargo xtask test` starts
//! `chainference-localnet` and sets it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chainference_chain::{EmbeddedChain, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_chain_conforms() {
    let chain = EmbeddedChain::start().expect("embedded chain");
    let report = conformance::run(&chain, chain.program()).await;
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.passed.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_chains_conform() {
    // The forwarding impls for Arc and Box are the ones the SDKs use to share one chain.
    let chain = std::sync::Arc::new(EmbeddedChain::start().expect("embedded chain"));
    let program = *chain.program();
    let boxed: Box<dyn chainference_chain::Chain> = Box::new(std::sync::Arc::clone(&chain));
    let report = conformance::run(&boxed, &program).await;
    assert!(report.failures.is_empty(), "{report}");
}

#[cfg(feature = "rpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_chain_conforms_on_a_real_validator() {
    use chainference_chain::RpcChain;
    let Some(url) = std::env::var("CHAINFERENCE_RPC_URL").ok() else {
        if std::env::var_os("CHAINFERENCE_REQUIRE_RPC").is_some() {
            panic!("CHAINFERENCE_REQUIRE_RPC is set but CHAINFERENCE_RPC_URL is not");
        }
        eprintln!("skipped: no CHAINFERENCE_RPC_URL (cargo xtask test starts a validator and sets it)");
        return;
    };
    let chain = RpcChain::connect(url);
    let program = chainference_core::builders::Program::default();
    let report = conformance::run(&chain, &program).await;
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.passed.len(), 11);
}
