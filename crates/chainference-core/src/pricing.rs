//! Pricing and reputation arithmetic, in integers only.
//!
//! Prices are lamports per million tokens. The products involved exceed 64 bits, and SBF has no
//! 128-bit multiply (`__multi3` is absent), so [`mul_div`] builds the 128-bit product from 32-bit
//! halves and divides it limb by limb by a 32-bit divisor, using only 64-bit operations. It is
//! property-tested against `u128` on the host.
//!
//! ```
//! use chainference_core::pricing::{settle, Settlement};
//! // 300 tokens at 2,000,000 lamports per million tokens, 10% fee, 1,000,000 staked.
//! let s = settle(300, 2_000_000, 1_000_000, 1_000).unwrap();
//! assert_eq!(s, Settlement { cost: 600, fee: 60, server: 540, refund: 999_400 });
//! assert_eq!(s.cost + s.refund, 1_000_000);
//! ```

use crate::error::{Error, Result};

/// Tokens per pricing unit: prices are per million tokens.
pub const TOKENS_PER_PRICE_UNIT: u32 = 1_000_000;
/// Basis points in one whole.
pub const BPS_DENOMINATOR: u32 = 10_000;

/// Full 64×64→128-bit product as `(high, low)` 64-bit words, from 32-bit halves.
#[inline(always)]
#[allow(clippy::arithmetic_side_effects)] // every step is bounded below 2^64 by construction
pub const fn wide_mul(a: u64, b: u64) -> (u64, u64) {
    let (a_hi, a_lo) = (a >> 32, a & 0xFFFF_FFFF);
    let (b_hi, b_lo) = (b >> 32, b & 0xFFFF_FFFF);
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    // Middle column: at most 3 * (2^32 - 1) ... fits in 64 bits.
    let mid = (lo_lo >> 32) + (hi_lo & 0xFFFF_FFFF) + (lo_hi & 0xFFFF_FFFF);
    let low = (mid << 32) | (lo_lo & 0xFFFF_FFFF);
    let high = hi_hi + (hi_lo >> 32) + (lo_hi >> 32) + (mid >> 32);
    (high, low)
}

/// Rounding direction for [`mul_div`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Toward zero.
    Down,
    /// Away from zero.
    Up,
}

/// `a * b / d` with a 128-bit intermediate, rounded as asked; `None` if `d == 0` or the
/// quotient does not fit in `u64`. The divisor is 32 bits, which covers every divisor the
/// protocol uses (one million, ten thousand, stat counts are folded before dividing).
#[inline]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // limb steps stay < 2^64 (rem < d < 2^32); i < 4
pub const fn mul_div(a: u64, b: u64, d: u32, rounding: Rounding) -> Option<u64> {
    if d == 0 {
        return None;
    }
    let d = d as u64;
    let (high, low) = wide_mul(a, b);
    if high == 0 {
        // The common case (a product below 2^64): one division instead of four.
        let (q, rem) = (low / d, low % d);
        return match rounding {
            Rounding::Down => Some(q),
            Rounding::Up if rem == 0 => Some(q),
            Rounding::Up => q.checked_add(1),
        };
    }
    // Long division of the four 32-bit limbs, most significant first.
    let limbs = [high >> 32, high & 0xFFFF_FFFF, low >> 32, low & 0xFFFF_FFFF];
    let mut quotient = [0u64; 4];
    let mut rem = 0u64;
    let mut i = 0;
    while i < 4 {
        let cur = (rem << 32) | limbs[i];
        quotient[i] = cur / d;
        rem = cur % d;
        i += 1;
    }
    if quotient[0] != 0 || quotient[1] != 0 {
        return None;
    }
    let q = (quotient[2] << 32) | quotient[3];
    match rounding {
        Rounding::Down => Some(q),
        Rounding::Up if rem == 0 => Some(q),
        Rounding::Up => q.checked_add(1),
    }
}

