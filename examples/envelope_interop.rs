//! Native side of the wasm interop test (`crates/chainference-wasm/tests/node/`): seals and opens
//! with chainference-core so the node test can check that what wasm seals, native opens, and the
//! reverse. Arguments and outputs are hex.
//!
//! ```text
//! envelope_interop seal <request> <server-seed> <client-signature> <prompt>   -> envelope
//! envelope_interop open <request> <server-seed> <slot> <envelope>             -> prompt
//! envelope_interop open-own <request> <client-signature> <envelope>           -> prompt
//! envelope_interop stream <request> <server> <client-signature> <text>...     -> chunk per line
//! ```

#![allow(clippy::arithmetic_side_effects)]

use chainference::core::envelope::{self, ClientSecret, ResponseSealer, ServerKeyPair};

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex: {s}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or(""), 16).map_err(|e| format!("bad hex: {e}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn arr<const N: usize>(s: &str) -> Result<[u8; N], String> {
    unhex(s)?.try_into().map_err(|_| format!("expected {N} bytes"))
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["seal", request, seed, sig, prompt] => {
            let request = arr::<32>(request)?;
            let server = ServerKeyPair::from_seed(&arr::<32>(seed)?);
            let keys = ClientSecret::from_wallet_signature(&arr::<64>(sig)?).request_keys(&request);
            let sealed =
                envelope::seal_prompt(&request, &[server.public_key()], &keys.prompt_public_key(), &unhex(prompt)?)
                    .map_err(|e| e.to_string())?;
            println!("{}", hex(&sealed));
        }
        ["open", request, seed, slot, sealed] => {
            let server = ServerKeyPair::from_seed(&arr::<32>(seed)?);
            let slot: u8 = slot.parse().map_err(|e| format!("slot: {e}"))?;
            let opened = envelope::open_prompt(&unhex(sealed)?, &arr::<32>(request)?, slot, server.secret())
                .map_err(|e| e.to_string())?;
            println!("{}", hex(&opened));
        }
        ["open-own", request, sig, sealed] => {
            let request = arr::<32>(request)?;
            let keys = ClientSecret::from_wallet_signature(&arr::<64>(sig)?).request_keys(&request);
            println!("{}", hex(&keys.open_own_prompt(&unhex(sealed)?, &request).map_err(|e| e.to_string())?));
        }
        ["stream", request, server, sig, parts @ ..] => {
            let request = arr::<32>(request)?;
            let keys = ClientSecret::from_wallet_signature(&arr::<64>(sig)?).request_keys(&request);
            let mut sealer = ResponseSealer::new(&keys.response_public_key(), &request, &arr::<32>(server)?)
                .map_err(|e| e.to_string())?;
            for (i, part) in parts.iter().enumerate() {
                let chunk = sealer.seal_chunk(&unhex(part)?, i + 1 == parts.len()).map_err(|e| e.to_string())?;
                println!("{}", hex(&chunk));
            }
        }
        _ => return Err("usage: envelope_interop seal|open|open-own|stream ... (see the file's docs)".into()),
    }
    Ok(())
}
