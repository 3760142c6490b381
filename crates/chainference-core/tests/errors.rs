//! Pins every error code: codes are append-only, never renumbered or reused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::panic
)]

use chainference_core::Error;

/// (code, name) of every variant, as released. Append new rows; never edit one.
const PINNED: &[(u32, &str)] = &[
    (1, "Truncated"),
    (2, "TrailingBytes"),
    (3, "WrongAccountKind"),
    (4, "UnsupportedVersion"),
    (5, "InvalidTag"),
    (6, "InvalidUtf8"),
    (7, "LengthOutOfRange"),
    (8, "InvalidModelId"),
    (9, "UnknownInstruction"),
    (10, "Misaligned"),
    (20, "NotEnoughAccounts"),
    (21, "MissingSigner"),
    (22, "NotWritable"),
    (23, "WrongOwner"),
    (24, "WrongAddress"),
    (25, "WrongSystemProgram"),
    (26, "DuplicateAccount"),
    (27, "AlreadyInitialized"),
    (28, "NotAdmin"),
    (29, "NotClient"),
    (30, "NotServerAuthority"),
    (31, "AccountMissing"),
    (32, "NonCanonicalBump"),
    (40, "InvalidFeeBps"),
    (41, "InvalidTimeout"),
    (42, "TreasuryInsufficient"),
    (50, "InvalidOfferCount"),
    (51, "DuplicateOffer"),
    (52, "ServerInactive"),
    (53, "ModelNotOffered"),
    (54, "ServerBusy"),
    (55, "InvalidEndpoint"),
    (56, "InvalidPublicKey"),
    (70, "WrongState"),
    (71, "DeadlinePassed"),
    (72, "DeadlineNotReached"),
    (73, "ServerNotAllowed"),
    (74, "MinCompletedNotMet"),
    (75, "MinSuccessNotMet"),
    (76, "NotLockedByServer"),
    (77, "TokensExceedMax"),
    (78, "ZeroStake"),
    (79, "InvalidAllowList"),
    (80, "DuplicateAllowedServer"),
    (81, "InvalidPromptLength"),
    (82, "PromptChunkOutOfPlace"),
    (83, "ResponseTooLarge"),
    (84, "ResponseFinished"),
    (85, "ResponseNotFinished"),
    (86, "ResponseMismatch"),
    (87, "AlreadyFlagged"),
    (88, "FlagWindowClosed"),
    (89, "AlreadyCompared"),
    (90, "CommitmentMismatch"),
    (91, "SameServer"),
    (92, "ModelMismatch"),
    (93, "ClientMismatch"),
    (94, "RetentionNotElapsed"),
    (95, "EmptyChunk"),
    (96, "InvalidPreference"),
    (97, "ServerMismatch"),
    (98, "ClientAccountMismatch"),
    (99, "InvalidFilter"),
    (100, "SelfDealing"),
    (101, "PriceAboveCap"),
    (102, "TokensExceedBytes"),
    (103, "LockWindowOpen"),
    (104, "BelowCountedFee"),
    (105, "FlagWindowOpen"),
    (106, "NothingToClaim"),
    (107, "NoDeclineReason"),
    (108, "AlreadyDeclined"),
    (110, "ArithmeticOverflow"),
    (111, "InsufficientFunds"),
    (120, "SealFailed"),
    (121, "OpenFailed"),
    (122, "MalformedEnvelope"),
    (123, "StreamFinished"),
    (124, "StreamTruncated"),
    (125, "NoSuchRecipient"),
    (126, "RandomnessUnavailable"),
    (127, "MalformedPrompt"),
];

#[test]
fn every_code_is_pinned() {
    assert_eq!(Error::ALL.len(), PINNED.len(), "a variant was added or removed: append it to PINNED");
    for (err, (code, name)) in Error::ALL.iter().zip(PINNED) {
        assert_eq!(err.code(), *code, "{name} was renumbered");
        assert_eq!(err.name(), *name);
        assert_eq!(Error::from_code(*code), Some(*err));
    }
}

#[test]
fn codes_are_unique_and_unknown_codes_map_to_none() {
    let mut codes: Vec<u32> = Error::ALL.iter().map(|e| e.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), Error::ALL.len());
    assert_eq!(Error::from_code(0), None);
    assert_eq!(Error::from_code(u32::MAX), None);
}

#[test]
fn messages_are_human_readable() {
    for e in Error::ALL {
        let msg = e.to_string();
        assert!(msg.len() > 8 && !msg.contains('{'), "{msg}");
    }
}
