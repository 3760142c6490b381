//! Model ids: Hugging Face ids with an optional pinned revision and quantization,
//! `org/name[@revision][:quant]`.
//!
//! A [`ModelId`] borrows its text and is validated once; [`ModelId::canonical_eq`] compares
//! two ids by their canonical form (quantization case-insensitive, everything else exact), which
//! is what the program uses to match a request's model against a server's offers.

use crate::error::{Error, Result};

/// Longest model id, in bytes.
pub const MAX_MODEL_ID_LEN: usize = 128;
/// Longest `org` or `name` part, in bytes (Hugging Face's own limit is 96).
pub const MAX_MODEL_PART_LEN: usize = 96;
/// Longest revision (a branch, tag or 40-hex commit).
pub const MAX_REVISION_LEN: usize = 64;
/// Longest quantization tag (e.g. `Q4_K_M`).
pub const MAX_QUANT_LEN: usize = 16;

/// A validated model id, `org/name[@revision][:quant]`, borrowing its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelId<'a> {
    text: &'a str,
    org: &'a str,
    name: &'a str,
    revision: Option<&'a str>,
    quant: Option<&'a str>,
}

/// Which quantization spellings [`scan`] accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuantCase {
    /// Any ASCII case (what users write).
    Any,
    /// Upper-case only (the canonical form the program stores and matches by bytes).
    Upper,
}

/// The model-id grammar, the one definition both [`ModelId::parse`] and
/// [`check_canonical_model`] use, in one pass over the bytes (the program runs it on every request
/// and offer):
///
/// - `org` and `name`: 1..=96 of `[A-Za-z0-9._-]`, not starting or ending with `-` or `.`, no `..`;
/// - `revision` (after `@`): 1..=64 of `[A-Za-z0-9._/-]`, not starting or ending with `/`;
/// - `quant` (after `:`): 1..=16 of `[A-Za-z0-9_]` (upper-case letters only for [`QuantCase::Upper`]);
/// - at most [`MAX_MODEL_ID_LEN`] bytes in all.
fn scan(bytes: &[u8], quant_case: QuantCase) -> Result<()> {
    if bytes.is_empty() || bytes.len() > MAX_MODEL_ID_LEN {
        return Err(Error::InvalidModelId);
    }
    // The program runs this on every request and offer, so plain bytes take a tight inner loop
    // (one table lookup and one bit test each, nothing else live); edges and separators take
    // the outer one. A part's `plain` classes may appear anywhere in it; its `edges` neither
    // first nor last (nor `..` in org and name); separators start the next part. A part is
    // `bytes[start..i]`. Indices are at most MAX_MODEL_ID_LEN, so they never wrap.
    let (mut order, mut start, mut i) = (0u8, 0usize, 0usize);
    let (mut plain, mut edges, mut max_len) = part_rules(0, quant_case);
    loop {
        while let Some(&c) = bytes.get(i) {
            if class_of(c) & plain == 0 {
                break;
            }
            i = i.wrapping_add(1);
        }
        let Some(&c) = bytes.get(i) else { break };
        let prev = if i > start { bytes.get(i.wrapping_sub(1)).copied().unwrap_or(0) } else { 0 };
        if class_of(c) & edges != 0 {
            if i == start || (order < 2 && c == b'.' && prev == b'.') {
                return Err(Error::InvalidModelId);
            }
        } else {
            let next = match (c, order) {
                (b'/', 0) => 1,
                (b'@', 1) => 2,
                (b':', 1 | 2) => 3,
                _ => return Err(Error::InvalidModelId),
            };
            if !may_end(i.wrapping_sub(start), prev, edges, max_len) {
                return Err(Error::InvalidModelId);
            }
            (order, start) = (next, i.wrapping_add(1));
            (plain, edges, max_len) = part_rules(next, quant_case);
        }
        i = i.wrapping_add(1);
    }
    let last = bytes.last().copied().unwrap_or(0);
    if order == 0 || !may_end(bytes.len().wrapping_sub(start), last, edges, max_len) {
        return Err(Error::InvalidModelId);
    }
    Ok(())
}

/// `(plain classes, edge classes, longest)` of part `order` (0 org, 1 name, 2 revision, 3 quant).
const fn part_rules(order: u8, quant_case: QuantCase) -> (u8, u8, usize) {
    match order {
        0 | 1 => (ALNUM | UNDERSCORE, DASH | DOT, MAX_MODEL_PART_LEN),
        2 => (ALNUM | UNDERSCORE | DASH | DOT, SLASH, MAX_REVISION_LEN),
        _ => match quant_case {
            QuantCase::Any => (ALNUM | UNDERSCORE, 0, MAX_QUANT_LEN),
            QuantCase::Upper => (UPPER_OR_DIGIT | UNDERSCORE, 0, MAX_QUANT_LEN),
        },
    }
}

/// Whether a part of `len` bytes ending in `last` may end here.
fn may_end(len: usize, last: u8, edges: u8, max_len: usize) -> bool {
    len > 0 && len <= max_len && class_of(last) & edges == 0
}

/// Byte classes of the model-id grammar (bits of [`CLASS`]).
const ALNUM: u8 = 1;
const UPPER_OR_DIGIT: u8 = 2;
const UNDERSCORE: u8 = 4;
const DASH: u8 = 8;
const DOT: u8 = 16;
const SLASH: u8 = 32;

/// The class bits of byte `c`.
#[inline(always)]
#[allow(clippy::indexing_slicing)] // a u8 indexes 256 entries
fn class_of(c: u8) -> u8 {
    CLASS[usize::from(c)]
}

