//! The one numbered error enum of the protocol.
//!
//! Every rule in this crate fails with an [`Error`]; the program returns its code as
//! `ProgramError::Custom(code)`, the SDKs map codes back with [`Error::from_code`], and the wasm
//! bindings put the code on the JS `Error`. Codes are **append-only**: a variant is never
//! renumbered or removed (a test pins every code), new ones take the next free number.

/// Every way a Chainference rule, decoder or envelope can refuse its input.
///
/// The discriminant is the stable code carried on-chain as `ProgramError::Custom(code)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
#[repr(u32)]
pub enum Error {
    // ---- decoding (1..=19) ----
    /// The bytes end before the layout does.
    #[error("data truncated: the layout needs more bytes than were given")]
    Truncated = 1,
    /// Bytes are left over after the layout ended.
    #[error("trailing bytes after the end of the layout")]
    TrailingBytes = 2,
    /// The kind byte names another account type (type confusion).
    #[error("wrong account kind")]
    WrongAccountKind = 3,
    /// The version byte is not one this build understands.
    #[error("unsupported layout version")]
    UnsupportedVersion = 4,
    /// An enum tag or boolean byte holds a value with no meaning.
    #[error("invalid enum tag or boolean byte")]
    InvalidTag = 5,
    /// A string field is not UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8 = 6,
    /// A length prefix exceeds the field's documented bound.
    #[error("length exceeds the field's bound")]
    LengthOutOfRange = 7,
    /// A model id does not match `org/name[@revision][:quant]`.
    #[error("malformed model id: expected org/name[@revision][:quant]")]
    InvalidModelId = 8,
    /// The first byte of the instruction data names no instruction.
    #[error("unknown instruction")]
    UnknownInstruction = 9,

    // ---- accounts (20..=39) ----
    /// Fewer accounts were passed than the instruction expects.
    #[error("not enough accounts for this instruction")]
    NotEnoughAccounts = 20,
    /// An account that must sign did not.
    #[error("a required signature is missing")]
    MissingSigner = 21,
    /// An account that must be writable was passed read-only.
    #[error("an account that must be writable is read-only")]
    NotWritable = 22,
    /// An account is owned by the wrong program.
    #[error("account owned by the wrong program")]
    WrongOwner = 23,
    /// An account is not at the address its role requires (PDA, config, treasury, sysvar).
    #[error("account is not at the expected address")]
    WrongAddress = 24,
    /// The system program account is not the system program.
    #[error("the system program account is wrong")]
    WrongSystemProgram = 25,
    /// The same account was passed where two different ones are required.
    #[error("the same account was passed twice where two are required")]
    DuplicateAccount = 26,
    /// The account to create already exists.
    #[error("account already initialized")]
    AlreadyInitialized = 27,
    /// The signer is not the config admin (or the program's upgrade authority at init).
    #[error("signer is not the admin")]
    NotAdmin = 28,
    /// The signer is not the request's client.
    #[error("signer is not the request's client")]
    NotClient = 29,
    /// The signer is not the server account's authority.
    #[error("signer is not the server's authority")]
    NotServerAuthority = 30,
    /// The account does not exist (no lamports or no data).
    #[error("account does not exist")]
    AccountMissing = 31,

    // ---- config (40..=49) ----
    /// `fee_bps` is above 10,000.
    #[error("fee above 10000 basis points")]
    InvalidFeeBps = 40,
    /// Timeouts are zero, out of order (`min <= default <= max`), or the request's timeout is out of range.
    #[error("timeout out of the configured range")]
    InvalidTimeout = 41,
    /// The treasury holds less than it must keep, or the withdrawal exceeds what it holds.
    #[error("withdrawal exceeds the treasury's withdrawable balance")]
    TreasuryInsufficient = 42,

    // ---- servers (50..=69) ----
    /// More offers than [`crate::state::MAX_OFFERS`], or none.
    #[error("offer count out of range")]
    InvalidOfferCount = 50,
    /// The same model is offered twice.
    #[error("model offered twice")]
    DuplicateOffer = 51,
    /// The server is deactivated.
    #[error("server is inactive")]
    ServerInactive = 52,
    /// The server does not offer the request's model.
    #[error("server does not offer this model")]
    ModelNotOffered = 53,
    /// The server still holds locked requests.
    #[error("server still holds locked requests")]
    ServerBusy = 54,
    /// The endpoint is longer than [`crate::state::MAX_ENDPOINT_LEN`] or not printable ASCII.
    #[error("endpoint too long or not printable ASCII")]
    InvalidEndpoint = 55,
    /// The HPKE public key is all zeros or otherwise unusable.
    #[error("invalid HPKE public key")]
    InvalidPublicKey = 56,

