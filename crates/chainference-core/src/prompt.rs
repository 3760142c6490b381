//! What a sealed prompt contains: the chat messages and how to generate the answer.
//!
//! Every client (Rust, wasm) writes and every server reads this one format, so the rule lives
//! here. It is the plaintext inside the prompt envelope ([`crate::envelope`]), never on chain in
//! the clear.
//!
//! ```text
//! version u8 = 1 (2 with stop sequences, below)
//! temperature_milli u16   (0 = greedy; 1,000 = 1.0)
//! top_p_bps u16           (10,000 = no nucleus cut)
//! top_k u16               (0 = off)
//! seed u64
//! max_completion_tokens u32 (0 = as many as the request's max_tokens leaves)
//! message_count u16 (1..=256), then per message: role u8 (0 system, 1 user, 2 assistant),
//!                                                content u32 length + UTF-8 bytes
//! ```
//!
//! A payload with stop sequences is version 2: the same fields, then `stop_count u8 (1..=4)` and
//! per stop sequence `u8 length (1..=64) + UTF-8 bytes`. A payload without them is written as
//! version 1, byte for byte as before, so servers and digests that predate stop sequences are
//! unaffected. The answer ends just before the first occurrence of any stop sequence
//! ([`StopMatcher`]); the stop sequence itself is not part of it.
//!
//! ```
//! use chainference_core::prompt::{ChatMessage, PromptPayload};
//! let payload = PromptPayload::user("What is the capital of France?");
//! let bytes = payload.encode().unwrap();
//! assert_eq!(PromptPayload::decode(&bytes).unwrap(), payload);
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::wire::{Reader, VecWriter};

/// The payload format version of a payload without stop sequences.
pub const PROMPT_VERSION: u8 = 1;
/// The payload format version of a payload with stop sequences.
pub const PROMPT_VERSION_STOPS: u8 = 2;
/// Most messages in one prompt.
pub const MAX_MESSAGES: usize = 256;
/// Most stop sequences in one prompt (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_LEN: usize = 64;

/// Checks stop sequences against their bounds: at most [`MAX_STOP_SEQUENCES`], each 1 to
/// [`MAX_STOP_LEN`] bytes ([`Error::MalformedPrompt`] otherwise).
pub fn check_stop_sequences(stop: &[String]) -> Result<()> {
    if stop.len() > MAX_STOP_SEQUENCES || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(Error::MalformedPrompt);
    }
    Ok(())
}

byte_enum! {
    /// Who wrote a chat message.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Role {
        /// Instructions for the model.
        System = 0,
        /// The person asking.
        User = 1,
        /// The model's earlier turns.
        Assistant = 2,
    }
}

impl Role {
    /// The name chat templates use (`system`, `user`, `assistant`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// The role for a chat-template name.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into() }
    }
}

/// The plaintext of a prompt envelope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PromptPayload {
    /// The conversation, oldest first; the model answers the last message.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature in thousandths (0 = greedy).
    pub temperature_milli: u16,
    /// Nucleus sampling cut in basis points (10,000 = off).
    pub top_p_bps: u16,
    /// Top-k cut (0 = off).
    pub top_k: u16,
    /// Sampling seed.
    pub seed: u64,
    /// Most completion tokens (0 = as many as the request's `max_tokens` leaves).
    pub max_completion_tokens: u32,
    /// Up to [`MAX_STOP_SEQUENCES`] texts that end the answer (each 1..=[`MAX_STOP_LEN`] bytes).
    pub stop: Vec<String>,
}

