//! Finding servers: what each offers, what it charges, how it has behaved, and why a query
//! excluded it.

use std::fmt;

use chainference_chain::{Address, address};
use chainference_core::Error as CoreError;
use chainference_core::lifecycle::{LockTerms, ServerView};
use chainference_core::pricing::ServerStats;
use chainference_core::state::ServerAccount;

/// What a server must meet to be chosen: the client's price cap and the request's reputation
/// filters (the last two are also enforced on-chain at lock). [`ServerQuery`] and
/// [`crate::Ask`] both carry one, and share its setters through [`Filtered`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerFilter {
    /// Highest acceptable price, lamports per million tokens.
    pub max_price: Option<u64>,
    /// Least counted completions: those that paid the config's `min_counted_fee` (also
    /// enforced on-chain at lock).
    pub min_completed: u64,
    /// Least success ratio in basis points (also enforced on-chain at lock).
    pub min_success_bps: u16,
}

/// The [`ServerFilter`] setters, defined once for everything that carries a filter.
///
/// ```
/// use chainference_client::{Ask, Filtered, ServerQuery};
/// let query = ServerQuery::new("org/model").max_price(2_000_000).min_completed(5);
/// let ask = Ask::new("org/model", "Hi").max_price(2_000_000).min_completed(5);
/// assert_eq!(query.filter, ask.filter);
/// ```
pub trait Filtered: Sized {
    /// The filter to set.
    fn filter_mut(&mut self) -> &mut ServerFilter;

    /// Caps the price (lamports per million tokens).
    fn max_price(mut self, lamports_per_mtok: u64) -> Self {
        self.filter_mut().max_price = Some(lamports_per_mtok);
        self
    }

    /// Requires a track record of at least `completed` requests.
    fn min_completed(mut self, completed: u64) -> Self {
        self.filter_mut().min_completed = completed;
        self
    }

    /// Requires a success ratio of at least `bps` basis points.
    fn min_success_bps(mut self, bps: u16) -> Self {
        self.filter_mut().min_success_bps = bps;
        self
    }
}

impl Filtered for ServerFilter {
    fn filter_mut(&mut self) -> &mut ServerFilter {
        self
    }
}

/// Which servers a client will consider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerQuery {
    /// The model (any spelling `ModelId::parse` accepts); `None` for servers of any model.
    pub model: Option<String>,
    /// Price cap and reputation filters.
    pub filter: ServerFilter,
    /// List inactive servers as eligible too (they still cannot lock).
    pub include_inactive: bool,
    /// Weigh each eligible server's comparisons per comparing client
    /// ([`ServerInfo::preference_by_client_bps`]; one more scan of the completed requests).
    pub weigh_comparisons: bool,
}

impl ServerQuery {
    /// Every active server offering `model`.
    pub fn new(model: impl Into<String>) -> Self {
        ServerQuery {
            model: Some(model.into()),
            filter: ServerFilter::default(),
            include_inactive: false,
            weigh_comparisons: true,
        }
    }

    /// Every active server, whatever it offers (what a model list shows). Without a model
    /// there is no price to compare, so a `max_price` on this query excludes no one; the
    /// reputation filters still apply.
    pub fn any_model() -> Self {
        ServerQuery { model: None, filter: ServerFilter::default(), include_inactive: false, weigh_comparisons: true }
    }

    /// Lists inactive servers as eligible too.
    pub fn include_inactive(mut self, include: bool) -> Self {
        self.include_inactive = include;
        self
    }

    /// Whether to weigh comparisons per comparing client (on by default; off saves a scan of
    /// the completed requests, and ranking falls back to the raw preference share).
    pub fn weigh_comparisons(mut self, weigh: bool) -> Self {
        self.weigh_comparisons = weigh;
        self
    }
}

impl Filtered for ServerQuery {
    fn filter_mut(&mut self) -> &mut ServerFilter {
        &mut self.filter
    }
}

