//! # chainference-program-tests
//!
//! A test bench for the Chainference program: LiteSVM with the **built SBF `.so`** loaded
//! (`cargo xtask build-sbf` makes it; [`chainference_host::program_so`] finds it), an admin who is
//! the program's upgrade authority, a controllable clock, transactions built from core's
//! builders (turned into Solana instructions by [`chainference_chain::instruction`], as the SDKs
//! do), and lamport accounting so every test can assert conservation.
//!
//! ```no_run
//! use chainference_program_tests::Bench;
//! let mut bench = Bench::new();
//! bench.init_config();
//! assert!(bench.svm.get_account(&chainference_chain::address(&bench.program.config)).is_some());
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
// LiteSVM's own result type; boxing it would only hide what tests inspect.
#![allow(clippy::result_large_err)]

use chainference_chain::{Address, address};
use chainference_core::builders::{self, BuiltInstruction, Program, RequestRefs, ServerProfile};
use chainference_core::envelope::{self, ClientSecret, ServerKeyPair};
use chainference_core::instruction::OpenRequestArgs;
use chainference_core::pda;
use chainference_core::state::{
    ConfigParams, RequestAccount, RequestHeader, ResponseAccount, ServerAccount, ServerHeader,
};
use litesvm::LiteSVM;
use litesvm::types::{FailedTransactionMetadata, TransactionMetadata};
use solana_account::Account;
use solana_clock::Clock;
use solana_instruction_error::InstructionError;
use solana_keypair::Keypair;
use solana_message::Message;
use solana_signer::Signer;
use solana_transaction::Transaction;
use solana_transaction_error::TransactionError;

/// The model every test server offers.
pub const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1";
/// Start of the bench's clock (unix seconds).
pub const T0: i64 = 1_800_000_000;
/// Lamports every funded wallet starts with.
pub const FUNDS: u64 = 100_000_000_000;

/// A keypair's address as core bytes.
pub fn key(k: &Keypair) -> [u8; 32] {
    k.pubkey().to_bytes()
}

/// The custom error code of a failed transaction, if it failed with one.
pub fn custom_code(err: &TransactionError) -> Option<u32> {
    match err {
        TransactionError::InstructionError(_, InstructionError::Custom(code)) => Some(*code),
        _ => None,
    }
}

/// A server the bench registered.
pub struct TestServer {
    /// The authority wallet.
    pub wallet: Keypair,
    /// Its HPKE key pair.
    pub keys: ServerKeyPair,
}

impl TestServer {
    /// The authority's address bytes.
    pub fn authority(&self) -> [u8; 32] {
        key(&self.wallet)
    }
}

/// A request the bench opened.
pub struct TestRequest {
    /// The request account.
    pub address: [u8; 32],
    /// Its response PDA.
    pub response: [u8; 32],
    /// The client's nonce.
    pub nonce: u64,
    /// The stake.
    pub stake: u64,
    /// The sealed prompt envelope.
    pub envelope: Vec<u8>,
    /// The plaintext prompt.
    pub prompt: Vec<u8>,
}

/// Parameters of a request to open, with defaults that any registered server can serve.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Allowed server authorities.
    pub allowed: Vec<[u8; 32]>,
    /// Their HPKE keys, in the same order.
    pub server_keys: Vec<[u8; 32]>,
    /// Stake in lamports.
    pub stake: u64,
    /// Most billable tokens.
    pub max_tokens: u32,
    /// Timeout (0 = default).
    pub timeout: u32,
    /// Filter: least completed.
    pub min_completed: u64,
    /// Filter: least success bps.
    pub min_success_bps: u16,
    /// The price cap, lamports per million tokens.
    pub max_price_per_mtok: u64,
    /// The model id.
    pub model: String,
    /// The plaintext prompt.
    pub prompt: Vec<u8>,
}

/// LiteSVM with the program loaded, a configured admin, and helpers.
pub struct Bench {
    /// The VM.
    pub svm: LiteSVM,
    /// The deployment's addresses.
    pub program: Program,
    /// The upgrade authority and config admin.
    pub admin: Keypair,
    /// The client wallet most tests use.
    pub client: Keypair,
    /// Its Chainference client secret.
    pub secret: ClientSecret,
    /// Transaction fees paid so far (burned by the runtime).
    pub fees: u64,
    nonce: u64,
}

impl Default for Bench {
    fn default() -> Self {
        Self::new()
    }
}

