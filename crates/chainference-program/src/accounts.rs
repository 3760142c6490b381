//! Account checks and lamport moves shared by the processors. Every check fails with a
//! numbered [`Error`] as `ProgramError::Custom(code)`.

use chainference_core::pda::SYSTEM_PROGRAM_ID;
use chainference_core::state::{Config, Treasury};
use chainference_core::{Error, same_address};
use pinocchio::cpi::{Seed, Signer};
use pinocchio::error::ProgramError;
use pinocchio::sysvars::Sysvar;
use pinocchio::sysvars::clock::Clock;
use pinocchio::sysvars::rent::Rent;
use pinocchio::{AccountView, Address, Resize};
use pinocchio_system::instructions::{Allocate, Assign, CreateAccount, Transfer};

/// Result of a processor step.
pub type R<T = ()> = Result<T, ProgramError>;

/// The system program's address.
pub const SYSTEM: Address = Address::new_from_array(SYSTEM_PROGRAM_ID);

/// A core error as a program error.
#[inline(always)]
pub fn fail(e: Error) -> ProgramError {
    ProgramError::Custom(e.code())
}

/// Maps core's results into program results.
pub trait OrFail<T> {
    /// `Err(e)` becomes `ProgramError::Custom(e.code())`.
    fn or_fail(self) -> R<T>;
}

impl<T> OrFail<T> for Result<T, Error> {
    #[inline(always)]
    fn or_fail(self) -> R<T> {
        self.map_err(fail)
    }
}

/// The account must have signed.
#[inline(always)]
pub fn signer(a: &AccountView) -> R {
    if a.is_signer() { Ok(()) } else { Err(fail(Error::MissingSigner)) }
}

/// The account must be writable.
#[inline(always)]
pub fn writable(a: &AccountView) -> R {
    if a.is_writable() { Ok(()) } else { Err(fail(Error::NotWritable)) }
}

/// The account must be owned by this program (and so exist).
#[inline(always)]
pub fn owned(a: &AccountView, program_id: &Address) -> R {
    if same_address(a.owner().as_array(), program_id.as_array()) {
        Ok(())
    } else if a.lamports() == 0 {
        Err(fail(Error::AccountMissing))
    } else {
        Err(fail(Error::WrongOwner))
    }
}

/// The account must be the system program.
#[inline(always)]
pub fn system_program(a: &AccountView) -> R {
    if same_address(a.address().as_array(), &SYSTEM_PROGRAM_ID) { Ok(()) } else { Err(fail(Error::WrongSystemProgram)) }
}

/// Two accounts that play different roles must differ. The runtime serializes an account
/// passed twice once and points both views at it, so comparing the views' accounts is the
/// same test as comparing addresses, without a 32-byte compare.
#[inline(always)]
pub fn distinct(a: &AccountView, b: &AccountView) -> R {
    if core::ptr::eq(a.account_ptr(), b.account_ptr()) { Err(fail(Error::DuplicateAccount)) } else { Ok(()) }
}

/// The account must be at `expected`.
#[inline(always)]
pub fn at(a: &AccountView, expected: &[u8; 32], e: Error) -> R {
    if same_address(a.address().as_array(), expected) { Ok(()) } else { Err(fail(e)) }
}

/// Current unix time from the Clock sysvar.
#[inline(always)]
pub fn now() -> R<i64> {
    Ok(Clock::get()?.unix_timestamp)
}

/// Rent-exempt minimum for `len` bytes of data.
#[inline(always)]
pub fn rent_for(len: usize) -> R<u64> {
    Rent::get()?.try_minimum_balance(len)
}

/// Moves lamports between accounts; `from` must be owned by this program. Reads each balance
/// just before writing it, so it is correct even when both are the same account.
#[inline(always)]
pub fn move_lamports(from: &mut AccountView, to: &mut AccountView, amount: u64) -> R {
    if amount == 0 {
        return Ok(());
    }
    let left = from.lamports().checked_sub(amount).ok_or(fail(Error::InsufficientFunds))?;
    from.set_lamports(left);
    let total = to.lamports().checked_add(amount).ok_or(fail(Error::ArithmeticOverflow))?;
    to.set_lamports(total);
    Ok(())
}

/// Closes a program account: all its lamports to `dest`, data emptied, owner back to the
/// system program (so nothing later in the transaction can use it as ours).
#[inline(always)]
pub fn close_into(account: &mut AccountView, dest: &mut AccountView) -> R {
    let all = account.lamports();
    move_lamports(account, dest, all)?;
    account.resize(0)?;
    account.close()
}

