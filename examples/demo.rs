//! The most complete flow that runs today: one request's whole life through core's state
//! machine, with real HPKE keys, real sealing and opening, and real prices. (The end-to-end demo
//! on the embedded chain with the real model replaces it once the program, SDKs and model land.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic
)]

use chainference::core::envelope::{ClientSecret, ResponseSealer, ServerKeyPair, seal_prompt};
use chainference::core::lifecycle::{Event, NewRequest, ServerView};
use chainference::core::pricing::ServerStats;
use chainference::core::state::{ConfigParams, RequestStatus};
use chainference::core::{builders::Program, envelope, model::ModelId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let program = Program::default();
    let params = ConfigParams::default();
    let model = ModelId::parse("HuggingFaceTB/SmolLM2-135M-Instruct:q4_1")?.canonical();
    let client_wallet = [11u8; 32];
    let servers = [ServerKeyPair::generate()?, ServerKeyPair::generate()?];
    let authorities = [[21u8; 32], [22u8; 32]];
    let prices = [2_000_000u64, 3_000_000];
    println!("servers: {} at {} and {} lamports per million tokens", model, prices[0], prices[1]);

    // The client secret comes from a wallet signature; here, a fixed stand-in signature.
    let secret = ClientSecret::from_wallet_signature(&[42u8; 64]);
    let (request, bump) = program.request(&client_wallet, 1);
    let keys = secret.request_keys(&request);
    let prompt = b"What is the capital of France?";
    let server_keys = [servers[0].public_key(), servers[1].public_key()];
    let sealed = seal_prompt(&request, &server_keys, &keys.prompt_public_key(), prompt)?;
    println!("prompt: {} bytes sealed to 2 servers and the client: {} bytes", prompt.len(), sealed.len());

    let now = 1_800_000_000;
    let new = NewRequest {
        client: client_wallet,
        nonce: 1,
        bump,
        response_bump: program.response(&request).1,
        stake: 10_000_000,
        max_tokens: 512,
        timeout: 0,
        min_completed: 0,
        min_success_bps: 0,
        allowed_count: 2,
        prompt_len: u32::try_from(sealed.len())?,
    };
    let mut header = new.create(&params, now)?;
    header.apply(Event::PromptWritten { signer: &client_wallet, offset: 0, len: new.prompt_len }, now)?;
    println!(
        "request {}: {:?}, deadline in {} s",
        chainference::core::base58::encode(&request),
        header.status,
        header.timeout
    );

    let view = ServerView {
        authority: &authorities[1],
        active: true,
        stats: ServerStats::default(),
        price_for_model: Some(prices[1]),
    };
    header.apply(Event::Lock { server: view, allowed: &authorities }, now + 1)?;
    let opened = envelope::open_prompt(&sealed, &request, 1, servers[1].secret())?;
    println!("server 2 locked it and opened the prompt: {:?}", String::from_utf8_lossy(&opened));

    let answer = ["The capital ", "of France ", "is Paris."];
    let mut sealer = ResponseSealer::new(&keys.response_public_key(), &request, &authorities[1])?;
    let chunks: Vec<Vec<u8>> = answer
        .iter()
        .enumerate()
        .map(|(i, part)| sealer.seal_chunk(part.as_bytes(), i + 1 == answer.len()))
        .collect::<Result<_, _>>()?;
    for _ in &chunks {
        header.apply(Event::Append { server: &authorities[1], response_finished: false }, now + 2)?;
    }
    let text = keys.response_opener(&request, &authorities[1]).open_all(chunks.iter().map(Vec::as_slice))?;
    println!("client opened {} sealed chunks: {:?}", chunks.len(), String::from_utf8_lossy(&text));

    let tokens = 42;
    let fx = header.apply(
        Event::Complete { server: &authorities[1], tokens, response_finished: true, fee_bps: params.fee_bps },
        now + 3,
    )?;
    assert_eq!(header.status, RequestStatus::Completed);
    println!(
        "completed: {tokens} tokens cost {} lamports; server gets {}, treasury {} (fee {} bps), client refund {}",
        header.cost, fx.to_server, fx.to_treasury, params.fee_bps, fx.to_client
    );
    let out = fx.escrow_out()?;
    if out != new.stake {
        return Err(format!("lamports not conserved: {out} paid out of a {} stake", new.stake).into());
    }
    println!("conserved: {} + {} + {} = stake {}", fx.to_server, fx.to_treasury, fx.to_client, new.stake);
    let history = keys.open_own_prompt(&sealed, &request)?;
    println!("history: the client reopens its own prompt from the envelope: {:?}", String::from_utf8_lossy(&history));
    Ok(())
}