impl Bench {
    /// A VM with the program `.so` deployed at core's program id (upgradeable loader, with
    /// `admin` as upgrade authority), the clock at [`T0`], and a funded admin and client.
    pub fn new() -> Self {
        let so = chainference_host::program_so();
        let bytes = std::fs::read(&so)
            .unwrap_or_else(|e| panic!("{}: {e}; build it with `cargo xtask build-sbf`", so.display()));
        let mut svm = LiteSVM::new();
        let program = Program::default();
        svm.add_program(address(&program.id), &bytes).unwrap();
        let admin = Keypair::new();
        // LiteSVM deploys with no upgrade authority; make `admin` the authority, as a real
        // deploy would, so InitConfig's check runs against real ProgramData.
        let program_data = address(&pda::program_data_address(&program.id).0);
        let mut account = svm.get_account(&program_data).expect("ProgramData");
        account.data[12] = 1;
        account.data[13..45].copy_from_slice(&key(&admin));
        svm.set_account(program_data, account).unwrap();
        let client = Keypair::new();
        let mut bench = Bench {
            svm,
            program,
            admin,
            client,
            secret: ClientSecret::from_wallet_signature(&[0; 64]),
            fees: 0,
            nonce: 0,
        };
        bench.set_time(T0);
        bench.fund(&bench.admin.pubkey());
        bench.fund(&bench.client.pubkey());
        let signature = bench.client.sign_message(envelope::CLIENT_KEY_MESSAGE);
        bench.secret = ClientSecret::from_wallet_signature(signature.as_array());
        bench
    }

    /// Sets the clock's unix time.
    pub fn set_time(&mut self, unix: i64) {
        let mut clock: Clock = self.svm.get_sysvar();
        clock.unix_timestamp = unix;
        self.svm.set_sysvar(&clock);
    }

    /// The clock's unix time.
    pub fn now(&self) -> i64 {
        self.svm.get_sysvar::<Clock>().unix_timestamp
    }

    /// Gives `who` [`FUNDS`] lamports.
    pub fn fund(&mut self, who: &Address) {
        self.svm.airdrop(who, FUNDS).unwrap();
        self.svm.expire_blockhash();
    }

    /// A fresh funded wallet.
    pub fn wallet(&mut self) -> Keypair {
        let k = Keypair::new();
        self.fund(&k.pubkey());
        k
    }

    /// Lamports of an account (0 if it does not exist).
    pub fn lamports(&self, a: &[u8; 32]) -> u64 {
        self.svm.get_balance(&address(a)).unwrap_or(0)
    }

    /// Sum of lamports over accounts.
    pub fn total(&self, accounts: &[[u8; 32]]) -> u128 {
        let mut seen = Vec::new();
        accounts
            .iter()
            .filter(|a| {
                let new = !seen.contains(*a);
                seen.push(**a);
                new
            })
            .map(|a| u128::from(self.lamports(a)))
            .sum()
    }

    /// Account data (empty if the account does not exist).
    pub fn data(&self, a: &[u8; 32]) -> Vec<u8> {
        self.svm.get_account(&address(a)).map(|acc| acc.data).unwrap_or_default()
    }

    /// Whether an account exists.
    pub fn exists(&self, a: &[u8; 32]) -> bool {
        self.svm.get_account(&address(a)).is_some_and(|acc| acc.lamports > 0)
    }

    /// Replaces an account (to forge fakes in rejection tests).
    pub fn set_account(&mut self, a: &[u8; 32], account: Account) {
        self.svm.set_account(address(a), account).unwrap();
    }

    /// Sends instructions signed by `signers` (the first pays). Fees are tallied.
    pub fn send(
        &mut self,
        ixs: Vec<BuiltInstruction>,
        signers: &[&Keypair],
    ) -> Result<TransactionMetadata, FailedTransactionMetadata> {
        let ixs = chainference_chain::instructions(ixs);
        let payer = signers[0].pubkey();
        let tx = Transaction::new(signers, Message::new(&ixs, Some(&payer)), self.svm.latest_blockhash());
        let result = self.svm.send_transaction(tx);
        // A new blockhash per transaction, so identical transactions are not deduplicated.
        self.svm.expire_blockhash();
        match &result {
            Ok(meta) => self.fees += meta.fee,
            Err(failed) => self.fees += failed.meta.fee,
        }
        result
    }

    /// Sends and expects success.
    pub fn ok(&mut self, ixs: Vec<BuiltInstruction>, signers: &[&Keypair]) -> TransactionMetadata {
        match self.send(ixs, signers) {
            Ok(meta) => meta,
            Err(f) => panic!("transaction failed: {:?}\n{}", f.err, f.meta.pretty_logs()),
        }
    }

