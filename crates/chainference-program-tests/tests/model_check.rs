//! Model check: random sequences of instructions from several clients and servers run against
//! the built `.so` and against core's state machine side by side. At every step both must agree
//! on success or the exact error, on every request header and server counter, and lamports must
//! be conserved over every account involved.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use std::collections::HashMap;

use chainference_core::builders::{self, BuiltInstruction, RequestRefs};
use chainference_core::lifecycle::{Event, ServerView};
use chainference_core::pricing::ServerStats;
use chainference_core::state::{ConfigParams, DeclineReasons, RequestHeader};
use chainference_program_tests::*;
use proptest::prelude::*;
use solana_keypair::Keypair;

#[derive(Clone, Debug)]
enum Step {
    Open {
        client: usize,
        allowed: u8,
        stake: u64,
        min_completed: u64,
    },
    Lock {
        server: usize,
        request: usize,
    },
    Append {
        server: usize,
        request: usize,
        last: bool,
    },
    Complete {
        server: usize,
        request: usize,
        tokens: u64,
    },
    /// A release sent by `caller`: a server index, or 3 for a client wallet (a third party).
    Release {
        caller: usize,
        request: usize,
    },
    /// The serving server claims its held share and response rent.
    Claim {
        server: usize,
        request: usize,
    },
    Cancel {
        request: usize,
    },
    /// A server declines (reasons 0 is refused).
    Decline {
        server: usize,
        request: usize,
        reasons: u8,
    },
    Reclaim {
        request: usize,
    },
    /// A flag (a mark on the server) or a dispute (`refund`: part of the held share back).
    Flag {
        request: usize,
        refund: bool,
    },
    Close {
        request: usize,
    },
    Wait {
        seconds: i64,
    },
    /// Lock, final append and complete by one server, each checked as its own step.
    Serve {
        server: usize,
        request: usize,
        tokens: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let r = 0usize..4;
    let s = 0usize..3;
    prop_oneof![
        3 => (0usize..2, 1u8..8, 1u64..50_000_000, 0u64..2).prop_map(|(client, allowed, stake, min_completed)| Step::Open { client, allowed, stake, min_completed }),
        4 => (s.clone(), r.clone()).prop_map(|(server, request)| Step::Lock { server, request }),
        4 => (s.clone(), r.clone(), any::<bool>()).prop_map(|(server, request, last)| Step::Append { server, request, last }),
        3 => (s.clone(), r.clone(), 0u64..400).prop_map(|(server, request, tokens)| Step::Complete { server, request, tokens }),
        2 => (0usize..4, r.clone()).prop_map(|(caller, request)| Step::Release { caller, request }),
        2 => (s.clone(), r.clone(), any::<u8>()).prop_map(|(server, request, reasons)| Step::Decline { server, request, reasons }),
        1 => (s, r.clone()).prop_map(|(server, request)| Step::Claim { server, request }),
        1 => r.clone().prop_map(|request| Step::Cancel { request }),
        1 => r.clone().prop_map(|request| Step::Reclaim { request }),
        1 => (r.clone(), any::<bool>()).prop_map(|(request, refund)| Step::Flag { request, refund }),
        1 => r.prop_map(|request| Step::Close { request }),
        2 => (1i64..200).prop_map(|seconds| Step::Wait { seconds }),
        // Past (or just short of, or exactly at) the end of a flag window.
        1 => (-1i64..=1).prop_map(|d| Step::Wait { seconds: i64::from(ConfigParams::default().flag_window) + d }),
        4 => (0usize..3, 0usize..4, 0u64..400).prop_map(|(server, request, tokens)| Step::Serve { server, request, tokens }),
    ]
}

struct Tracked {
    req: TestRequest,
    client: usize,
    allowed: Vec<[u8; 32]>,
    /// The model: what core says the header is.
    header: RequestHeader,
    /// Whether the model's response holds its final chunk (None: no response account).
    response_finished: Option<bool>,
    /// Bytes of the response's chunk data.
    response_len: u32,
    closed: bool,
}

struct Harness {
    b: Bench,
    clients: Vec<Keypair>,
    servers: Vec<TestServer>,
    stats: Vec<ServerStats>,
    locks: Vec<u32>,
    requests: Vec<Tracked>,
    watched: Vec<[u8; 32]>,
    params: ConfigParams,
    /// How often each outcome was seen (printed with --nocapture, to judge coverage).
    outcomes: HashMap<String, usize>,
}

impl Harness {
    fn new() -> Self {
        let mut b = Bench::new();
        b.init_config();
        let servers: Vec<TestServer> = [1_000_000, 3_000_000, 7_000_000].iter().map(|&p| b.server(p)).collect();
        let clients = vec![b.client.insecure_clone(), b.wallet()];
        let mut watched = vec![b.program.treasury, b.program.config];
        watched.extend(clients.iter().map(key));
        for s in &servers {
            watched.push(s.authority());
            watched.push(b.program.server(&s.authority()));
        }
        Harness {
            b,
            clients,
            servers,
            stats: vec![ServerStats::default(); 3],
            locks: vec![0; 3],
            requests: Vec::new(),
            watched,
            params: ConfigParams::default(),
            outcomes: HashMap::new(),
        }
    }

