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
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Part {
        Org,
        Name,
        Revision,
        Quant,
    }
    /// Whether a part of `len` bytes ending in `last` may end here.
    fn may_end(part: Part, len: usize, last: u8) -> bool {
        match part {
            Part::Org | Part::Name => len > 0 && len <= MAX_MODEL_PART_LEN && !matches!(last, b'-' | b'.'),
            Part::Revision => len > 0 && len <= MAX_REVISION_LEN && last != b'/',
            Part::Quant => len > 0 && len <= MAX_QUANT_LEN,
        }
    }
    if bytes.is_empty() || bytes.len() > MAX_MODEL_ID_LEN {
        return Err(Error::InvalidModelId);
    }
    let (mut part, mut len, mut prev) = (Part::Org, 0usize, 0u8);
    for &c in bytes {
        let next = match (c, part) {
            (b'/', Part::Org) => Some(Part::Name),
            (b'@', Part::Name) => Some(Part::Revision),
            (b':', Part::Name | Part::Revision) => Some(Part::Quant),
            _ => None,
        };
        if let Some(next) = next {
            if !may_end(part, len, prev) {
                return Err(Error::InvalidModelId);
            }
            (part, len, prev) = (next, 0, 0);
            continue;
        }
        let allowed = match part {
            Part::Org | Part::Name => {
                c.is_ascii_alphanumeric()
                    || c == b'_'
                    || (matches!(c, b'-' | b'.') && len > 0 && !(c == b'.' && prev == b'.'))
            }
            Part::Revision => c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.') || (c == b'/' && len > 0),
            Part::Quant => match quant_case {
                QuantCase::Any => c.is_ascii_alphanumeric() || c == b'_',
                QuantCase::Upper => c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_',
            },
        };
        if !allowed {
            return Err(Error::InvalidModelId);
        }
        len = len.saturating_add(1);
        prev = c;
    }
    if part == Part::Org || !may_end(part, len, prev) {
        return Err(Error::InvalidModelId);
    }
    Ok(())
}

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
