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

/// Memory builtins as the runtime's `sol_mem*` syscalls (a few CU each) instead of
/// compiler_builtins' byte loops: slice comparisons and copies are hot paths here.
#[cfg(target_arch = "bpf")]
#[allow(unsafe_code)]
mod mem {
    use pinocchio::syscalls::{sol_memcmp_, sol_memcpy_, sol_memmove_, sol_memset_};

    /// # Safety
    /// `dst` and `src` are valid for `n` bytes and do not overlap (the C contract).
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's contract.
        unsafe { sol_memcpy_(dst, src, n as u64) };
        dst
    }

    /// # Safety
    /// `dst` and `src` are valid for `n` bytes (they may overlap).
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's contract.
        unsafe { sol_memmove_(dst, src, n as u64) };
        dst
    }

    /// # Safety
    /// `dst` is valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's contract; C passes the byte as an int.
        unsafe { sol_memset_(dst, c as u8, n as u64) };
        dst
    }

    /// # Safety
    /// `a` and `b` are valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut result = 0i32;
        // SAFETY: forwarded under the caller's contract; `result` is a valid i32 out-pointer.
        unsafe { sol_memcmp_(a, b, n as u64, &mut result) };
        result
    }

    /// # Safety
    /// `a` and `b` are valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }
}