    /// Sends and checks the outcome against core's prediction (`Ok` or the exact error).
    fn send(
        &mut self,
        ixs: Vec<BuiltInstruction>,
        signer: &Keypair,
        predicted: Result<(), chainference_core::Error>,
    ) -> bool {
        let result = self.b.send(ixs, &[signer]);
        *self
            .outcomes
            .entry(match &predicted {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("{e:?}"),
            })
            .or_default() += 1;
        match (&result, predicted) {
            (Ok(_), Ok(())) => true,
            (Err(f), Err(e)) => {
                assert_eq!(custom_code(&f.err), Some(e.code()), "program said {:?}, core said {e:?}", f.err);
                false
            }
            (Ok(_), Err(e)) => panic!("program succeeded where core said {e:?}"),
            (Err(f), Ok(())) => {
                panic!("program failed with {:?} where core succeeded\n{}", f.err, f.meta.pretty_logs())
            }
        }
    }

    fn view(&self, server: usize) -> ServerView<'_> {
        ServerView {
            authority: self.server_key(server),
            active: true,
            stats: self.stats[server],
            price_for_model: Some([1_000_000, 3_000_000, 7_000_000][server]),
        }
    }

    fn server_key(&self, server: usize) -> &[u8; 32] {
        // The authority is derived from the wallet; keep a stable reference via the watched list.
        &self.watched[4 + 2 * server]
    }

    fn apply_stats(&mut self, server: usize, fx: &chainference_core::lifecycle::Effects) {
        fx.server.apply(&mut self.stats[server], &mut self.locks[server]).unwrap();
    }

    fn server_of(&self, authority: &[u8; 32]) -> Option<usize> {
        (0..self.servers.len()).find(|&i| self.server_key(i) == authority)
    }