/// The class bits of every byte value.
#[allow(clippy::cast_possible_truncation, clippy::indexing_slicing)] // c < 256
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        table[c] = if b.is_ascii_uppercase() || b.is_ascii_digit() {
            ALNUM | UPPER_OR_DIGIT
        } else if b.is_ascii_lowercase() {
            ALNUM
        } else {
            match b {
                b'_' => UNDERSCORE,
                b'-' => DASH,
                b'.' => DOT,
                b'/' => SLASH,
                _ => 0,
            }
        };
        c += 1;
    }
    table
};

/// Checks that `model` is a model id in canonical form (quantization upper-case): what the
/// program requires of every request and offer, since it matches models by their bytes.
pub fn check_canonical_model(model: &str) -> Result<()> {
    scan(model.as_bytes(), QuantCase::Upper)
}

fn sub(text: &str, start: usize, end: usize) -> Result<&str> {
    text.get(start..end).ok_or(Error::InvalidModelId)
}

impl<'a> ModelId<'a> {
    /// Parses and validates `org/name[@revision][:quant]` (the grammar is documented on the
    /// crate's model-id rule: `org`/`name` 1..=96 of `[A-Za-z0-9._-]` not starting or ending with
    /// `-` or `.` and without `..`; `revision` 1..=64 of `[A-Za-z0-9._/-]` not starting or ending
    /// with `/`; `quant` 1..=16 of `[A-Za-z0-9_]`, any case).
    pub fn parse(text: &'a str) -> Result<Self> {
        scan(text.as_bytes(), QuantCase::Any)?;
        // A valid id has one `/` ending the org (the first: an org holds none), at most one `@`
        // and at most one `:`, so the separators are where `find` puts them.
        let slash = text.find('/').ok_or(Error::InvalidModelId)?;
        let (at, colon) = (text.find('@'), text.find(':'));
        let after = |i: usize| i.saturating_add(1);
        let end = colon.unwrap_or(text.len());
        let repo_end = at.unwrap_or(end);
        Ok(ModelId {
            text,
            org: sub(text, 0, slash)?,
            name: sub(text, after(slash), repo_end)?,
            revision: at.map(|a| sub(text, after(a), end)).transpose()?,
            quant: colon.map(|c| sub(text, after(c), text.len())).transpose()?,
        })
    }

    /// The text as given.
    pub const fn as_str(&self) -> &'a str {
        self.text
    }
    /// The organisation (`HuggingFaceTB`).
    pub const fn org(&self) -> &'a str {
        self.org
    }
    /// The repository name (`SmolLM2-135M-Instruct`).
    pub const fn name(&self) -> &'a str {
        self.name
    }
    /// The pinned revision, if any.
    pub const fn revision(&self) -> Option<&'a str> {
        self.revision
    }
    /// The quantization tag as written, if any.
    pub const fn quant(&self) -> Option<&'a str> {
        self.quant
    }

    /// Whether two ids name the same model: same org, name and revision (exact), same
    /// quantization ignoring ASCII case. Allocation-free, so the program can call it.
    pub fn canonical_eq(&self, other: &ModelId<'_>) -> bool {
        self.org == other.org
            && self.name == other.name
            && self.revision == other.revision
            && match (self.quant, other.quant) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }

    /// The canonical text: quantization upper-cased, everything else as written.
    #[cfg(feature = "alloc")]
    pub fn canonical(&self) -> alloc::string::String {
        use alloc::string::String;
        let mut out = String::with_capacity(self.text.len());
        out.push_str(self.org);
        out.push('/');
        out.push_str(self.name);
        if let Some(rev) = self.revision {
            out.push('@');
            out.push_str(rev);
        }
        if let Some(q) = self.quant {
            out.push(':');
            out.extend(q.chars().map(|c| c.to_ascii_uppercase()));
        }
        out
    }
}

impl core::fmt::Display for ModelId<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.text)
    }
}

/// Whether two model-id strings name the same model (both must parse).
pub fn same_model(a: &str, b: &str) -> Result<bool> {
    Ok(ModelId::parse(a)?.canonical_eq(&ModelId::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_parts() {
        let m = ModelId::parse("HuggingFaceTB/SmolLM2-135M-Instruct@main:q4_1").unwrap();
        assert_eq!(m.org(), "HuggingFaceTB");
        assert_eq!(m.name(), "SmolLM2-135M-Instruct");
        assert_eq!(m.revision(), Some("main"));
        assert_eq!(m.quant(), Some("q4_1"));
        assert_eq!(m.canonical(), "HuggingFaceTB/SmolLM2-135M-Instruct@main:Q4_1");
    }

    #[test]
    fn canonical_equality_ignores_quant_case_only() {
        assert!(same_model("a/b:q8_0", "a/b:Q8_0").unwrap());
        assert!(!same_model("a/b", "a/b:Q8_0").unwrap());
        assert!(!same_model("A/b", "a/b").unwrap());
        assert!(!same_model("a/b@v1", "a/b@v2").unwrap());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "noslash",
            "/name",
            "org/",
            "org/na me",
            "org/name@",
            "org/name:",
            "org/name:Q4-1",
            "-org/name",
            "org/name.",
            "org/na..me",
            "org/name@/main",
            "a/b/c",
        ] {
            assert_eq!(ModelId::parse(bad), Err(Error::InvalidModelId), "{bad:?}");
        }
        let long = alloc::format!("org/{}", "a".repeat(MAX_MODEL_ID_LEN));
        assert_eq!(ModelId::parse(&long), Err(Error::InvalidModelId));
    }
}