    /// Sends, expects failure with `code`, and returns the fee charged.
    pub fn fails(&mut self, ixs: Vec<BuiltInstruction>, signers: &[&Keypair], expected: chainference_core::Error) {
        match self.send(ixs, signers) {
            Ok(_) => panic!("expected {expected:?}, but the transaction succeeded"),
            Err(f) => assert_eq!(
                custom_code(&f.err),
                Some(expected.code()),
                "expected {expected:?} ({}), got {:?}\n{}",
                expected.code(),
                f.err,
                f.meta.pretty_logs()
            ),
        }
    }

    /// Sends, expects failure with `expected`, and checks that `accounts` lost nothing but the fee.
    pub fn rejects(
        &mut self,
        ixs: Vec<BuiltInstruction>,
        signers: &[&Keypair],
        expected: chainference_core::Error,
        accounts: &[[u8; 32]],
    ) {
        let mut watched = accounts.to_vec();
        watched.push(key(signers[0]));
        let (before, fees) = (self.total(&watched), self.fees);
        self.fails(ixs, signers, expected);
        assert_eq!(self.total(&watched) + u128::from(self.fees - fees), before, "a failed transaction moved lamports");
    }

    /// Initializes the config with default parameters.
    pub fn init_config(&mut self) {
        self.init_config_with(ConfigParams::default());
    }

    /// Initializes the config.
    pub fn init_config_with(&mut self, params: ConfigParams) {
        let admin = key(&self.admin);
        let ix = builders::init_config(&self.program, &admin, params);
        let admin_kp = self.admin.insecure_clone();
        self.ok(vec![ix], &[&admin_kp]);
    }

    /// Registers a server offering [`MODEL`] at `price`.
    pub fn server(&mut self, price: u64) -> TestServer {
        let wallet = self.wallet();
        self.register(wallet, price)
    }

    /// Registers a server for an existing (funded) `wallet`, offering [`MODEL`] at `price`.
    pub fn register(&mut self, wallet: Keypair, price: u64) -> TestServer {
        let keys = ServerKeyPair::generate().unwrap();
        let pk = keys.public_key();
        let profile = ServerProfile { hpke_key: &pk, endpoint: "", offers: &[(MODEL, price)] };
        let ix = builders::register_server(&self.program, &key(&wallet), &profile).unwrap();
        self.ok(vec![ix], &[&wallet]);
        TestServer { wallet, keys }
    }

    /// A request spec allowing `servers`, staking 0.01 SOL.
    pub fn spec(&self, servers: &[&TestServer]) -> RequestSpec {
        RequestSpec {
            allowed: servers.iter().map(|s| s.authority()).collect(),
            server_keys: servers.iter().map(|s| s.keys.public_key()).collect(),
            stake: 10_000_000,
            max_tokens: 1_000,
            timeout: 0,
            min_completed: 0,
            min_success_bps: 0,
            max_price_per_mtok: 100_000_000,
            model: MODEL.to_string(),
            prompt: b"What is the capital of France?".to_vec(),
        }
    }

    /// The next usable nonce of `client` (request and response PDAs canonical at bump 255).
    pub fn next_nonce_of(&mut self, client: &[u8; 32]) -> u64 {
        self.nonce = self.program.usable_nonce(client, self.nonce + 1);
        self.nonce
    }

    /// The next usable nonce of the bench's client.
    pub fn next_nonce(&mut self) -> u64 {
        let client = key(&self.client);
        self.next_nonce_of(&client)
    }

    /// Builds the open-request instruction(s) for `spec` from `client`: one instruction if the
    /// envelope fits `first_chunk` bytes, plus WritePrompt chunks otherwise.
    pub fn open_ixs(
        &mut self,
        client: &Keypair,
        spec: &RequestSpec,
        first_chunk: usize,
    ) -> (TestRequest, Vec<BuiltInstruction>) {
        let client_key = key(client);
        let nonce = self.next_nonce_of(&client_key);
        let (request, bump) = self.program.request(&client_key, nonce);
        let (response, _) = self.program.response(&request);
        let keys = self.secret.request_keys(&request);
        let sealed =
            envelope::seal_prompt(&request, &spec.server_keys, &keys.prompt_public_key(), &spec.prompt).unwrap();
        let commitment = self.secret.commitment(&request, &spec.model, &spec.prompt);
        let args = OpenRequestArgs {
            nonce,
            bump,
            stake: spec.stake,
            max_price_per_mtok: spec.max_price_per_mtok,
            max_tokens: spec.max_tokens,
            timeout: spec.timeout,
            min_completed: spec.min_completed,
            min_success_bps: spec.min_success_bps,
            response_key: &keys.response_public_key(),
            commitment: &commitment,
            model: &spec.model,
            allowed: &spec.allowed,
            prompt_len: 0,
            prompt_chunk: &[],
        };
        let upload = builders::PromptUpload { envelope: &sealed, first_chunk, chunk: first_chunk };
        let ixs = builders::open_request_upload(&self.program, &client_key, &args, &upload).unwrap();
        let req = TestRequest {
            address: request,
            response,
            nonce,
            stake: spec.stake,
            envelope: sealed,
            prompt: spec.prompt.clone(),
        };
        (req, ixs)
    }

