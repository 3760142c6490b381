//! `chainference gateway`: serves [`chainference_gateway`] (OpenAI's chat completions API over
//! the network) until Ctrl-C, paying from the wallet on the cluster, or with `--demo` on the
//! embedded chain with two local servers and the real model, all in one process.

use std::sync::Arc;

use anyhow::{Context, Result};
use chainference_chain::{Chain, EmbeddedChain, Keypair, Signer};
use chainference_client::Client;
use chainference_gateway::{Gateway, GatewayConfig};
use chainference_server::InferenceBackend;
use chainference_server::runtime::{Server, ServerHandle};
use serde_json::json;

use crate::args::GatewayArgs;
use crate::output::load_model;

/// Runs the gateway until Ctrl-C. `cluster` connects to the cluster and reads the wallet
/// (`--rpc`, `--keypair`); it is not called with `--demo`.
pub async fn run(args: &GatewayArgs, cluster: impl FnOnce() -> Result<(Arc<dyn Chain>, Keypair)>) -> Result<()> {
    let mut config = GatewayConfig::new()
        .prompt_allowance(args.prompt_allowance)
        .default_max_tokens(args.default_max_tokens)
        .request_timeout_secs(args.request_timeout);
    if let Some(key) = &args.api_key {
        config = config.api_key(key.clone());
    }
    // The demo's local servers run as long as the gateway serves.
    let (gateway, _servers) = if args.demo {
        demo_gateway(config).await?
    } else {
        let (chain, wallet) = cluster()?;
        let gateway = Gateway::new(Client::new(chain, wallet), config);
        // prompt_tokens on a cluster too: the model's own tokenizer, from a local GGUF.
        let gateway = match load_model(args.tokenizer_model.clone()) {
            Ok(model) => gateway.token_counter(Arc::new(model)),
            Err(err) if args.tokenizer_model.is_none() => {
                eprintln!("no local model to count prompt tokens with ({err:#}); usage reports prompt_tokens 0");
                gateway
            }
            Err(err) => return Err(err),
        };
        (gateway, Vec::new())
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    eprintln!("OpenAI-compatible gateway on http://{local}/v1 (wallet {})", gateway.client().address());
    // Scripts (and the tests) read this line to find the port when --listen asked for port 0.
    println!("{}", json!({ "listening": format!("http://{local}/v1") }));
    gateway
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving HTTP")
}

/// The embedded chain with two local servers selling the real model, and a gateway paying from
/// a funded wallet that counts prompt tokens with the same model.
async fn demo_gateway(config: GatewayConfig) -> Result<(Gateway, Vec<ServerHandle>)> {
    let embedded = Arc::new(
        EmbeddedChain::start().context("starting the embedded chain (build the .so: `cargo xtask build-sbf`)")?,
    );
    let model = Arc::new(load_model(None)?);
    let mut servers = Vec::new();
    for price in [2_000_000, 3_000_000] {
        let wallet = Keypair::new();
        embedded.airdrop(&wallet.pubkey(), 10_000_000_000).await?;
        let handle = Server::builder(Arc::clone(&embedded), wallet, Arc::clone(&model))
            .program(*embedded.program())
            .price(price)
            .max_concurrent(2)
            .start()
            .await?;
        servers.push(handle);
    }
    let wallet = Keypair::new();
    embedded.airdrop(&wallet.pubkey(), 100_000_000_000).await?;
    let program = *embedded.program();
    let chain: Arc<dyn Chain> = embedded;
    let counter: Arc<dyn InferenceBackend> = model;
    let gateway = Gateway::new(Client::with_program(chain, wallet, program), config).token_counter(counter);
    Ok((gateway, servers))
}