/// What a completed request pays: the cost to the client, split into the protocol fee and the
/// server's share, and the client's refund. `cost == fee + server` and `cost + refund == stake`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settlement {
    /// What the client pays, `min(ceil(tokens * price / 1e6), stake)`.
    pub cost: u64,
    /// The protocol's fee, taken out of the server's charge: `floor(cost * fee_bps / 10_000)`.
    pub fee: u64,
    /// What the server receives, `cost - fee`.
    pub server: u64,
    /// What goes back to the client, `stake - cost`.
    pub refund: u64,
}

/// The cost of `tokens` at `price_per_mtok`, capped at `max_cost`:
/// `min(ceil(tokens * price_per_mtok / 1_000_000), max_cost)`. Never overflows: a product whose
/// quotient exceeds `u64` is above any cap.
#[inline]
pub const fn cost(tokens: u64, price_per_mtok: u64, max_cost: u64) -> u64 {
    match stake_for(tokens, price_per_mtok) {
        Some(c) if c < max_cost => c,
        _ => max_cost,
    }
}

/// The most tokens `stake` pays for in full at `price_per_mtok`: the largest `t` with
/// `ceil(t * price / 1e6) <= stake`, that is `floor(stake * 1e6 / price)` (every token when the
/// price is 0). What a server may bill without working for free. Host-side (servers and clients
/// plan budgets with it; the program never needs it), so it may divide by a 64-bit price.
#[cfg(not(target_arch = "bpf"))]
pub fn affordable_tokens(stake: u64, price_per_mtok: u64) -> u64 {
    if price_per_mtok == 0 {
        return u64::MAX;
    }
    let tokens = u128::from(stake)
        .saturating_mul(u128::from(TOKENS_PER_PRICE_UNIT))
        .checked_div(u128::from(price_per_mtok))
        .unwrap_or(u128::MAX);
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

/// The stake that pays for `tokens` in full at `price_per_mtok`: `ceil(tokens * price / 1e6)`,
/// the inverse of [`affordable_tokens`]; `None` past `u64`. What a client escrows for a budget.
#[inline]
pub const fn stake_for(tokens: u64, price_per_mtok: u64) -> Option<u64> {
    mul_div(tokens, price_per_mtok, TOKENS_PER_PRICE_UNIT, Rounding::Up)
}

/// The protocol fee on `cost`: `floor(cost * fee_bps / 10_000)`. `fee_bps` above 10,000 is an error.
#[inline]
pub const fn fee(cost: u64, fee_bps: u16) -> Result<u64> {
    if fee_bps as u32 > BPS_DENOMINATOR {
        return Err(Error::InvalidFeeBps);
    }
    match mul_div(cost, fee_bps as u64, BPS_DENOMINATOR, Rounding::Down) {
        Some(f) => Ok(f),
        // Unreachable: fee_bps <= 10_000 keeps the quotient <= cost.
        None => Err(Error::ArithmeticOverflow),
    }
}

/// Settles a completed request: cost, fee out of the server's charge, refund of the rest.
#[inline]
pub const fn settle(tokens: u64, price_per_mtok: u64, stake: u64, fee_bps: u16) -> Result<Settlement> {
    let cost = cost(tokens, price_per_mtok, stake);
    let fee = match fee(cost, fee_bps) {
        Ok(f) => f,
        Err(e) => return Err(e),
    };
    // fee <= cost <= stake, so neither subtraction can underflow; checked anyway.
    let (Some(server), Some(refund)) = (cost.checked_sub(fee), stake.checked_sub(cost)) else {
        return Err(Error::ArithmeticOverflow);
    };
    Ok(Settlement { cost, fee, server, refund })
}

/// `numerator / denominator` in basis points, rounded down, saturating at 10,000; `None` when the
/// denominator is zero. Both counts are folded to 32 bits first (shifting both equally keeps the
/// ratio within one part in 2^31), so the divisor fits [`mul_div`].
#[inline]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
pub const fn ratio_bps(numerator: u64, denominator: u64) -> Option<u16> {
    if denominator == 0 {
        return None;
    }
    let numerator = if numerator > denominator { denominator } else { numerator };
    let shift = 64 - denominator.leading_zeros();
    let shift = shift.saturating_sub(32);
    let (n, d) = (numerator >> shift, (denominator >> shift) as u32);
    match mul_div(n, BPS_DENOMINATOR as u64, d, Rounding::Down) {
        Some(v) if v <= BPS_DENOMINATOR as u64 => Some(v as u16),
        _ => Some(BPS_DENOMINATOR as u16),
    }
}

/// A server's reputation counters, as stored in its account.
///
/// Only **counted** steps build reputation: a completion, flag or comparison counts when its
/// request paid at least the config's `min_counted_fee` in protocol fee, so farming by dealing
/// with yourself costs real lamports per step (docs/protocol.md, "Reputation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ServerStats {
    /// Every request completed (and billed), counted or not.
    pub completed: u64,
    /// Completed requests whose fee reached `min_counted_fee`: what `min_completed` filters on.
    pub counted: u64,
    /// Protocol fees paid by the counted completions, in lamports: reputation weighted by money.
    pub fees: u64,
    /// Counted completed requests the client flagged as bad.
    pub flagged: u64,
    /// Locked requests reclaimed by the client after the deadline.
    pub timed_out: u64,
    /// Locked requests handed back before the deadline (by the server, or by anyone after a
    /// lock window without a first chunk).
    pub released: u64,
    /// Counted comparisons this server took part in.
    pub comparisons: u64,
    /// Counted comparisons this server won.
    pub preferred: u64,
}

