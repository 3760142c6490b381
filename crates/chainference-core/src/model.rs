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

/// `[A-Za-z0-9._-]`, not starting or ending with `-` or `.`, no `..`, 1..=`max` bytes: one pass.
fn check_part(part: &[u8], max: usize) -> Result<()> {
    let (Some(&first), Some(&last)) = (part.first(), part.last()) else { return Err(Error::InvalidModelId) };
    if part.len() > max || matches!(first, b'-' | b'.') || matches!(last, b'-' | b'.') {
        return Err(Error::InvalidModelId);
    }
    let mut prev = 0u8;
    for &c in part {
        let ok = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || (c == b'.' && prev != b'.');
        if !ok {
            return Err(Error::InvalidModelId);
        }
        prev = c;
    }
    Ok(())
}

fn sub(text: &str, start: usize, end: usize) -> Result<&str> {
    text.get(start..end).ok_or(Error::InvalidModelId)
}

impl<'a> ModelId<'a> {
    /// Parses and validates `org/name[@revision][:quant]`.
    ///
    /// `org` and `name`: 1..=96 of `[A-Za-z0-9._-]`, not starting or ending with `-` or `.`,
    /// no `..`. `revision`: 1..=64 of `[A-Za-z0-9._/-]`, not starting or ending with `/`.
    /// `quant`: 1..=16 of `[A-Za-z0-9_]`. One pass to find the separators, one per part to check
    /// it (the program runs this on every request it opens).
    pub fn parse(text: &'a str) -> Result<Self> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_MODEL_ID_LEN {
            return Err(Error::InvalidModelId);
        }
        let (mut slash, mut at, mut colon) = (None, None, None);
        for (i, &c) in bytes.iter().enumerate() {
            match c {
                b'/' if slash.is_none() => slash = Some(i),
                b'@' if at.is_none() => at = Some(i),
                b':' => colon = Some(i),
                _ => {}
            }
        }
        // The quant follows the last ':'; the revision the first '@' before it.
        let end = colon.unwrap_or(bytes.len());
        let at = at.filter(|&a| a < end);
        let repo_end = at.unwrap_or(end);
        let slash = slash.filter(|&s| s < repo_end).ok_or(Error::InvalidModelId)?;
        let org = sub(text, 0, slash)?;
        let name = sub(text, slash.saturating_add(1), repo_end)?;
        check_part(org.as_bytes(), MAX_MODEL_PART_LEN)?;
        check_part(name.as_bytes(), MAX_MODEL_PART_LEN)?;
        let revision = match at {
            Some(a) => {
                let rev = sub(text, a.saturating_add(1), end)?;
                let b = rev.as_bytes();
                let ok = !b.is_empty()
                    && b.len() <= MAX_REVISION_LEN
                    && b.first() != Some(&b'/')
                    && b.last() != Some(&b'/')
                    && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'));
                if !ok {
                    return Err(Error::InvalidModelId);
                }
                Some(rev)
            }
            None => None,
        };
        let quant = match colon {
            Some(c) => {
                let q = sub(text, c.saturating_add(1), bytes.len())?;
                let b = q.as_bytes();
                let ok = !b.is_empty()
                    && b.len() <= MAX_QUANT_LEN
                    && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
                if !ok {
                    return Err(Error::InvalidModelId);
                }
                Some(q)
            }
            None => None,
        };
        Ok(ModelId { text, org, name, revision, quant })
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