/// What a new PDA gets: its owner, size, lamports, and the seeds (bump included) that sign.
pub struct NewAccount<'a, 'b> {
    /// The owning program.
    pub owner: &'a Address,
    /// Data size.
    pub space: usize,
    /// Lamports to hold (rent, plus any escrow).
    pub lamports: u64,
    /// Signer seeds, bump last.
    pub seeds: &'a [Seed<'b>],
}

/// Creates a PDA owned by this program, the runtime checking that the seeds derive its
/// address. An address someone pre-funded is taken over (transfer the rest, allocate, assign)
/// rather than left unusable.
pub fn create_pda(payer: &AccountView, account: &mut AccountView, new: &NewAccount<'_, '_>) -> R {
    let NewAccount { owner, space, lamports, seeds } = *new;
    if account.owned_by(owner) {
        return Err(fail(Error::AlreadyInitialized));
    }
    let signer = [Signer::from(seeds)];
    let current = account.lamports();
    if current == 0 {
        return CreateAccount { from: payer, to: account, lamports, space: space as u64, owner }.invoke_signed(&signer);
    }
    if !account.owned_by(&SYSTEM) || !account.is_data_empty() {
        return Err(fail(Error::AlreadyInitialized));
    }
    let missing = lamports.saturating_sub(current);
    if missing > 0 {
        Transfer { from: payer, to: account, lamports: missing }.invoke()?;
    }
    Allocate { account, space: space as u64 }.invoke_signed(&signer)?;
    Assign { account, owner }.invoke_signed(&signer)
}

/// Tops `account` up to the rent-exempt minimum of `new_len` bytes from `payer` (a system
/// account) and resizes it; a shrink refunds the excess rent to `payer`. When the payer already
/// sent the difference (a system transfer earlier in the transaction, 150 CU at top level), no
/// CPI is made (about 1,200 CU saved).
pub fn resize_paid(account: &mut AccountView, payer: &mut AccountView, new_len: usize) -> R {
    let needed = rent_for(new_len)?;
    let current = account.lamports();
    if needed > current {
        Transfer { from: payer, to: account, lamports: needed.saturating_sub(current) }.invoke()?;
    }
    account.resize(new_len)?;
    if current > needed {
        move_lamports(account, payer, current.saturating_sub(needed))?;
    }
    Ok(())
}

/// Loads the config: owned by this program and of kind Config (only one can exist: it is created
/// once, at the canonical PDA).
pub fn load_config(config: &AccountView, program_id: &Address) -> R<Config> {
    owned(config, program_id)?;
    Config::decode(&config.try_borrow()?).or_fail()
}

/// Loads only the config's parameters (same checks as [`load_config`]).
pub fn load_params(config: &AccountView, program_id: &Address) -> R<chainference_core::state::ConfigParams> {
    owned(config, program_id)?;
    Config::params_of(&config.try_borrow()?).or_fail()
}

/// Checks the treasury: owned by this program, of kind Treasury, at the config's address.
pub fn check_treasury(treasury: &AccountView, program_id: &Address, config: &Config) -> R {
    owned(treasury, program_id)?;
    Treasury::decode(&treasury.try_borrow()?).or_fail()?;
    at(treasury, &config.treasury, Error::WrongAddress)
}

/// SHA-256 over concatenated parts: the `sol_sha256` syscall on-chain.
#[cfg(target_arch = "bpf")]
#[allow(unsafe_code, clippy::cast_possible_truncation)]
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SAFETY: `parts` is a slice of `&[u8]`, laid out as (pointer, length) pairs of u64 on SBF,
    // which is exactly the array `sol_sha256` reads; `out` is the 32 writable bytes it fills.
    unsafe {
        pinocchio::syscalls::sol_sha256(parts.as_ptr().cast::<u8>(), parts.len() as u64, out.as_mut_ptr());
    }
    out
}

/// SHA-256 over concatenated parts (host builds, which exist for lints and docs).
#[cfg(not(target_arch = "bpf"))]
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The canonical PDA and bump for `seeds` (the `sol_try_find_program_address` syscall on-chain).
pub fn find_pda(seeds: &[&[u8]], program_id: &Address) -> R<(Address, u8)> {
    Address::try_find_program_address(seeds, program_id).ok_or(fail(Error::WrongAddress))
}
