//! What a sealed prompt contains: the chat messages and how to generate the answer.
//!
//! Every client (Rust, wasm) writes and every server reads this one format, so the rule lives
//! here. It is the plaintext inside the prompt envelope ([`crate::envelope`]), never on chain in
//! the clear.
//!
//! ```text
//! version u8 = 1
//! temperature_milli u16   (0 = greedy; 1,000 = 1.0)
//! top_p_bps u16           (10,000 = no nucleus cut)
//! top_k u16               (0 = off)
//! seed u64
//! max_completion_tokens u32 (0 = as many as the request's max_tokens leaves)
//! message_count u16 (1..=256), then per message: role u8 (0 system, 1 user, 2 assistant),
//!                                                content u32 length + UTF-8 bytes
//! ```
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

/// The payload format version.
pub const PROMPT_VERSION: u8 = 1;
/// Most messages in one prompt.
pub const MAX_MESSAGES: usize = 256;

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
}

impl PromptPayload {
    /// A conversation with greedy decoding.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        PromptPayload { messages, temperature_milli: 0, top_p_bps: 10_000, top_k: 0, seed: 0, max_completion_tokens: 0 }
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
        Ok(())
    }

    /// The canonical bytes (what is sealed, and what comparisons digest).
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut w = VecWriter::default();
        w.u8(PROMPT_VERSION).u16(self.temperature_milli).u16(self.top_p_bps).u16(self.top_k).u64(self.seed);
        w.u32(self.max_completion_tokens);
        let count = u16::try_from(self.messages.len()).map_err(|_| Error::MalformedPrompt)?;
        w.u16(count);
        for message in &self.messages {
            w.u8(message.role as u8);
            let len = u32::try_from(message.content.len()).map_err(|_| Error::MalformedPrompt)?;
            w.u32(len).put(message.content.as_bytes());
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
        if r.u8()? != PROMPT_VERSION {
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
        r.finish()?;
        let payload = PromptPayload { messages, temperature_milli, top_p_bps, top_k, seed, max_completion_tokens };
        payload.validate()?;
        Ok(payload)
    }
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
        version[0] = 2;
        assert_eq!(PromptPayload::decode(&version), Err(Error::MalformedPrompt));
        let mut role = bytes.clone();
        role[21] = 9;
        assert_eq!(PromptPayload::decode(&role), Err(Error::MalformedPrompt));
        assert_eq!(PromptPayload::chat(Vec::new()).encode(), Err(Error::MalformedPrompt));
    }
}