impl ServerStats {
    /// Success ratio in basis points:
    /// `(counted - flagged) / (counted + timed_out + released)`.
    /// A server with no finished work has no ratio yet and counts as 10,000 (successful by
    /// default, as the design says); the `min_completed` filter is how clients avoid newcomers.
    #[inline]
    pub const fn success_bps(&self) -> u16 {
        let good = self.counted.saturating_sub(self.flagged);
        let (good, total) = match self.counted.checked_add(self.timed_out) {
            Some(partial) => match partial.checked_add(self.released) {
                Some(total) => (good, total),
                None => Self::quartered(good, self),
            },
            None => Self::quartered(good, self),
        };
        match ratio_bps(good, total) {
            Some(bps) => bps,
            None => 10_000,
        }
    }

    /// Counts near `u64::MAX` do not fit one sum: divide every term by four (each sum then fits),
    /// which keeps the ratio to within rounding.
    #[allow(clippy::arithmetic_side_effects)] // three values below 2^62 sum below 2^64
    const fn quartered(good: u64, s: &ServerStats) -> (u64, u64) {
        (good >> 2, (s.counted >> 2) + (s.timed_out >> 2) + (s.released >> 2))
    }

    /// Preference share in basis points, `preferred / comparisons`; `None` before any comparison.
    #[inline]
    pub const fn preference_bps(&self) -> Option<u16> {
        ratio_bps(self.preferred, self.comparisons)
    }

