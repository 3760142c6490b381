//! The books: every lamport of every wallet, the treasury and the program's accounts before
//! and after, and every transaction fee in between, read straight from the validator.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result, bail};
use chainference_chain::{Address, Chain, RpcChain};
use chainference_core::builders::Program;
use serde_json::{Value, json};

/// Lamports held by a set of accounts at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The slot it was taken at (about).
    pub slot: u64,
    /// Every account's lamports.
    pub lamports: BTreeMap<Address, u64>,
    /// Request and response accounts that exist.
    pub request_accounts: usize,
    /// One line per such account: what it is, its state and whose it is (to find who left it).
    pub request_details: Vec<String>,
}

impl Snapshot {
    /// The sum.
    pub fn total(&self) -> u128 {
        self.lamports.values().map(|l| u128::from(*l)).sum()
    }
}

/// Reads `wallets`, the treasury and every account the program owns.
pub async fn snapshot(chain: &RpcChain, program: &Program, wallets: &[Address]) -> Result<Snapshot> {
    let slot = chain.clock().await?.slot;
    let mut lamports = BTreeMap::new();
    let mut addresses: Vec<Address> = wallets.to_vec();
    addresses.push(chainference_chain::address(&program.treasury));
    for (address, account) in addresses.iter().zip(chain.accounts(&addresses).await?) {
        lamports.insert(*address, account.map_or(0, |a| a.lamports));
    }
    let mut request_details = Vec::new();
    for (address, account) in chain.program_accounts(&chainference_chain::address(&program.id), &[]).await? {
        if let Some(line) = describe(&address, &account.data) {
            request_details.push(line);
        }
        lamports.insert(address, account.lamports);
    }
    Ok(Snapshot { slot, lamports, request_accounts: request_details.len(), request_details })
}

/// A request or response account in one line; `None` for the program's other accounts.
fn describe(address: &Address, data: &[u8]) -> Option<String> {
    use chainference_core::state::{AccountKind, RequestHeader, ResponseHeader};
    let name = chainference_chain::address;
    match data.first().copied() {
        Some(kind) if kind == AccountKind::Request as u8 => Some(match RequestHeader::decode(data) {
            Ok(h) => format!(
                "request {address}: {:?}, client {}, locked by {}, deadline {}, released {} times, \
                 prompt {}/{} bytes, declined {:#04x}, settled at {}",
                h.status,
                name(&h.client),
                name(&h.locked_by),
                h.deadline,
                h.release_count,
                h.prompt_written,
                h.prompt_len,
                h.declined,
                h.settled_at
            ),
            Err(err) => format!("request {address}: undecodable ({err})"),
        }),
        Some(kind) if kind == AccountKind::Response as u8 => Some(match ResponseHeader::decode(data) {
            Ok(h) => format!(
                "response {address}: of request {}, server {}, {} chunks, finished {}",
                name(&h.request),
                name(&h.server),
                h.chunk_count,
                h.finished
            ),
            Err(err) => format!("response {address}: undecodable ({err})"),
        }),
        _ => None,
    }
}

/// What the wallets' transactions cost, read from the blocks of the chain as it is now.
#[derive(Clone, Debug, Default)]
pub struct Fees {
    /// Transactions on chain.
    pub transactions: u64,
    /// Their signatures.
    pub signatures: u64,
    /// Their fees, lamports.
    pub lamports: u64,
    /// Transactions the node's history lists but its blocks no longer hold: confirmed before
    /// the validator restart and rolled back by it.
    pub rolled_back: u64,
    /// Each account's lamport change summed over these transactions (from their pre and post
    /// balances), to compare with the snapshots account by account.
    pub deltas: BTreeMap<String, i128>,
}

/// Every transaction a wallet in `wallets` signed after `after_slot` and up to `up_to_slot`,
/// each counted once. The
/// fee comes from the block at the slot the history names (`getTransaction` finds nothing from
/// before a restart; `getBlock` does), and a transaction missing from its block is one the
/// restart rolled back.
pub async fn fees_between(
    http: &reqwest::Client,
    rpc: &str,
    wallets: &[Address],
    (after_slot, up_to_slot): (u64, u64),
) -> Result<Fees> {
    let mut by_slot: BTreeMap<u64, HashSet<String>> = BTreeMap::new();
    for wallet in wallets {
        let mut before: Option<String> = None;
        'pages: loop {
            let mut config = json!({ "limit": 1000, "commitment": "confirmed" });
            if let Some(before) = &before {
                config["before"] = json!(before);
            }
            let page = call(http, rpc, "getSignaturesForAddress", json!([wallet.to_string(), config])).await?;
            let Some(entries) = page.as_array() else { bail!("getSignaturesForAddress: not a list") };
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                let slot = entry["slot"].as_u64().unwrap_or(0);
                let signature = entry["signature"].as_str().unwrap_or_default().to_string();
                before = Some(signature.clone());
                if slot <= after_slot {
                    break 'pages;
                }
                if slot > up_to_slot {
                    continue;
                }
                by_slot.entry(slot).or_default().insert(signature);
            }
        }
    }
    let mut fees = Fees::default();
    for (slot, ours) in by_slot {
        let block = call(
            http,
            rpc,
            "getBlock",
            json!([slot, { "encoding": "json", "transactionDetails": "full", "rewards": false,
                           "commitment": "confirmed", "maxSupportedTransactionVersion": 0 }]),
        )
        .await
        .unwrap_or_else(|err| {
            eprintln!("soak: getBlock {slot}: {err}");
            Value::Null
        });
        let mut found = 0u64;
        for tx in block["transactions"].as_array().into_iter().flatten() {
            let signatures = tx["transaction"]["signatures"].as_array().cloned().unwrap_or_default();
            let first = signatures.first().and_then(Value::as_str).unwrap_or_default();
            if !ours.contains(first) {
                continue;
            }
            let fee = tx["meta"]["fee"].as_u64().with_context(|| format!("no fee for {first} in block {slot}"))?;
            let keys = tx["transaction"]["message"]["accountKeys"].as_array().cloned().unwrap_or_default();
            let pre = tx["meta"]["preBalances"].as_array().cloned().unwrap_or_default();
            let post = tx["meta"]["postBalances"].as_array().cloned().unwrap_or_default();
            for ((key, pre), post) in keys.iter().zip(&pre).zip(&post) {
                let change = i128::from(post.as_u64().unwrap_or(0)) - i128::from(pre.as_u64().unwrap_or(0));
                if change != 0 {
                    *fees.deltas.entry(key.as_str().unwrap_or_default().to_string()).or_default() += change;
                }
            }
            found += 1;
            fees.transactions += 1;
            fees.signatures += signatures.len() as u64;
            fees.lamports += fee;
        }
        fees.rolled_back += ours.len() as u64 - found;
    }
    Ok(fees)
}

/// One JSON-RPC call; its `result`.
pub async fn call(http: &reqwest::Client, rpc: &str, method: &str, params: Value) -> Result<Value> {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    for attempt in 0..5u32 {
        let response = match http.post(rpc).json(&body).send().await {
            Ok(response) => response,
            Err(err) if attempt < 4 => {
                eprintln!("soak: {method}: {err}; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let value: Value = response.json().await?;
        if let Some(error) = value.get("error") {
            bail!("{method}: {error}");
        }
        return Ok(value["result"].clone());
    }
    bail!("{method}: no answer")
}
