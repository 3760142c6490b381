//! # chainference-program
//!
//! The Chainference on-chain program: `no_std` on pinocchio, built to a real SBF `.so` with
//! `cargo xtask build-sbf`, and thin over [`chainference_core`]. Each instruction of
//! [`chainference_core::instruction::Instruction`] has one processor that destructures its
//! accounts, loads them, checks signer, writability, owner, kind and address, then hands the
//! state change to core's lifecycle and applies the [`chainference_core::lifecycle::Effects`]
//! it returns (lamports, counters, closes). Errors are core's numbered codes as
//! `ProgramError::Custom(code)`; the program never panics on input.
//!
//! Host builds of this crate exist for lints and docs; the program runs only as the SBF `.so`,
//! which the tests load into LiteSVM.
//!
//! ```
//! // The program's entry takes the raw instruction data core encodes:
//! use chainference_core::instruction::Instruction;
//! let data = Instruction::CancelRequest.encode().unwrap();
//! assert_eq!(data, [9]);
//! ```

#![no_std]

// Host builds (lints, docs) link std for its panic handler and allocator; SBF builds do not.
#[cfg(not(target_arch = "bpf"))]
extern crate std;

pub mod accounts;
pub mod processor;

pub use processor::process;

#[cfg(target_arch = "bpf")]
mod entry {
    use pinocchio::{AccountView, Address, ProgramResult};

    // At most 8 accounts (CompleteRequest takes 7); a small cap keeps the entrypoint's stack use low.
    pinocchio::program_entrypoint!(process_instruction, 8);
    pinocchio::nostd_panic_handler!();
    pinocchio::no_allocator!();

    // Inlined into the entrypoint: its three slices and result need more than SBF's 5 argument registers.
    #[inline(always)]
    fn process_instruction(program_id: &Address, accounts: &mut [AccountView], data: &[u8]) -> ProgramResult {
        crate::process(program_id, accounts, data)
    }
}
