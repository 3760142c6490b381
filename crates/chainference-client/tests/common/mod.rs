//! A server role played by tests through core's rules and raw instructions (the server SDK is
//! a separate crate): register, lock, open the prompt, stream sealed chunks, complete, release.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chainference_client::chain::{Chain, ChainError, EmbeddedChain, Keypair, Signer, address, instruction};
use chainference_client::{Address, PromptPayload};
use chainference_core::builders::{self, Program, RequestRefs, ServerProfile};
use chainference_core::envelope::{self, ResponseSealer, ServerKeyPair};
use chainference_core::state::RequestAccount;

pub const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
pub const FUNDS: u64 = 50_000_000_000;

/// A started embedded chain shared by a test.
pub fn chain() -> Arc<EmbeddedChain> {
    Arc::new(EmbeddedChain::start().expect("embedded chain (build the .so with `cargo xtask build-sbf`)"))
}

pub async fn funded<C: Chain + ?Sized>(chain: &C, lamports: u64) -> Keypair {
    let wallet = Keypair::new();
    chain.airdrop(&wallet.pubkey(), lamports).await.unwrap();
    wallet
}

pub struct TestServer {
    pub wallet: Keypair,
    pub keys: ServerKeyPair,
    pub price: u64,
    pub program: Program,
    /// Fees this server paid.
    pub fees: AtomicU64,
}

impl TestServer {
    pub async fn register<C: Chain + ?Sized>(chain: &C, price: u64) -> TestServer {
        let wallet = funded(chain, FUNDS).await;
        let server = TestServer {
            wallet,
            keys: ServerKeyPair::generate().unwrap(),
            price,
            program: Program::default(),
            fees: AtomicU64::new(0),
        };
        let profile = ServerProfile { hpke_key: &server.keys.public_key(), endpoint: "", offers: &[(MODEL, price)] };
        let ix = builders::register_server(&server.program, &server.authority_bytes(), &profile).unwrap();
        server.send(chain, vec![instruction(ix)]).await.unwrap();
        // Tests count the fees paid after setup.
        server.fees.store(0, Ordering::Relaxed);
        server
    }

    pub fn authority(&self) -> Address {
        self.wallet.pubkey()
    }

    pub fn authority_bytes(&self) -> [u8; 32] {
        self.wallet.pubkey().to_bytes()
    }

    pub async fn send<C: Chain + ?Sized>(
        &self,
        chain: &C,
        ixs: Vec<chainference_client::chain::Instruction>,
    ) -> Result<(), ChainError> {
        match chain.send(&ixs, &[&self.wallet]).await {
            Ok(sent) => {
                self.fees.fetch_add(sent.fee, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                if let ChainError::Transaction { charged, .. } = &err {
                    self.fees.fetch_add(*charged, Ordering::Relaxed);
                }
                Err(err)
            }
        }
    }

    pub fn refs(&self, request: &Address, client: &[u8; 32]) -> RequestRefs {
        let request = request.to_bytes();
        RequestRefs { request, response: self.program.response(&request).0, client: *client }
    }

    /// Locks the request and decrypts its prompt with this server's slot.
    pub async fn lock<C: Chain + ?Sized>(&self, chain: &C, request: &Address) -> Result<Locked, ChainError> {
        let ix = builders::lock_request(&self.program, &self.authority_bytes(), &request.to_bytes());
        self.send(chain, vec![instruction(ix)]).await?;
        let data = chain.account(request).await?.expect("request").data;
        let decoded = RequestAccount::decode(&data).unwrap();
        let slot = decoded.allowed.iter().position(|a| *a == self.authority_bytes()).expect("allowed") as u8;
        let plain = envelope::open_prompt(decoded.prompt, &request.to_bytes(), slot, self.keys.secret()).unwrap();
        let payload = PromptPayload::decode(&plain).unwrap();
        let sealer = ResponseSealer::new(decoded.response_key, &request.to_bytes(), &self.authority_bytes()).unwrap();
        Ok(Locked { request: *request, client: decoded.header.client, payload, sealer })
    }

    /// Appends one sealed chunk.
    pub async fn append<C: Chain + ?Sized>(
        &self,
        chain: &C,
        locked: &mut Locked,
        text: &str,
        is_final: bool,
    ) -> Result<(), ChainError> {
        let sealed = locked.sealer.seal_chunk(text.as_bytes(), is_final).unwrap();
        self.append_raw(chain, locked, &sealed, is_final).await
    }

    /// Appends bytes as they are (for tampering tests).
    pub async fn append_raw<C: Chain + ?Sized>(
        &self,
        chain: &C,
        locked: &Locked,
        bytes: &[u8],
        is_final: bool,
    ) -> Result<(), ChainError> {
        let refs = self.refs(&locked.request, &locked.client);
        let ix = builders::append_response(&self.program, &self.authority_bytes(), &refs, is_final, bytes).unwrap();
        self.send(chain, vec![instruction(ix)]).await
    }

    pub async fn complete<C: Chain + ?Sized>(&self, chain: &C, locked: &Locked, tokens: u64) -> Result<(), ChainError> {
        let refs = self.refs(&locked.request, &locked.client);
        let ix = builders::complete_request(&self.program, &self.authority_bytes(), &refs, tokens);
        self.send(chain, vec![instruction(ix)]).await
    }

    pub async fn release<C: Chain + ?Sized>(&self, chain: &C, locked: &Locked) -> Result<(), ChainError> {
        let refs = self.refs(&locked.request, &locked.client);
        let ix = builders::release_request(&self.program, &self.authority_bytes(), &refs.request, &refs.response);
        self.send(chain, vec![instruction(ix)]).await
    }

    /// Declines the open `request` with `reasons`, as a server whose policy passes on it.
    pub async fn decline<C: Chain + ?Sized>(
        &self,
        chain: &C,
        request: &Address,
        reasons: chainference_core::state::DeclineReasons,
    ) -> Result<(), ChainError> {
        let ix = builders::decline_request(&self.program, &self.authority_bytes(), &request.to_bytes(), reasons);
        self.send(chain, vec![instruction(ix)]).await
    }

    /// Locks, streams `pieces` (the last final), completes with `tokens`.
    pub async fn serve<C: Chain + ?Sized>(&self, chain: &C, request: &Address, pieces: &[&str], tokens: u64) -> Locked {
        let mut locked = self.lock(chain, request).await.unwrap();
        for (i, piece) in pieces.iter().enumerate() {
            self.append(chain, &mut locked, piece, i + 1 == pieces.len()).await.unwrap();
        }
        self.complete(chain, &locked, tokens).await.unwrap();
        locked
    }

    pub fn fees(&self) -> u64 {
        self.fees.load(Ordering::Relaxed)
    }
}

pub struct Locked {
    pub request: Address,
    pub client: [u8; 32],
    pub payload: PromptPayload,
    pub sealer: ResponseSealer,
}

pub fn addr(bytes: &[u8; 32]) -> Address {
    address(bytes)
}