    /// The success ratio clients rank servers by, in bps:
    /// `(counted - flagged) / (counted + timed_out + released + 2)`. The two phantom failures
    /// are a prior: a server with no record scores 0 and climbs with paid work, so a fresh wallet
    /// (a sybil, or an operator washing a bad record) cannot outrank one with a long, clean one.
    #[inline]
    pub const fn ranking_bps(&self) -> u16 {
        let total = self.counted.saturating_add(self.timed_out).saturating_add(self.released).saturating_add(2);
        match ratio_bps(self.counted.saturating_sub(self.flagged), total) {
            Some(bps) => bps,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_puts_a_fresh_server_last_and_a_long_clean_record_first() {
        let fresh = ServerStats::default();
        let short = ServerStats { counted: 2, ..Default::default() };
        let long = ServerStats { counted: 98, ..Default::default() };
        let flagged = ServerStats { counted: 98, flagged: 49, ..Default::default() };
        assert_eq!(fresh.ranking_bps(), 0, "no record: no rank, though success_bps says 100%");
        assert_eq!(fresh.success_bps(), 10_000);
        assert_eq!(short.ranking_bps(), 5_000);
        assert_eq!(long.ranking_bps(), 9_800);
        assert_eq!(flagged.ranking_bps(), 4_900);
        let huge = ServerStats { counted: u64::MAX, timed_out: u64::MAX, ..Default::default() };
        assert!(huge.ranking_bps() <= 10_000, "saturating sums never overflow");
    }

    #[test]
    fn affordable_tokens_is_the_most_the_stake_pays_in_full() {
        for (stake, price) in [(1_000_000u64, 2_000_000u64), (999, 3), (1, 7_000_001), (u64::MAX, 1), (5, u64::MAX)] {
            let t = affordable_tokens(stake, price);
            let exact = |tokens: u64| mul_div(tokens, price, TOKENS_PER_PRICE_UNIT, Rounding::Up);
            assert!(exact(t).is_none_or(|c| c <= stake) || t == u64::MAX, "{stake} {price}");
            if t < u64::MAX {
                assert!(exact(t + 1).is_none_or(|c| c > stake), "{stake} {price}: {t} + 1 still affordable");
            }
        }
        assert_eq!(affordable_tokens(600, 2_000_000), 300);
        assert_eq!(affordable_tokens(0, 1), 0);
        assert_eq!(affordable_tokens(10, 0), u64::MAX);
    }

    #[test]
    fn stake_for_pays_for_the_budget_and_no_more() {
        for (tokens, price) in [(512u64, 2_000_000u64), (1, 1), (3, 7_000_001), (u64::from(u32::MAX), 999), (7, 0)] {
            let stake = stake_for(tokens, price).unwrap();
            assert!(affordable_tokens(stake, price) >= tokens, "{tokens} at {price}");
            assert_eq!(cost(tokens, price, u64::MAX), stake, "{tokens} at {price}: the charge for the budget");
            if stake > 0 {
                assert!(
                    affordable_tokens(stake - 1, price) < tokens,
                    "{tokens} at {price}: one lamport less falls short"
                );
            }
        }
        assert_eq!(stake_for(u64::MAX, u64::MAX), None);
    }

    #[test]
    fn extremes() {
        assert_eq!(mul_div(u64::MAX, u64::MAX, u32::MAX, Rounding::Down), None);
        assert_eq!(mul_div(u64::MAX, 1, 1, Rounding::Up), Some(u64::MAX));
        assert_eq!(mul_div(u64::MAX, 2, 2, Rounding::Down), Some(u64::MAX));
        assert_eq!(mul_div(7, 3, 0, Rounding::Down), None);
        assert_eq!(cost(u64::MAX, u64::MAX, 5), 5);
        assert_eq!(cost(0, u64::MAX, 5), 0);
        assert_eq!(cost(u64::MAX, 0, 5), 0);
        assert_eq!(cost(1, 1, u64::MAX), 1, "a fraction of a lamport rounds up");
        let s = settle(u64::MAX, u64::MAX, u64::MAX, 10_000).unwrap();
        assert_eq!((s.cost, s.fee, s.server, s.refund), (u64::MAX, u64::MAX, 0, 0));
        assert_eq!(fee(100, 10_001), Err(Error::InvalidFeeBps));
    }

    #[test]
    fn reputation() {
        let fresh = ServerStats::default();
        assert_eq!(fresh.success_bps(), 10_000);
        assert_eq!(fresh.preference_bps(), None);
        let s = ServerStats {
            completed: 20,
            counted: 8,
            fees: 800,
            flagged: 2,
            timed_out: 1,
            released: 1,
            comparisons: 4,
            preferred: 1,
        };
        assert_eq!(s.success_bps(), 6_000, "uncounted completions do not raise the ratio");
        assert_eq!(s.preference_bps(), Some(2_500));
        let huge = ServerStats { counted: u64::MAX, timed_out: u64::MAX, ..Default::default() };
        assert_eq!(huge.success_bps(), 4_999, "sums past u64 keep their ratio, to rounding");
    }
}