impl PromptPayload {
    /// A conversation with greedy decoding.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        PromptPayload {
            messages,
            temperature_milli: 0,
            top_p_bps: 10_000,
            top_k: 0,
            seed: 0,
            max_completion_tokens: 0,
            stop: Vec::new(),
        }
    }

    /// One user message with greedy decoding.
    pub fn user(text: impl Into<String>) -> Self {
        Self::chat(alloc::vec![ChatMessage::new(Role::User, text)])
    }

    /// Checks the bounds [`PromptPayload::decode`] enforces.
    pub fn validate(&self) -> Result<()> {
        if self.messages.is_empty() || self.messages.len() > MAX_MESSAGES {
            return Err(Error::MalformedPrompt);
        }
        if self.top_p_bps > 10_000 || self.top_p_bps == 0 {
            return Err(Error::MalformedPrompt);
        }
        check_stop_sequences(&self.stop)
    }

    /// The canonical bytes (what is sealed, and what comparisons digest).
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut w = VecWriter::default();
        let version = if self.stop.is_empty() { PROMPT_VERSION } else { PROMPT_VERSION_STOPS };
        w.u8(version).u16(self.temperature_milli).u16(self.top_p_bps).u16(self.top_k).u64(self.seed);
        w.u32(self.max_completion_tokens);
        let count = u16::try_from(self.messages.len()).map_err(|_| Error::MalformedPrompt)?;
        w.u16(count);
        for message in &self.messages {
            w.u8(message.role as u8);
            let len = u32::try_from(message.content.len()).map_err(|_| Error::MalformedPrompt)?;
            w.u32(len).put(message.content.as_bytes());
        }
        if !self.stop.is_empty() {
            // Bounds checked by validate: at most 4 sequences of at most 64 bytes.
            w.u8(u8::try_from(self.stop.len()).map_err(|_| Error::MalformedPrompt)?);
            for stop in &self.stop {
                w.u8(u8::try_from(stop.len()).map_err(|_| Error::MalformedPrompt)?).put(stop.as_bytes());
            }
        }
        Ok(w.into_inner())
    }

    /// Decodes exactly `bytes`: unknown version, bad role, bad UTF-8, truncation or trailing
    /// bytes are all [`Error::MalformedPrompt`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_inner(bytes).map_err(|_| Error::MalformedPrompt)
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROMPT_VERSION && version != PROMPT_VERSION_STOPS {
            return Err(Error::UnsupportedVersion);
        }
        let temperature_milli = r.u16()?;
        let top_p_bps = r.u16()?;
        let top_k = r.u16()?;
        let seed = r.u64()?;
        let max_completion_tokens = r.u32()?;
        let count = usize::from(r.u16()?);
        if count == 0 || count > MAX_MESSAGES {
            return Err(Error::LengthOutOfRange);
        }
        let mut messages = Vec::with_capacity(count);
        for _ in 0..count {
            let role = Role::from_u8(r.u8()?).ok_or(Error::InvalidTag)?;
            let content = r.str(bytes.len())?;
            messages.push(ChatMessage { role, content: String::from(content) });
        }
        let mut stop = Vec::new();
        if version == PROMPT_VERSION_STOPS {
            // Canonical: version 2 always carries at least one stop sequence.
            let count = usize::from(r.u8()?);
            if count == 0 || count > MAX_STOP_SEQUENCES {
                return Err(Error::LengthOutOfRange);
            }
            for _ in 0..count {
                let len = usize::from(r.u8()?);
                let text = core::str::from_utf8(r.take(len)?).map_err(|_| Error::InvalidUtf8)?;
                stop.push(String::from(text));
            }
        }
        r.finish()?;
        let payload =
            PromptPayload { messages, temperature_milli, top_p_bps, top_k, seed, max_completion_tokens, stop };
        payload.validate()?;
        Ok(payload)
    }
}

/// Cuts streamed text at the first stop sequence. Text that could still be the start of a stop
/// sequence is held back until the next piece decides it, so what [`StopMatcher::push`] returns
/// is final.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored: they would end every answer at once).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether there is anything to match.
    pub fn is_active(&self) -> bool {
        !self.stops.is_empty()
    }

    /// Whether a stop sequence was reached: the answer is complete, nothing more is shown.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the next piece of generated text; returns the text that is now certain to be part
    /// of the answer (possibly empty).
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        // The match that completes first, as if the text came one character at a time (so how
        // it was split cannot matter); of two ending together, the longer.
        let first_match = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|at| (at.saturating_add(stop.len()), at)))
            .min();
        if let Some((_, at)) = first_match {
            self.stopped = true;
            let mut shown = core::mem::take(&mut self.held);
            shown.truncate(at);
            return shown;
        }
        // Hold back the longest end of the text that begins some stop sequence.
        let keep = self.stops.iter().map(|stop| partial_overlap(&self.held, stop)).max().unwrap_or(0);
        let cut = self.held.len().saturating_sub(keep);
        let rest = self.held.split_off(cut);
        core::mem::replace(&mut self.held, rest)
    }

    /// The end of generation: returns what was held back (no stop sequence followed).
    pub fn finish(&mut self) -> String {
        core::mem::take(&mut self.held)
    }
}

