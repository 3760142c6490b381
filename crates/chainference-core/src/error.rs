//! The one numbered error enum of the protocol.
//!
//! Every rule in this crate fails with an [`Error`]; the program returns its code as
//! `ProgramError::Custom(code)`, the SDKs map codes back with [`Error::from_code`], and the wasm
//! bindings put the code on the JS `Error`. Codes are **append-only**: a variant is never
//! renumbered or removed (a test pins every code), new ones take the next free number.

/// Declares [`Error`] from one table (code, name, message, doc), so the enum, [`Error::ALL`] and
/// [`Error::name`] cannot drift apart.
macro_rules! errors {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal => $msg:literal,)*) => {
        /// Every way a Chainference rule, decoder or envelope can refuse its input.
        ///
        /// The discriminant is the stable code carried on-chain as `ProgramError::Custom(code)`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum Error {
            $($(#[doc = $doc])* #[error($msg)] $name = $code,)*
        }

        impl Error {
            /// Every variant, in code order; the code-pinning test walks this list.
            pub const ALL: &'static [Error] = &[$(Error::$name,)*];

            /// The variant's name, stable across releases (handy for JS and logs).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Error::$name => stringify!($name),)*
                }
            }
        }
    };
}

errors! {
    // ---- decoding (1..=19) ----
    /// The bytes end before the layout does.
    Truncated = 1 => "data truncated: the layout needs more bytes than were given",
    /// Bytes are left over after the layout ended.
    TrailingBytes = 2 => "trailing bytes after the end of the layout",
    /// The kind byte names another account type (type confusion).
    WrongAccountKind = 3 => "wrong account kind",
    /// The version byte is not one this build understands.
    UnsupportedVersion = 4 => "unsupported layout version",
    /// An enum tag or boolean byte holds a value with no meaning.
    InvalidTag = 5 => "invalid enum tag or boolean byte",
    /// A string field is not UTF-8.
    InvalidUtf8 = 6 => "string field is not valid UTF-8",
    /// A length prefix exceeds the field's documented bound.
    LengthOutOfRange = 7 => "length exceeds the field's bound",
    /// A model id does not match `org/name[@revision][:quant]`.
    InvalidModelId = 8 => "malformed model id: expected org/name[@revision][:quant]",
    /// The first byte of the instruction data names no instruction.
    UnknownInstruction = 9 => "unknown instruction",
    /// Account data handed to an in-place view is not aligned for its layout (only a host
    /// buffer can be: the runtime aligns every account's data to 8 bytes).
    Misaligned = 10 => "account data is not aligned for its layout",

    // ---- accounts (20..=39) ----
    /// Fewer accounts were passed than the instruction expects.
    NotEnoughAccounts = 20 => "not enough accounts for this instruction",
    /// An account that must sign did not.
    MissingSigner = 21 => "a required signature is missing",
    /// An account that must be writable was passed read-only.
    NotWritable = 22 => "an account that must be writable is read-only",
    /// An account is owned by the wrong program.
    WrongOwner = 23 => "account owned by the wrong program",
    /// An account is not at the address its role requires (PDA, config, treasury, sysvar).
    WrongAddress = 24 => "account is not at the expected address",
    /// The system program account is not the system program.
    WrongSystemProgram = 25 => "the system program account is wrong",
    /// The same account was passed where two different ones are required.
    DuplicateAccount = 26 => "the same account was passed twice where two are required",
    /// The account to create already exists.
    AlreadyInitialized = 27 => "account already initialized",
    /// The signer is not the config admin (or the program's upgrade authority at init).
    NotAdmin = 28 => "signer is not the admin",
    /// The signer is not the request's client.
    NotClient = 29 => "signer is not the request's client",
    /// The signer is not the server account's authority.
    NotServerAuthority = 30 => "signer is not the server's authority",
    /// The account does not exist (no lamports or no data).
    AccountMissing = 31 => "account does not exist",
    /// A PDA bump is not the canonical one the layout requires (requests use 255).
    NonCanonicalBump = 32 => "PDA bump is not canonical: request accounts use bump 255",

    // ---- config (40..=49) ----
    /// `fee_bps` is above 10,000.
    InvalidFeeBps = 40 => "fee above 10000 basis points",
    /// Timeouts are zero, out of order (`min <= default <= max`), or the request's timeout is out of range.
    InvalidTimeout = 41 => "timeout out of the configured range",
    /// The treasury holds less than it must keep, or the withdrawal exceeds what it holds.
    TreasuryInsufficient = 42 => "withdrawal exceeds the treasury's withdrawable balance",

    // ---- servers (50..=69) ----
    /// More offers than [`crate::state::MAX_OFFERS`], or none.
    InvalidOfferCount = 50 => "offer count out of range",
    /// The same model is offered twice.
    DuplicateOffer = 51 => "model offered twice",
    /// The server is deactivated.
    ServerInactive = 52 => "server is inactive",
    /// The server does not offer the request's model.
    ModelNotOffered = 53 => "server does not offer this model",
    /// The server still holds locked requests.
    ServerBusy = 54 => "server still holds locked requests",
    /// The endpoint is longer than [`crate::state::MAX_ENDPOINT_LEN`] or not printable ASCII.
    InvalidEndpoint = 55 => "endpoint too long or not printable ASCII",
    /// The HPKE public key is all zeros or otherwise unusable.
    InvalidPublicKey = 56 => "invalid HPKE public key",

    // ---- requests (70..=109) ----
    /// The request is not in the state this step needs.
    WrongState = 70 => "request is in the wrong state for this step",
    /// The deadline has passed.
    DeadlinePassed = 71 => "the request's deadline has passed",
    /// The deadline has not passed yet.
    DeadlineNotReached = 72 => "the request's deadline has not passed yet",
    /// The server is not on the request's allow-list.
    ServerNotAllowed = 73 => "server is not on the request's allow-list",
    /// The server has completed fewer requests than the request's filter asks.
    MinCompletedNotMet = 74 => "server has too few completed requests for this request's filter",
    /// The server's success ratio is below the request's filter.
    MinSuccessNotMet = 75 => "server's success ratio is below this request's filter",
    /// The request is locked by another server.
    NotLockedByServer = 76 => "request is locked by another server",
    /// More tokens claimed than the request's `max_tokens`.
    TokensExceedMax = 77 => "tokens claimed exceed the request's max_tokens",
    /// The stake is zero.
    ZeroStake = 78 => "stake must be above zero",
    /// The allow-list is empty or longer than [`crate::state::MAX_ALLOWED_SERVERS`].
    InvalidAllowList = 79 => "allow-list must hold 1 to 8 servers",
    /// A server appears twice on the allow-list.
    DuplicateAllowedServer = 80 => "server listed twice on the allow-list",
    /// The prompt envelope is empty or above [`crate::state::MAX_PROMPT_LEN`].
    InvalidPromptLength = 81 => "prompt envelope empty or too large",
    /// A prompt chunk does not start where the upload stands, or runs past the end.
    PromptChunkOutOfPlace = 82 => "prompt chunk out of place",
    /// The response would exceed [`crate::state::MAX_RESPONSE_LEN`].
    ResponseTooLarge = 83 => "response too large",
    /// A chunk was appended after the final one.
    ResponseFinished = 84 => "response already finished",
    /// The request cannot complete before its response's final chunk.
    ResponseNotFinished = 85 => "response not finished",
    /// The response account belongs to another request or server.
    ResponseMismatch = 86 => "response account does not belong to this request",
    /// The response was already flagged.
    AlreadyFlagged = 87 => "response already flagged",
    /// The flag window has closed.
    FlagWindowClosed = 88 => "flag window has closed",
    /// One of the requests was already part of a comparison.
    AlreadyCompared = 89 => "request already compared",
    /// A revealed salt and digest do not open a request's commitment.
    CommitmentMismatch = 90 => "commitment does not match the revealed salt and digest",
    /// Both requests were served by the same server.
    SameServer = 91 => "both requests were served by the same server",
    /// The two requests ask for different models.
    ModelMismatch = 92 => "the two requests ask for different models",
    /// The two requests belong to different clients.
    ClientMismatch = 93 => "the two requests belong to different clients",
    /// The retention period has not elapsed, so only the client may close.
    RetentionNotElapsed = 94 => "retention period not elapsed; only the client may close",
    /// An empty response chunk.
    EmptyChunk = 95 => "empty response chunk",
    /// A comparison's preference byte is neither 0 (first) nor 1 (second).
    InvalidPreference = 96 => "preference must be 0 (first) or 1 (second)",
    /// The server account passed is not the one the step concerns.
    ServerMismatch = 97 => "server account does not match the request",
    /// The client account passed is not the request's client.
    ClientAccountMismatch = 98 => "client account does not match the request",
    /// A request filter is out of range (`min_success_bps` above 10,000).
    InvalidFilter = 99 => "request filter out of range",
    /// A server tried to lock a request of its own wallet (self-dealing farms reputation).
    SelfDealing = 100 => "a server may not lock its own wallet's request",
    /// The server's price for the model is above the request's price cap.
    PriceAboveCap = 101 => "server's price is above the request's price cap",
    /// More tokens billed than bytes of sealed prompt and answer (each token is at least a byte).
    TokensExceedBytes = 102 => "tokens billed exceed the bytes of the prompt and answer",
    /// The locking server still has time to send its first chunk.
    LockWindowOpen = 103 => "the lock window is still open; only the locking server may release",
    /// The request paid less protocol fee than the config's minimum for reputation to count it.
    BelowCountedFee = 104 => "request paid less than the minimum fee that counts toward reputation",
    /// The flag window has not closed yet.
    FlagWindowOpen = 105 => "the flag window has not closed yet",
    /// Nothing is left to claim on this request.
    NothingToClaim = 106 => "nothing left to claim on this request",
    /// A decline must give at least one reason.
    NoDeclineReason = 107 => "a decline must give at least one reason",
    /// This server already declined the request.
    AlreadyDeclined = 108 => "this server already declined the request",

    // ---- arithmetic and funds (110..=119) ----
    /// An arithmetic step would overflow.
    ArithmeticOverflow = 110 => "arithmetic overflow",
    /// An account holds too few lamports for the step.
    InsufficientFunds = 111 => "insufficient lamports",

    // ---- envelope and stream (120..=139) ----
    /// Sealing failed (bad recipient key).
    SealFailed = 120 => "sealing failed",
    /// Opening failed: wrong key, tampered bytes, or wrong context.
    OpenFailed = 121 => "opening failed: wrong key or tampered data",
    /// The envelope bytes are malformed.
    MalformedEnvelope = 122 => "malformed envelope",
    /// A stream chunk arrived after the final one.
    StreamFinished = 123 => "stream already finished",
    /// The stream ended without its final chunk.
    StreamTruncated = 124 => "stream truncated before its final chunk",
    /// The recipient slot asked for does not exist.
    NoSuchRecipient = 125 => "no such recipient slot in the envelope",
    /// The random number generator failed.
    RandomnessUnavailable = 126 => "randomness unavailable",
    /// A decrypted prompt payload is malformed (see [`crate::prompt`]).
    MalformedPrompt = 127 => "malformed prompt payload",
}

impl Error {
    /// The stable numeric code (`ProgramError::Custom(code)` on-chain).
    #[inline(always)]
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The variant with this code, if any.
    pub fn from_code(code: u32) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| e.code() == code)
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