/// Why a query excluded a server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exclusion {
    /// The operator switched it off.
    Inactive,
    /// The operator closed it: only its reputation remains on chain.
    Retired,
    /// It is run by the asking wallet itself: the program refuses to let a server serve its own
    /// wallet's requests (self-dealing would farm reputation).
    OwnServer,
    /// It does not offer the model.
    ModelNotOffered,
    /// Its price is above the cap.
    PriceAbove {
        /// Its price.
        price: u64,
        /// The cap.
        max: u64,
    },
    /// Too few completed requests.
    TooFewCompleted {
        /// Its count.
        completed: u64,
        /// The minimum.
        min: u64,
    },
    /// Success ratio too low.
    SuccessBelow {
        /// Its ratio (bps).
        success_bps: u16,
        /// The minimum (bps).
        min: u16,
    },
    /// Its account does not decode (another program version?).
    Unreadable(CoreError),
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Inactive => f.write_str("inactive (its operator switched it off)"),
            Exclusion::Retired => f.write_str("retired (its operator closed it)"),
            Exclusion::OwnServer => f.write_str("run by your own wallet (a server may not serve its own wallet)"),
            Exclusion::ModelNotOffered => f.write_str("does not offer the model"),
            Exclusion::PriceAbove { price, max } => write!(f, "price {price} lamports/Mtok is above your cap of {max}"),
            Exclusion::TooFewCompleted { completed, min } => {
                write!(f, "{completed} counted completed requests, fewer than the {min} required")
            }
            Exclusion::SuccessBelow { success_bps, min } => {
                write!(f, "success {} is below the {} required", Bps(*success_bps), Bps(*min))
            }
            Exclusion::Unreadable(err) => write!(f, "account unreadable: {err}"),
        }
    }
}

/// Basis points shown as a percentage.
pub(crate) struct Bps(pub u16);

impl fmt::Display for Bps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
    }
}

/// One server as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// Its account (the PDA).
    pub account: Address,
    /// The wallet that signs for it (what allow-lists name).
    pub authority: Address,
    /// Its HPKE public key (prompts are sealed to it).
    pub hpke_key: [u8; 32],
    /// Its off-chain endpoint, if it published one.
    pub endpoint: Option<String>,
    /// Whether it accepts new requests.
    pub active: bool,
    /// Whether its operator closed it (only its reputation remains).
    pub retired: bool,
    /// Its price for the queried model, lamports per million tokens.
    pub price: Option<u64>,
    /// All its offers: canonical model id and price.
    pub offers: Vec<(String, u64)>,
    /// Reputation counters.
    pub stats: ServerStats,
    /// `(counted - flagged) / (counted + timed_out + released)` in bps: only completions that
    /// paid the config's least counted fee build it.
    pub success_bps: u16,
    /// `preferred / comparisons` in bps, none before a comparison.
    pub preference_bps: Option<u16>,
    /// The preference share with each comparing client as one voice: the mean over clients of
    /// each client's `preferred / comparisons` for this server, from the compared requests still
    /// on chain. A client comparing one pair again and again moves it no more than a client
    /// comparing once (a sybil needs client wallets, each paying for counted requests, rather
    /// than comparisons). `None` until weighed ([`ServerQuery::weigh_comparisons`]; best effort:
    /// a cluster whose RPC refuses the scan leaves it `None`) or before any comparison.
    pub preference_by_client_bps: Option<u16>,
    /// Requests it holds locked now.
    pub locked_count: u32,
    /// When it registered (unix seconds).
    pub registered_at: i64,
}

impl ServerInfo {
    /// Decodes a server account; `model` is the canonical model id to price (none: no price).
    pub fn decode(account: Address, data: &[u8], model: Option<&str>) -> Result<Self, CoreError> {
        let server = ServerAccount::decode(data)?;
        let header = server.header;
        Ok(ServerInfo {
            account,
            authority: address(&header.authority),
            hpke_key: header.hpke_key,
            endpoint: (!server.endpoint.is_empty()).then(|| server.endpoint.to_string()),
            active: header.active(),
            retired: header.retired(),
            price: model.and_then(|model| server.offers.price_of(model)),
            offers: server.offers.iter().map(|offer| (offer.model.to_string(), offer.price_per_mtok)).collect(),
            stats: header.stats,
            success_bps: header.stats.success_bps(),
            preference_bps: header.stats.preference_bps(),
            preference_by_client_bps: None,
            locked_count: header.locked_count,
            registered_at: header.registered_at,
        })
    }

    /// The success ratio the default ranking uses, in bps (core's
    /// [`ServerStats::ranking_bps`](chainference_core::pricing::ServerStats::ranking_bps): a prior
    /// of two failures, so a fresh wallet cannot outrank a long, clean record).
    pub fn ranking_bps(&self) -> u16 {
        self.stats.ranking_bps()
    }