/// The length of the longest proper prefix of `stop` that `text` ends with.
fn partial_overlap(text: &str, stop: &str) -> usize {
    let longest = stop.len().saturating_sub(1).min(text.len());
    (1..=longest)
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.as_bytes().ends_with(stop.as_bytes().get(..k).unwrap_or_default()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_every_malformation() {
        let mut payload = PromptPayload::chat(alloc::vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Héllo ✓"),
            ChatMessage::new(Role::Assistant, ""),
        ]);
        payload.temperature_milli = 700;
        payload.seed = 42;
        let bytes = payload.encode().unwrap();
        assert_eq!(PromptPayload::decode(&bytes).unwrap(), payload);
        for cut in 0..bytes.len() {
            assert_eq!(PromptPayload::decode(&bytes[..cut]), Err(Error::MalformedPrompt), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(PromptPayload::decode(&trailing), Err(Error::MalformedPrompt));
        let mut version = bytes.clone();
        version[0] = 3;
        assert_eq!(PromptPayload::decode(&version), Err(Error::MalformedPrompt));
        let mut role = bytes.clone();
        role[21] = 9;
        assert_eq!(PromptPayload::decode(&role), Err(Error::MalformedPrompt));
        assert_eq!(PromptPayload::chat(Vec::new()).encode(), Err(Error::MalformedPrompt));
    }

    #[test]
    fn stop_sequences_are_version_2_and_bounded() {
        let mut payload = PromptPayload::user("Count to ten.");
        let plain = payload.encode().unwrap();
        assert_eq!(plain[0], PROMPT_VERSION, "no stop sequences: version 1, as before");
        payload.stop = alloc::vec!["five".into(), "\n\n".into(), "é".into()];
        let bytes = payload.encode().unwrap();
        assert_eq!(bytes[0], PROMPT_VERSION_STOPS);
        assert_eq!(&bytes[..plain.len()][1..], &plain[1..], "the version 1 fields, then the stops");
        assert_eq!(PromptPayload::decode(&bytes).unwrap(), payload);
        for cut in plain.len()..bytes.len() {
            assert_eq!(PromptPayload::decode(&bytes[..cut]), Err(Error::MalformedPrompt), "cut at {cut}");
        }
        // Version 2 with no stop sequence is not canonical.
        let mut empty = plain.clone();
        empty[0] = PROMPT_VERSION_STOPS;
        empty.push(0);
        assert_eq!(PromptPayload::decode(&empty), Err(Error::MalformedPrompt));
        let mut invalid_utf8 = plain.clone();
        invalid_utf8[0] = PROMPT_VERSION_STOPS;
        invalid_utf8.extend_from_slice(&[1, 1, 0xff]);
        assert_eq!(PromptPayload::decode(&invalid_utf8), Err(Error::MalformedPrompt));
        for bad in [
            alloc::vec![String::new()],
            alloc::vec!["x".repeat(MAX_STOP_LEN + 1)],
            alloc::vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
        ] {
            payload.stop = bad;
            assert_eq!(payload.encode(), Err(Error::MalformedPrompt));
        }
        payload.stop = alloc::vec!["x".repeat(MAX_STOP_LEN)];
        assert_eq!(PromptPayload::decode(&payload.encode().unwrap()).unwrap(), payload);
    }

    /// Feeds `pieces` through a matcher for `stops`; returns what it showed and whether it stopped.
    fn cut(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| String::from(*s)).collect();
        let mut matcher = StopMatcher::new(&stops);
        let mut shown = String::new();
        for piece in pieces {
            shown.push_str(&matcher.push(piece));
        }
        shown.push_str(&matcher.finish());
        (shown, matcher.is_stopped())
    }

    #[test]
    fn the_answer_ends_before_the_first_stop_sequence_however_it_is_split() {
        assert_eq!(cut(&["Paris"], &["The capital is Paris."]), ("The capital is ".into(), true));
        assert_eq!(cut(&["Paris"], &["The capital is Pa", "ri", "s. More"]), ("The capital is ".into(), true));
        assert_eq!(cut(&["Paris"], &["Par", "ty in Pa", "ris"]), ("Party in ".into(), true));
        // The first to complete, whatever their order and however the text is split.
        assert_eq!(cut(&["world", "lo"], &["hello world"]), ("hel".into(), true));
        assert_eq!(cut(&["abcdef", "cd"], &["abcdef"]), ("ab".into(), true));
        assert_eq!(cut(&["abcdef", "cd"], &["abcd", "ef"]), ("ab".into(), true));
        assert_eq!(cut(&["bc", "abc"], &["xabc"]), ("x".into(), true));
        // No stop sequence: everything, in order, once generation ends.
        assert_eq!(cut(&["Paris"], &["The capital is Pa", "ra"]), ("The capital is Para".into(), false));
        assert_eq!(cut(&[], &["a", "b"]), ("ab".into(), false));
        // Multi-byte text and stop sequences cut at character boundaries.
        assert_eq!(cut(&["ü"], &["grün", "e"]), ("gr".into(), true));
        assert_eq!(cut(&["✓ done"], &["ok ✓", " do", "ne now"]), ("ok ".into(), true));
        assert_eq!(cut(&["✓ done"], &["ok ✓", " do", "g"]), ("ok ✓ dog".into(), false));
        // Nothing after the stop.
        let mut matcher = StopMatcher::new(&[String::from("x")]);
        assert_eq!(matcher.push("axb"), "a");
        assert_eq!((matcher.push("more"), matcher.finish()), (String::new(), String::new()));
    }

    #[test]
    fn held_text_is_only_what_could_still_start_a_stop_sequence() {
        let mut matcher = StopMatcher::new(&[String::from("</answer>")]);
        assert_eq!(matcher.push("yes </ans"), "yes ");
        assert_eq!(matcher.push("wer is"), "</answer is");
        assert!(!matcher.is_stopped());
    }
}