    // ---- requests (70..=109) ----
    /// The request is not in the state this step needs.
    #[error("request is in the wrong state for this step")]
    WrongState = 70,
    /// The deadline has passed.
    #[error("the request's deadline has passed")]
    DeadlinePassed = 71,
    /// The deadline has not passed yet.
    #[error("the request's deadline has not passed yet")]
    DeadlineNotReached = 72,
    /// The server is not on the request's allow-list.
    #[error("server is not on the request's allow-list")]
    ServerNotAllowed = 73,
    /// The server has completed fewer requests than the request's filter asks.
    #[error("server has too few completed requests for this request's filter")]
    MinCompletedNotMet = 74,
    /// The server's success ratio is below the request's filter.
    #[error("server's success ratio is below this request's filter")]
    MinSuccessNotMet = 75,
    /// The request is locked by another server.
    #[error("request is locked by another server")]
    NotLockedByServer = 76,
    /// More tokens claimed than the request's `max_tokens`.
    #[error("tokens claimed exceed the request's max_tokens")]
    TokensExceedMax = 77,
    /// The stake is zero.
    #[error("stake must be above zero")]
    ZeroStake = 78,
    /// The allow-list is empty or longer than [`crate::state::MAX_ALLOWED_SERVERS`].
    #[error("allow-list must hold 1 to 8 servers")]
    InvalidAllowList = 79,
    /// A server appears twice on the allow-list.
    #[error("server listed twice on the allow-list")]
    DuplicateAllowedServer = 80,
    /// The prompt envelope is empty or above [`crate::state::MAX_PROMPT_LEN`].
    #[error("prompt envelope empty or too large")]
    InvalidPromptLength = 81,
    /// A prompt chunk does not start where the upload stands, or runs past the end.
    #[error("prompt chunk out of place")]
    PromptChunkOutOfPlace = 82,
    /// The response would exceed [`crate::state::MAX_RESPONSE_LEN`].
    #[error("response too large")]
    ResponseTooLarge = 83,
    /// A chunk was appended after the final one.
    #[error("response already finished")]
    ResponseFinished = 84,
    /// The request cannot complete before its response's final chunk.
    #[error("response not finished")]
    ResponseNotFinished = 85,
    /// The response account belongs to another request or server.
    #[error("response account does not belong to this request")]
    ResponseMismatch = 86,
    /// The response was already flagged.
    #[error("response already flagged")]
    AlreadyFlagged = 87,
    /// The flag window has closed.
    #[error("flag window has closed")]
    FlagWindowClosed = 88,
    /// One of the requests was already part of a comparison.
    #[error("request already compared")]
    AlreadyCompared = 89,
    /// A revealed salt and digest do not open a request's commitment.
    #[error("commitment does not match the revealed salt and digest")]
    CommitmentMismatch = 90,
    /// Both requests were served by the same server.
    #[error("both requests were served by the same server")]
    SameServer = 91,
    /// The two requests ask for different models.
    #[error("the two requests ask for different models")]
    ModelMismatch = 92,
    /// The two requests belong to different clients.
    #[error("the two requests belong to different clients")]
    ClientMismatch = 93,
    /// The retention period has not elapsed, so only the client may close.
    #[error("retention period not elapsed; only the client may close")]
    RetentionNotElapsed = 94,
    /// An empty response chunk.
    #[error("empty response chunk")]
    EmptyChunk = 95,
    /// A comparison's preference byte is neither 0 (first) nor 1 (second).
    #[error("preference must be 0 (first) or 1 (second)")]
    InvalidPreference = 96,
    /// The server account passed is not the one the step concerns.
    #[error("server account does not match the request")]
    ServerMismatch = 97,
    /// The client account passed is not the request's client.
    #[error("client account does not match the request")]
    ClientAccountMismatch = 98,
    /// A request filter is out of range (`min_success_bps` above 10,000).
    #[error("request filter out of range")]
    InvalidFilter = 99,

    // ---- arithmetic and funds (110..=119) ----
    /// An arithmetic step would overflow.
    #[error("arithmetic overflow")]
    ArithmeticOverflow = 110,
    /// An account holds too few lamports for the step.
    #[error("insufficient lamports")]
    InsufficientFunds = 111,

    // ---- envelope and stream (120..=139) ----
    /// Sealing failed (bad recipient key).
    #[error("sealing failed")]
    SealFailed = 120,
    /// Opening failed: wrong key, tampered bytes, or wrong context.
    #[error("opening failed: wrong key or tampered data")]
    OpenFailed = 121,
    /// The envelope bytes are malformed.
    #[error("malformed envelope")]
    MalformedEnvelope = 122,
    /// A stream chunk arrived after the final one.
    #[error("stream already finished")]
    StreamFinished = 123,
    /// The stream ended without its final chunk.
    #[error("stream truncated before its final chunk")]
    StreamTruncated = 124,
    /// The recipient slot asked for does not exist.
    #[error("no such recipient slot in the envelope")]
    NoSuchRecipient = 125,
    /// The random number generator failed.
    #[error("randomness unavailable")]
    RandomnessUnavailable = 126,
    /// A decrypted prompt payload is malformed (see [`crate::prompt`]).
    #[error("malformed prompt payload")]
    MalformedPrompt = 127,
}