    /// Opens a request from the bench's client in one transaction.
    pub fn open(&mut self, spec: &RequestSpec) -> TestRequest {
        let client = self.client.insecure_clone();
        let (req, ixs) = self.open_ixs(&client, spec, usize::MAX);
        self.ok(ixs, &[&client]);
        req
    }

    /// The references a server uses for `req`.
    pub fn refs(&self, req: &TestRequest) -> RequestRefs {
        RequestRefs { request: req.address, response: req.response, client: key(&self.client) }
    }

    /// Lock + one final chunk + complete in one transaction, billing `tokens`. The answer is
    /// long enough for the bill (tokens are bounded by prompt + answer bytes): past 600 bytes it
    /// goes first in lock + append transactions of 600-byte chunks.
    pub fn serve(&mut self, server: &TestServer, req: &TestRequest, tokens: u64) -> TransactionMetadata {
        let a = server.authority();
        let refs = self.refs(req);
        let w = server.wallet.insecure_clone();
        let mut answer = usize::try_from(tokens).unwrap().saturating_sub(req.envelope.len()).max(12);
        let mut ixs = vec![builders::lock_request(&self.program, &a, &req.address)];
        while answer > 600 {
            ixs.push(builders::append_response(&self.program, &a, &refs, false, &[0x5a; 600]).unwrap());
            self.ok(std::mem::take(&mut ixs), &[&w]);
            answer -= 600;
        }
        ixs.push(builders::append_response(&self.program, &a, &refs, true, &vec![0x5a; answer]).unwrap());
        ixs.push(builders::complete_request(&self.program, &a, &refs, tokens));
        self.ok(ixs, &[&w])
    }

    /// The server's ClaimPayment of `req`, after moving the clock past its flag window.
    pub fn claim_after_window(&mut self, server: &TestServer, req: &TestRequest) -> TransactionMetadata {
        let settled = self.request(&req.address).settled_at;
        self.set_time(settled + i64::from(ConfigParams::default().flag_window));
        let a = server.authority();
        let ix = builders::claim_payment(&self.program, &a, &req.address, &req.response);
        let w = server.wallet.insecure_clone();
        self.ok(vec![ix], &[&w])
    }

    /// The bench client's CompareResponses of `first` (served by `first_server`) and `second`
    /// (by `second_server`), revealing the real salts and prompt digest; `preferred` 0 or 1.
    pub fn compare_ix(
        &self,
        [(first, first_server), (second, second_server)]: [(&TestRequest, &TestServer); 2],
        preferred: u8,
    ) -> BuiltInstruction {
        let digest = self.secret.prompt_digest(MODEL, &first.prompt);
        let (salt1, salt2) =
            (self.secret.commitment_salt(&first.address), self.secret.commitment_salt(&second.address));
        let (a1, a2) = (first_server.authority(), second_server.authority());
        builders::compare_responses(
            &self.program,
            &key(&self.client),
            [
                builders::CompareSide { request: &first.address, served_by: &a1, salt: &salt1 },
                builders::CompareSide { request: &second.address, served_by: &a2, salt: &salt2 },
            ],
            &digest,
            preferred,
        )
    }

    /// The decoded request header.
    pub fn request(&self, a: &[u8; 32]) -> RequestHeader {
        RequestAccount::decode(&self.data(a)).unwrap().header
    }

    /// The decoded server header of `authority`.
    pub fn server_header(&self, authority: &[u8; 32]) -> ServerHeader {
        let data = self.data(&self.program.server(authority));
        ServerAccount::decode(&data).unwrap().header
    }

    /// The decoded response chunks.
    pub fn response_chunks(&self, a: &[u8; 32]) -> Vec<Vec<u8>> {
        let data = self.data(a);
        ResponseAccount::decode(&data).unwrap().chunks().map(<[u8]>::to_vec).collect()
    }
}