    /// Why `query`, asked by the wallet `asker`, excludes this server (empty: it is eligible).
    /// Every reason is the program's own lock rule ([`ServerView::refusals`]): the price cap
    /// becomes the request's on-chain cap, and a server of the asking wallet could never lock.
    pub fn exclusions(&self, query: &ServerQuery, asker: &Address) -> Vec<Exclusion> {
        let authority = self.authority.to_bytes();
        let view = ServerView {
            authority: &authority,
            active: (self.active || query.include_inactive) && !self.retired,
            stats: self.stats,
            price_for_model: self.price,
        };
        let filter = &query.filter;
        let asker = asker.to_bytes();
        let terms = LockTerms {
            client: &asker,
            max_price_per_mtok: filter.max_price.unwrap_or(u64::MAX),
            min_completed: filter.min_completed,
            min_success_bps: filter.min_success_bps,
        };
        view.refusals(&terms)
            .into_iter()
            .flatten()
            // A query for any model has no model to miss.
            .filter(|refusal| query.model.is_some() || *refusal != CoreError::ModelNotOffered)
            .map(|refusal| match refusal {
                CoreError::ServerInactive if self.retired => Exclusion::Retired,
                CoreError::ServerInactive => Exclusion::Inactive,
                CoreError::ModelNotOffered => Exclusion::ModelNotOffered,
                CoreError::PriceAboveCap => {
                    Exclusion::PriceAbove { price: self.price.unwrap_or(0), max: terms.max_price_per_mtok }
                }
                CoreError::SelfDealing => Exclusion::OwnServer,
                CoreError::MinCompletedNotMet => {
                    Exclusion::TooFewCompleted { completed: self.stats.counted, min: filter.min_completed }
                }
                CoreError::MinSuccessNotMet => {
                    Exclusion::SuccessBelow { success_bps: self.success_bps, min: filter.min_success_bps }
                }
                other => Exclusion::Unreadable(other),
            })
            .collect()
    }
}

/// How to rank eligible servers when the client picks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Highest [`ServerInfo::ranking_bps`] (the success ratio with a prior of two failures, so a
    /// wallet with no history ranks last, not first), then most protocol fees paid by counted
    /// completions (reputation weighted by money: free self-dealing does not rank), then
    /// preference (per comparing client when weighed: [`ServerInfo::preference_by_client_bps`]),
    /// then cheapest.
    #[default]
    MostReliable,
    /// Cheapest, then most reliable.
    Cheapest,
}

impl Policy {
    /// Sorts `servers` best first.
    pub fn rank(self, servers: &mut [ServerInfo]) {
        let reliability = |s: &ServerInfo| {
            (s.ranking_bps(), s.stats.fees, s.preference_by_client_bps.or(s.preference_bps).unwrap_or(5_000))
        };
        match self {
            Policy::MostReliable => servers.sort_by(|a, b| {
                reliability(b)
                    .cmp(&reliability(a))
                    .then(a.price.unwrap_or(u64::MAX).cmp(&b.price.unwrap_or(u64::MAX)))
                    .then(a.authority.cmp(&b.authority))
            }),
            Policy::Cheapest => servers.sort_by(|a, b| {
                a.price
                    .unwrap_or(u64::MAX)
                    .cmp(&b.price.unwrap_or(u64::MAX))
                    .then(reliability(b).cmp(&reliability(a)))
                    .then(a.authority.cmp(&b.authority))
            }),
        }
    }
}

/// The result of a discovery query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The canonical model id queried (`None`: any model).
    pub model: Option<String>,
    /// Servers that pass the query, best first by [`Policy::MostReliable`].
    pub eligible: Vec<ServerInfo>,
    /// Servers that do not, each with every reason.
    pub excluded: Vec<(ServerInfo, Vec<Exclusion>)>,
    /// Server accounts that did not decode.
    pub unreadable: Vec<(Address, CoreError)>,
}

impl Discovery {
    /// One line per server: eligible ones with price and reputation, excluded ones with why.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        if self.eligible.is_empty() && self.excluded.is_empty() {
            match &self.model {
                Some(model) => out.push_str(&format!("no server offers {model}\n")),
                None => out.push_str("no server is registered\n"),
            }
        }
        for server in &self.eligible {
            out.push_str(&format!("eligible  {}  {}\n", server.authority, summary(server)));
        }
        for (server, reasons) in &self.excluded {
            let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            out.push_str(&format!("excluded  {}  {}: {}\n", server.authority, summary(server), why.join("; ")));
        }
        for (account, err) in &self.unreadable {
            out.push_str(&format!("unreadable {account}: {err}\n"));
        }
        out
    }
}

fn summary(server: &ServerInfo) -> String {
    let price = server.price.map_or_else(|| "-".to_string(), |p| format!("{p} lamports/Mtok"));
    let preference = server.preference_bps.map_or_else(|| "-".to_string(), |p| Bps(p).to_string());
    format!(
        "price {price}, success {}, completed {}, flagged {}, preferred {}",
        Bps(server.success_bps),
        server.stats.completed,
        server.stats.flagged,
        preference
    )
}