impl Error {
    /// Every variant, in code order; the code-pinning test walks this list.
    pub const ALL: &'static [Error] = &[
        Error::Truncated,
        Error::TrailingBytes,
        Error::WrongAccountKind,
        Error::UnsupportedVersion,
        Error::InvalidTag,
        Error::InvalidUtf8,
        Error::LengthOutOfRange,
        Error::InvalidModelId,
        Error::UnknownInstruction,
        Error::NotEnoughAccounts,
        Error::MissingSigner,
        Error::NotWritable,
        Error::WrongOwner,
        Error::WrongAddress,
        Error::WrongSystemProgram,
        Error::DuplicateAccount,
        Error::AlreadyInitialized,
        Error::NotAdmin,
        Error::NotClient,
        Error::NotServerAuthority,
        Error::AccountMissing,
        Error::InvalidFeeBps,
        Error::InvalidTimeout,
        Error::TreasuryInsufficient,
        Error::InvalidOfferCount,
        Error::DuplicateOffer,
        Error::ServerInactive,
        Error::ModelNotOffered,
        Error::ServerBusy,
        Error::InvalidEndpoint,
        Error::InvalidPublicKey,
        Error::WrongState,
        Error::DeadlinePassed,
        Error::DeadlineNotReached,
        Error::ServerNotAllowed,
        Error::MinCompletedNotMet,
        Error::MinSuccessNotMet,
        Error::NotLockedByServer,
        Error::TokensExceedMax,
        Error::ZeroStake,
        Error::InvalidAllowList,
        Error::DuplicateAllowedServer,
        Error::InvalidPromptLength,
        Error::PromptChunkOutOfPlace,
        Error::ResponseTooLarge,
        Error::ResponseFinished,
        Error::ResponseNotFinished,
        Error::ResponseMismatch,
        Error::AlreadyFlagged,
        Error::FlagWindowClosed,
        Error::AlreadyCompared,
        Error::CommitmentMismatch,
        Error::SameServer,
        Error::ModelMismatch,
        Error::ClientMismatch,
        Error::RetentionNotElapsed,
        Error::EmptyChunk,
        Error::InvalidPreference,
        Error::ServerMismatch,
        Error::ClientAccountMismatch,
        Error::InvalidFilter,
        Error::ArithmeticOverflow,
        Error::InsufficientFunds,
        Error::SealFailed,
        Error::OpenFailed,
        Error::MalformedEnvelope,
        Error::StreamFinished,
        Error::StreamTruncated,
        Error::NoSuchRecipient,
        Error::RandomnessUnavailable,
        Error::MalformedPrompt,
    ];

    /// The stable numeric code (`ProgramError::Custom(code)` on-chain).
    #[inline(always)]
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The variant with this code, if any.
    pub fn from_code(code: u32) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| e.code() == code)
    }

    /// The variant's name, stable across releases (handy for JS and logs).
    pub fn name(self) -> &'static str {
        // Debug of a fieldless enum is its name; keep it allocation-free by matching.
        macro_rules! names {
            ($($v:ident),* $(,)?) => { match self { $(Error::$v => stringify!($v),)* } };
        }
        names!(
            Truncated,
            TrailingBytes,
            WrongAccountKind,
            UnsupportedVersion,
            InvalidTag,
            InvalidUtf8,
            LengthOutOfRange,
            InvalidModelId,
            UnknownInstruction,
            NotEnoughAccounts,
            MissingSigner,
            NotWritable,
            WrongOwner,
            WrongAddress,
            WrongSystemProgram,
            DuplicateAccount,
            AlreadyInitialized,
            NotAdmin,
            NotClient,
            NotServerAuthority,
            AccountMissing,
            InvalidFeeBps,
            InvalidTimeout,
            TreasuryInsufficient,
            InvalidOfferCount,
            DuplicateOffer,
            ServerInactive,
            ModelNotOffered,
            ServerBusy,
            InvalidEndpoint,
            InvalidPublicKey,
            WrongState,
            DeadlinePassed,
            DeadlineNotReached,
            ServerNotAllowed,
            MinCompletedNotMet,
            MinSuccessNotMet,
            NotLockedByServer,
            TokensExceedMax,
            ZeroStake,
            InvalidAllowList,
            DuplicateAllowedServer,
            InvalidPromptLength,
            PromptChunkOutOfPlace,
            ResponseTooLarge,
            ResponseFinished,
            ResponseNotFinished,
            ResponseMismatch,
            AlreadyFlagged,
            FlagWindowClosed,
            AlreadyCompared,
            CommitmentMismatch,
            SameServer,
            ModelMismatch,
            ClientMismatch,
            RetentionNotElapsed,
            EmptyChunk,
            InvalidPreference,
            ServerMismatch,
            ClientAccountMismatch,
            InvalidFilter,
            ArithmeticOverflow,
            InsufficientFunds,
            SealFailed,
            OpenFailed,
            MalformedEnvelope,
            StreamFinished,
            StreamTruncated,
            NoSuchRecipient,
            RandomnessUnavailable,
            MalformedPrompt,
        )
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