    fn run(&mut self, step: Step) {
        let now = self.b.now();
        match step {
            Step::Wait { seconds } => self.b.set_time(now + seconds),
            Step::Serve { server, request, tokens } => {
                self.run(Step::Lock { server, request });
                self.run(Step::Append { server, request, last: true });
                self.run(Step::Complete { server, request, tokens });
            }
            Step::Open { client, allowed, stake, min_completed } => {
                let chosen: Vec<&TestServer> =
                    (0..3).filter(|i| allowed & (1 << i) != 0).map(|i| &self.servers[i]).collect();
                let mut spec = self.b.spec(&chosen);
                spec.stake = stake;
                spec.min_completed = min_completed;
                let signer = self.clients[client].insecure_clone();
                let (req, ixs) = self.b.open_ixs(&signer, &spec, usize::MAX);
                self.send(ixs, &signer, Ok(()));
                let header = self.b.request(&req.address);
                assert_eq!(
                    (header.status, header.stake, header.deadline),
                    (chainference_core::state::RequestStatus::Open, stake, now + 300)
                );
                self.watched.push(req.address);
                self.watched.push(req.response);
                self.requests.push(Tracked {
                    req,
                    client,
                    allowed: spec.allowed,
                    header,
                    response_finished: None,
                    response_len: 0,
                    closed: false,
                });
            }
            Step::Lock { server, request } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let view = self.view(server);
                let predicted =
                    h.apply(Event::Lock { server: view, allowed: &t.allowed, fee_bps: self.params.fee_bps }, now);
                let ix = builders::lock_request(&self.b.program, &self.servers[server].authority(), &t.req.address);
                let signer = self.servers[server].wallet.insecure_clone();
                if self.send(vec![ix], &signer, predicted.map(|_| ())) {
                    let fx = predicted.unwrap();
                    self.requests[request].header = h;
                    self.apply_stats(server, &fx);
                }
            }
            Step::Append { server, request, last } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let finished = t.response_finished.unwrap_or(false);
                let authority = self.servers[server].authority();
                let predicted = h.apply(Event::Append { server: &authority, response_finished: finished }, now);
                let refs = RequestRefs {
                    request: t.req.address,
                    response: t.req.response,
                    client: key(&self.clients[t.client]),
                };
                let ix = builders::append_response(&self.b.program, &authority, &refs, last, b"sealed bytes").unwrap();
                let signer = self.servers[server].wallet.insecure_clone();
                if self.send(vec![ix], &signer, predicted.map(|_| ())) {
                    self.requests[request].header = h;
                    self.requests[request].response_finished = Some(last);
                    self.requests[request].response_len += 4 + 12;
                }
            }
            Step::Complete { server, request, tokens } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let authority = self.servers[server].authority();
                let event = Event::Complete {
                    server: &authority,
                    tokens,
                    response_finished: t.response_finished == Some(true),
                    response_len: t.response_len,
                    min_counted_fee: self.params.min_counted_fee,
                };
                let predicted = h.apply(event, now);
                // A completion with no response account at all fails on the account, not the rule.
                let predicted = match (predicted, t.response_finished) {
                    (Ok(_), None) => Err(chainference_core::Error::ResponseNotFinished),
                    (p, _) => p,
                };
                let refs = RequestRefs {
                    request: t.req.address,
                    response: t.req.response,
                    client: key(&self.clients[t.client]),
                };
                let ix = builders::complete_request(&self.b.program, &authority, &refs, tokens);
                let signer = self.servers[server].wallet.insecure_clone();
                if self.send(vec![ix], &signer, predicted.map(|_| ())) {
                    let fx = predicted.unwrap();
                    self.requests[request].header = h;
                    self.apply_stats(server, &fx);
                }
            }
            Step::Release { caller, request } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let signer = match caller {
                    3 => self.clients[1].insecure_clone(),
                    s => self.servers[s].wallet.insecure_clone(),
                };
                let locked_by = t.header.locked_by;
                let predicted =
                    h.apply(Event::Release { signer: &key(&signer), lock_window: self.params.lock_window }, now);
                let ix = builders::release_stalled_request(
                    &self.b.program,
                    &key(&signer),
                    &locked_by,
                    &t.req.address,
                    &t.req.response,
                );
                if self.send(vec![ix], &signer, predicted.map(|_| ())) {
                    let fx = predicted.unwrap();
                    self.requests[request].header = h;
                    self.requests[request].response_finished = None;
                    self.requests[request].response_len = 0;
                    let server = self.server_of(&locked_by).unwrap();
                    self.apply_stats(server, &fx);
                }
            }
            Step::Claim { server, request } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let authority = self.servers[server].authority();
                let predicted = h.apply(Event::Claim { signer: &authority, flag_window: self.params.flag_window }, now);
                let ix = builders::claim_payment(&self.b.program, &authority, &t.req.address, &t.req.response);
                let signer = self.servers[server].wallet.insecure_clone();
                let response = t.req.response;
                if self.send(vec![ix], &signer, predicted.map(|_| ())) {
                    self.requests[request].header = h;
                    if predicted.unwrap().discard_response {
                        self.requests[request].response_finished = None;
                        assert!(!self.b.exists(&response), "the claim closes the response");
                    }
                }
            }
            Step::Cancel { request } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let client = self.clients[t.client].insecure_clone();
                let predicted = h.apply(Event::Cancel { signer: &key(&client) }, now);
                let ix = builders::cancel_request(&self.b.program, &key(&client), &t.req.address);
                if self.send(vec![ix], &client, predicted.map(|_| ())) {
                    self.requests[request].header = h;
                }
            }
            Step::Decline { server, request, reasons } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let authority = self.servers[server].authority();
                let reasons = DeclineReasons(reasons);
                let predicted = h.apply(Event::Decline { server: &authority, allowed: &t.allowed, reasons }, now);
                let ix = builders::decline_request(&self.b.program, &authority, &t.req.address, reasons);
                let signer = self.servers[server].wallet.insecure_clone();
                if self.send(vec![ix], &signer, predicted.map(|_| ())) {
                    self.requests[request].header = h;
                }
            }
            Step::Reclaim { request } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let locked = self
                    .server_of(&t.header.locked_by)
                    .filter(|_| t.header.status == chainference_core::state::RequestStatus::Locked);
                let predicted = h.apply(Event::Reclaim, now);
                let client = self.clients[t.client].insecure_clone();
                let ix = builders::reclaim_request(
                    &self.b.program,
                    &t.req.address,
                    &key(&client),
                    locked.map(|s| self.server_key(s)),
                );
                if self.send(vec![ix], &client, predicted.map(|_| ())) {
                    let fx = predicted.unwrap();
                    self.requests[request].header = h;
                    if let Some(s) = locked {
                        self.apply_stats(s, &fx);
                    }
                }
            }
            Step::Flag { request, refund } => {
                let Some(t) = self.requests.get(request) else { return };
                let Some(server) = self.server_of(&t.header.locked_by) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let client = self.clients[t.client].insecure_clone();
                let event = Event::Flag {
                    signer: &key(&client),
                    flag_window: self.params.flag_window,
                    flag_refund_bps: self.params.flag_refund_bps,
                    refund,
                };
                let predicted = h.apply(event, now);
                let build = if refund { builders::dispute_response } else { builders::flag_response };
                let ix = build(&self.b.program, &key(&client), &t.req.address, self.server_key(server));
                if self.send(vec![ix], &client, predicted.map(|_| ())) {
                    let fx = predicted.unwrap();
                    self.requests[request].header = h;
                    self.apply_stats(server, &fx);
                }
            }
            Step::Close { request } => {
                let Some(t) = self.requests.get(request) else { return };
                if t.closed {
                    return;
                }
                let mut h = t.header;
                let client = self.clients[t.client].insecure_clone();
                let predicted = h.apply(Event::Close { signer: &key(&client), retention: self.params.retention }, now);
                let refs = RequestRefs { request: t.req.address, response: t.req.response, client: key(&client) };
                // The held share and the response (if any) go to the server that locked it last.
                let payer = self.server_of(&t.header.locked_by).map(|s| *self.server_key(s)).unwrap_or(key(&client));
                let ix = builders::close_request(&self.b.program, &key(&client), &refs, &payer);
                let (address, response) = (t.req.address, t.req.response);
                if self.send(vec![ix], &client, predicted.map(|_| ())) {
                    self.requests[request].closed = true;
                    assert!(!self.b.exists(&address) && !self.b.exists(&response));
                }
            }
        }
    }

    /// Chain state equals the model's.
    fn check(&self) {
        for t in &self.requests {
            if !t.closed {
                assert_eq!(self.b.request(&t.req.address), t.header, "request header diverged");
            }
        }
        for (i, s) in self.servers.iter().enumerate() {
            let h = self.b.server_header(&s.authority());
            assert_eq!((h.stats, h.locked_count), (self.stats[i], self.locks[i]), "server {i} diverged");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_program_and_the_state_machine_agree(steps in proptest::collection::vec(step(), 1..80)) {
        let mut h = Harness::new();
        let start = h.b.total(&h.watched);
        let fees0 = h.b.fees;
        for s in steps {
            h.run(s);
            h.check();
            let total = h.b.total(&h.watched) + u128::from(h.b.fees - fees0);
            prop_assert_eq!(total, start, "lamports not conserved");
        }
        let completed = h.requests.iter().filter(|t| t.header.status == chainference_core::state::RequestStatus::Completed).count();
        println!("outcomes {:?}, completed {completed}", h.outcomes);
        // After everything settles and closes, no program account holds an orphan lamport.
        let leftover: HashMap<[u8; 32], u64> = h.requests.iter().filter(|t| t.closed)
            .flat_map(|t| [t.req.address, t.req.response]).map(|a| (a, h.b.lamports(&a))).filter(|(_, l)| *l > 0).collect();
        prop_assert!(leftover.is_empty(), "closed accounts still hold lamports: {:?}", leftover);
    }
}
