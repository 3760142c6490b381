//! One processor per instruction, each in the same order: destructure the accounts, load,
//! validate (signer, writable, owner, kind, address), run core's rule, move lamports, write.
//! No rule lives here: states, deadlines, filters, prices and counters all come from
//! `chainference_core::lifecycle` and `chainference_core::pricing`.

use chainference_core::instruction::{Instruction, OpenRequestArgs, ServerArgs};
use chainference_core::lifecycle::{
    CompareReveal, CompareSides, Effects, Event, FlagTerms, NewRequest, ServerView, check_allow_list, compare,
};
use chainference_core::model::check_canonical_model;
use chainference_core::pda::{self, BPF_LOADER_UPGRADEABLE_ID};
use chainference_core::state::{
    Config, ConfigParams, REQUEST_BUMP, RequestAccount, RequestHeader, RequestTail, ResponseHeader, ServerAccount,
    ServerHeader, ServerState, Treasury, read_array,
};
use chainference_core::wire::Writer;
use chainference_core::{Error, same_address};
use pinocchio::cpi::Seed;
use pinocchio::error::ProgramError;
use pinocchio::{AccountView, Address, ProgramResult};

use crate::accounts::*;

/// What every processor gets: the program id and the instruction's accounts. Passed by
/// reference because SBF calls take at most 5 argument registers (a slice takes two).
pub struct Ctx<'a> {
    /// This program's id.
    pub program_id: &'a Address,
    /// The instruction's accounts.
    pub accounts: &'a mut [AccountView],
}

/// Decodes the instruction and runs its processor.
#[inline(always)]
pub fn process(program_id: &Address, accounts: &mut [AccountView], data: &[u8]) -> ProgramResult {
    let ctx = &mut Ctx { program_id, accounts };
    match Instruction::decode(data).or_fail()? {
        Instruction::InitConfig { params } => init_config(ctx, params),
        Instruction::UpdateConfig { params, new_admin } => update_config(ctx, params, new_admin),
        Instruction::WithdrawFees { amount } => withdraw_fees(ctx, amount),
        Instruction::RegisterServer(args) => register_server(ctx, &args),
        Instruction::UpdateServer(args) => update_server(ctx, &args),
        Instruction::SetServerActive { active } => set_server_active(ctx, active),
        Instruction::CloseServer => close_server(ctx),
        Instruction::OpenRequest(args) => open_request(ctx, &args),
        Instruction::WritePrompt { offset, chunk } => write_prompt(ctx, offset, chunk),
        Instruction::CancelRequest => cancel_request(ctx),
        Instruction::LockRequest => lock_request(ctx),
        Instruction::AppendResponse { is_final, chunk } => append_response(ctx, is_final, chunk),
        Instruction::CompleteRequest { tokens } => complete_request(ctx, tokens),
        Instruction::ReleaseRequest => release_request(ctx),
        Instruction::ReclaimRequest => reclaim_request(ctx),
        Instruction::FlagResponse { refund } => flag_response(ctx, refund),
        Instruction::CompareResponses { salt_a, salt_b, digest, preferred } => {
            compare_responses(ctx, &CompareReveal { salt_a, salt_b, digest }, preferred)
        }
        Instruction::CloseRequest => close_request(ctx),
        Instruction::ClaimPayment => claim_payment(ctx),
        Instruction::DeclineRequest { reasons } => decline_request(ctx, reasons),
        // `Instruction` is non-exhaustive for SDK users; every variant this build knows is above.
        #[allow(unreachable_patterns)]
        _ => Err(fail(Error::UnknownInstruction)),
    }
}

fn not_enough() -> ProgramError {
    fail(Error::NotEnoughAccounts)
}

// ---------------------------------------------------------------------------------------------
// loading helpers (no rules: layout access only)
// ---------------------------------------------------------------------------------------------

fn load_server(server: &AccountView, program_id: &Address, authority: &AccountView) -> R<ServerHeader> {
    owned(server, program_id)?;
    let header = ServerHeader::decode(&server.try_borrow()?).or_fail()?;
    if authority.address().as_array() != &header.authority {
        return Err(fail(Error::NotServerAuthority));
    }
    Ok(header)
}

/// A server account named by the authority a request records (`locked_by`).
fn load_server_of(server: &AccountView, program_id: &Address, authority: &[u8; 32]) -> R<ServerHeader> {
    owned(server, program_id)?;
    let header = ServerHeader::decode(&server.try_borrow()?).or_fail()?;
    if &header.authority != authority {
        return Err(fail(Error::ServerMismatch));
    }
    Ok(header)
}

fn load_request(request: &AccountView, program_id: &Address) -> R<RequestHeader> {
    owned(request, program_id)?;
    RequestHeader::decode(&request.try_borrow()?).or_fail()
}

fn store_request(request: &mut AccountView, header: &RequestHeader) -> R {
    header.encode_into(&mut request.try_borrow_mut()?).or_fail()
}

fn store_server(server: &mut AccountView, header: &ServerHeader) -> R {
    header.encode_into(&mut server.try_borrow_mut()?).or_fail()
}

/// The response account of a request, if it exists: its header, checked against the request.
fn load_response(response: &AccountView, program_id: &Address, request: &AccountView) -> R<Option<ResponseHeader>> {
    if !response.owned_by(program_id) {
        return Ok(None);
    }
    let header = ResponseHeader::decode(&response.try_borrow()?).or_fail()?;
    if &header.request != request.address().as_array() {
        return Err(fail(Error::ResponseMismatch));
    }
    Ok(Some(header))
}

/// A server account's header in place, named by `authority` (`mismatch` otherwise): the
/// program-owned check first, then kind, version and authority.
fn server_in<'a>(data: &'a mut [u8], authority: &[u8; 32], mismatch: Error) -> R<&'a mut ServerHeader> {
    let header = ServerHeader::view_mut(data).or_fail()?;
    if !same_address(&header.authority, authority) {
        return Err(fail(mismatch));
    }
    Ok(header)
}

/// Applies a step's server-counter changes in place.
#[inline(always)]
fn count(server: &mut ServerHeader, fx: &Effects) -> R {
    fx.server.apply(&mut server.stats, &mut server.locked_count).or_fail()
}

fn request_client_is(client: &AccountView, header: &RequestHeader) -> R {
    at(client, &header.client, Error::ClientAccountMismatch)
}

// ---------------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------------

/// ProgramData (bincode `UpgradeableLoaderState::ProgramData`): tag u32 = 3, slot u64,
/// `Option<Pubkey>` upgrade authority at byte 12.
fn upgrade_authority_is(program_data: &AccountView, admin: &AccountView) -> R {
    let data = program_data.try_borrow()?;
    let tag = data.get(..4).ok_or(fail(Error::NotAdmin))?;
    let authority = data.get(12..45).ok_or(fail(Error::NotAdmin))?;
    if tag != 3u32.to_le_bytes()
        || authority.first() != Some(&1)
        || authority.get(1..) != Some(admin.address().as_ref())
    {
        return Err(fail(Error::NotAdmin));
    }
    Ok(())
}

fn init_config(ctx: &mut Ctx<'_>, params: ConfigParams) -> ProgramResult {
    let program_id = ctx.program_id;
    let [admin, config, treasury, program_data, system, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(admin)?;
    writable(admin)?;
    writable(config)?;
    writable(treasury)?;
    system_program(system)?;
    params.validate().or_fail()?;

    let loader = Address::new_from_array(BPF_LOADER_UPGRADEABLE_ID);
    let (program_data_address, _) = find_pda(&[program_id.as_ref()], &loader)?;
    if program_data.address() != &program_data_address {
        return Err(fail(Error::WrongAddress));
    }
    if !program_data.owned_by(&loader) {
        return Err(fail(Error::WrongOwner));
    }
    upgrade_authority_is(program_data, admin)?;

    let (config_address, bump) = find_pda(&pda::config_seeds(), program_id)?;
    let (treasury_address, treasury_bump) = find_pda(&pda::treasury_seeds(), program_id)?;
    if config.address() != &config_address || treasury.address() != &treasury_address {
        return Err(fail(Error::WrongAddress));
    }
    let bump_seed = [bump];
    let seeds = [Seed::from(pda::CONFIG_SEED), Seed::from(&bump_seed)];
    create_pda(
        admin,
        config,
        &NewAccount { owner: program_id, space: Config::LEN, lamports: rent_for(Config::LEN)?, seeds: &seeds },
    )?;
    let treasury_bump_seed = [treasury_bump];
    let seeds = [Seed::from(pda::TREASURY_SEED), Seed::from(&treasury_bump_seed)];
    create_pda(
        admin,
        treasury,
        &NewAccount { owner: program_id, space: Treasury::LEN, lamports: rent_for(Treasury::LEN)?, seeds: &seeds },
    )?;

    let cfg = Config {
        bump,
        treasury_bump,
        params,
        admin: *admin.address().as_array(),
        treasury: *treasury_address.as_array(),
    };
    cfg.encode_into(&mut config.try_borrow_mut()?).or_fail()?;
    Treasury { bump: treasury_bump }.encode_into(&mut treasury.try_borrow_mut()?).or_fail()
}

fn update_config(ctx: &mut Ctx<'_>, params: ConfigParams, new_admin: &[u8; 32]) -> ProgramResult {
    let program_id = ctx.program_id;
    let [admin, config, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(admin)?;
    writable(config)?;
    let mut cfg = load_config(config, program_id)?;
    at(admin, &cfg.admin, Error::NotAdmin)?;
    params.validate().or_fail()?;
    cfg.params = params;
    cfg.admin = *new_admin;
    cfg.encode_into(&mut config.try_borrow_mut()?).or_fail()
}

fn withdraw_fees(ctx: &mut Ctx<'_>, amount: u64) -> ProgramResult {
    let program_id = ctx.program_id;
    let [admin, config, treasury, destination, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(admin)?;
    writable(treasury)?;
    writable(destination)?;
    distinct(treasury, destination)?;
    let cfg = load_config(config, program_id)?;
    at(admin, &cfg.admin, Error::NotAdmin)?;
    check_treasury(treasury, program_id, &cfg)?;
    let withdrawable = treasury.lamports().saturating_sub(rent_for(Treasury::LEN)?);
    if amount > withdrawable {
        return Err(fail(Error::TreasuryInsufficient));
    }
    move_lamports(treasury, destination, amount)
}

// ---------------------------------------------------------------------------------------------
// servers
// ---------------------------------------------------------------------------------------------

fn write_server(server: &mut AccountView, header: &ServerHeader, args: &ServerArgs<'_>) -> R {
    ServerAccount::encode_into(header, args.endpoint, &args.offers, &mut server.try_borrow_mut()?).or_fail()
}

fn server_size(args: &ServerArgs<'_>) -> usize {
    ServerAccount::size(args.endpoint.len(), args.offers.as_bytes().len())
}

/// The checks RegisterServer and UpdateServer share: the authority signs and pays, the server
/// account and the system program are in place, and the published key is usable.
fn check_server_write(authority: &AccountView, server: &AccountView, system: &AccountView, args: &ServerArgs<'_>) -> R {
    signer(authority)?;
    writable(authority)?;
    writable(server)?;
    system_program(system)?;
    if args.hpke_key == &[0; 32] { Err(fail(Error::InvalidPublicKey)) } else { Ok(()) }
}

fn register_server(ctx: &mut Ctx<'_>, args: &ServerArgs<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, server, system, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    check_server_write(authority, server, system, args)?;
    let space = server_size(args);
    if server.owned_by(program_id) {
        // A retired server of this authority comes back with its history: reputation is kept
        // under the operator's wallet, so closing and registering again cannot wash it.
        let mut header = load_server(server, program_id, authority)?;
        if !header.retired() {
            return Err(fail(Error::AlreadyInitialized));
        }
        header.state = ServerState::Active;
        header.hpke_key = *args.hpke_key;
        resize_paid(server, authority, space)?;
        return write_server(server, &header, args);
    }
    let (address, bump) = find_pda(&pda::server_seeds(authority.address().as_array()), program_id)?;
    if server.address() != &address {
        return Err(fail(Error::WrongAddress));
    }
    let bump_seed = [bump];
    let seeds = [Seed::from(pda::SERVER_SEED), Seed::from(authority.address().as_ref()), Seed::from(&bump_seed)];
    create_pda(authority, server, &NewAccount { owner: program_id, space, lamports: rent_for(space)?, seeds: &seeds })?;
    let header = ServerHeader::new(bump, now()?, *authority.address().as_array(), *args.hpke_key);
    write_server(server, &header, args)
}

fn update_server(ctx: &mut Ctx<'_>, args: &ServerArgs<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, server, system, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    check_server_write(authority, server, system, args)?;
    let mut header = load_server(server, program_id, authority)?;
    if header.retired() {
        // A retired server comes back through RegisterServer, which says so.
        return Err(fail(Error::ServerInactive));
    }
    header.hpke_key = *args.hpke_key;
    resize_paid(server, authority, server_size(args))?;
    write_server(server, &header, args)
}

fn set_server_active(ctx: &mut Ctx<'_>, active: bool) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, server, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(authority)?;
    writable(server)?;
    let mut header = load_server(server, program_id, authority)?;
    if header.retired() {
        return Err(fail(Error::ServerInactive));
    }
    header.state = if active { ServerState::Active } else { ServerState::Inactive };
    store_server(server, &header)
}

fn close_server(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, server, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(authority)?;
    writable(authority)?;
    writable(server)?;
    let mut header = load_server(server, program_id, authority)?;
    if header.locked_count != 0 {
        return Err(fail(Error::ServerBusy));
    }
    if header.retired() {
        return Err(fail(Error::ServerInactive));
    }
    // Retire: the offers and endpoint go (their rent back), the header and its reputation stay.
    header.state = ServerState::Retired;
    resize_paid(server, authority, ServerHeader::LEN)?;
    store_server(server, &header)
}

// ---------------------------------------------------------------------------------------------
// requests
// ---------------------------------------------------------------------------------------------

fn open_request(ctx: &mut Ctx<'_>, args: &OpenRequestArgs<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [client, request, config, system, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(client)?;
    writable(client)?;
    writable(request)?;
    system_program(system)?;
    let params = load_params(config, program_id)?;
    check_allow_list(args.allowed).or_fail()?;
    check_canonical_model(args.model).or_fail()?;
    if same_address(args.response_key, &[0; 32]) {
        return Err(fail(Error::InvalidPublicKey));
    }
    let time = now()?;
    let client_key = client.address().as_array();
    let mut header = NewRequest {
        client: *client_key,
        nonce: args.nonce,
        bump: args.bump,
        stake: args.stake,
        max_price_per_mtok: args.max_price_per_mtok,
        max_tokens: args.max_tokens,
        timeout: args.timeout,
        min_completed: args.min_completed,
        min_success_bps: args.min_success_bps,
        // check_allow_list bounds the length to 1..=8.
        allowed_count: u8::try_from(args.allowed.len()).map_err(|_| fail(Error::InvalidAllowList))?,
        prompt_len: args.prompt_len,
    }
    .create(&params, time)
    .or_fail()?;
    let chunk_len = u32::try_from(args.prompt_chunk.len()).map_err(|_| fail(Error::PromptChunkOutOfPlace))?;
    if chunk_len > 0 {
        header.apply(Event::PromptWritten { signer: client_key, offset: 0, len: chunk_len }, time).or_fail()?;
    }

    let space = RequestHeader::account_size(args.model.len(), args.prompt_len as usize);
    let lamports = rent_for(space)?.checked_add(args.stake).ok_or(fail(Error::ArithmeticOverflow))?;
    if client.lamports() < lamports {
        return Err(fail(Error::InsufficientFunds));
    }
    let nonce_le = args.nonce.to_le_bytes();
    let bump_seed = [args.bump];
    let seeds = [
        Seed::from(pda::REQUEST_SEED),
        Seed::from(client.address().as_ref()),
        Seed::from(&nonce_le),
        Seed::from(&bump_seed),
    ];
    create_pda(client, request, &NewAccount { owner: program_id, space, lamports, seeds: &seeds })?;

    let mut data = request.try_borrow_mut()?;
    header.encode_into(&mut data).or_fail()?;
    let fixed = data.get_mut(RequestHeader::RESPONSE_KEY_OFFSET..).ok_or(fail(Error::Truncated))?;
    let mut w = Writer::new(fixed);
    w.put(args.response_key).or_fail()?;
    w.put(args.commitment).or_fail()?;
    for server in args.allowed {
        w.put(server).or_fail()?;
    }
    let tail = data.get_mut(RequestHeader::TAIL_OFFSET..).ok_or(fail(Error::Truncated))?;
    let mut w = Writer::new(tail);
    w.bytes(args.model.as_bytes()).or_fail()?;
    w.put(args.prompt_chunk).or_fail()
}

fn write_prompt(ctx: &mut Ctx<'_>, offset: u32, chunk: &[u8]) -> ProgramResult {
    let program_id = ctx.program_id;
    let [client, request, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(client)?;
    writable(request)?;
    owned(request, program_id)?;
    let len = u32::try_from(chunk.len()).map_err(|_| fail(Error::PromptChunkOutOfPlace))?;
    let mut data = request.try_borrow_mut()?;
    let (header, tail) = RequestHeader::split_mut(&mut data).or_fail()?;
    header.apply(Event::PromptWritten { signer: client.address().as_array(), offset, len }, now()?).or_fail()?;
    let start = RequestTail::new(tail).prompt_offset().or_fail()?.checked_add(offset as usize);
    let start = start.ok_or(fail(Error::ArithmeticOverflow))?;
    let end = start.checked_add(chunk.len()).ok_or(fail(Error::ArithmeticOverflow))?;
    tail.get_mut(start..end).ok_or(fail(Error::PromptChunkOutOfPlace))?.copy_from_slice(chunk);
    Ok(())
}

fn cancel_request(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [client, request, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(client)?;
    writable(client)?;
    writable(request)?;
    owned(request, program_id)?;
    let fx = {
        let mut data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut data).or_fail()?;
        header.apply(Event::Cancel { signer: client.address().as_array() }, now()?).or_fail()?
    };
    move_lamports(request, client, fx.to_client)
}

fn decline_request(ctx: &mut Ctx<'_>, reasons: chainference_core::state::DeclineReasons) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, request, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(authority)?;
    writable(request)?;
    owned(request, program_id)?;
    let mut data = request.try_borrow_mut()?;
    let (header, tail) = RequestHeader::split_mut(&mut data).or_fail()?;
    let allowed = RequestTail::new(tail).allowed(header.allowed_count).or_fail()?;
    // Nothing moves: the rule only marks the declining server's slot.
    header.apply(Event::Decline { server: authority.address().as_array(), allowed, reasons }, now()?).or_fail()?;
    Ok(())
}

fn lock_request(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, server, request, config, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(authority)?;
    writable(server)?;
    writable(request)?;
    let fee_bps = load_params(config, program_id)?.fee_bps;
    owned(server, program_id)?;
    owned(request, program_id)?;
    distinct(server, request)?;
    let mut server_data = server.try_borrow_mut()?;
    // The price first, from the offers in the server's tail; then its header in place.
    let mut request_data = request.try_borrow_mut()?;
    let (header, tail) = RequestHeader::split_mut(&mut request_data).or_fail()?;
    let tail = RequestTail::new(tail);
    let price_for_model = ServerAccount::price_of_model(&server_data, tail.model_bytes().or_fail()?).or_fail()?;
    let server_header = server_in(&mut server_data, authority.address().as_array(), Error::NotServerAuthority)?;
    let allowed = tail.allowed(header.allowed_count).or_fail()?;
    let candidate = ServerView {
        authority: &server_header.authority,
        active: server_header.active(),
        stats: server_header.stats,
        price_for_model,
    };
    let fx = header.apply(Event::Lock { server: candidate, allowed, fee_bps }, now()?).or_fail()?;
    count(server_header, &fx)
}

fn append_response(ctx: &mut Ctx<'_>, is_final: bool, chunk: &[u8]) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, request, response, system, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(authority)?;
    writable(authority)?;
    writable(response)?;
    system_program(system)?;
    if chunk.is_empty() {
        return Err(fail(Error::EmptyChunk));
    }
    writable(request)?;
    let mut header = load_request(request, program_id)?;
    let existing = load_response(response, program_id, request)?;
    if header.has_response() && existing.is_none() {
        return Err(fail(Error::ResponseMismatch));
    }
    let finished = existing.is_some_and(|h| h.finished);
    let had_response = header.has_response();
    let event = Event::Append { server: authority.address().as_array(), response_finished: finished };
    header.apply(event, now()?).or_fail()?;
    if !had_response {
        store_request(request, &header)?;
    }

    let mut resp = match existing {
        Some(h) if &h.server != authority.address().as_array() => return Err(fail(Error::ResponseMismatch)),
        Some(h) => h,
        None => ResponseHeader::new(REQUEST_BUMP, *request.address().as_array(), *authority.address().as_array()),
    };
    let new_len = resp.size_after_append(chunk.len()).or_fail()?;
    if existing.is_none() {
        let bump_seed = [REQUEST_BUMP];
        let seeds = [Seed::from(pda::RESPONSE_SEED), Seed::from(request.address().as_ref()), Seed::from(&bump_seed)];
        create_pda(
            authority,
            response,
            &NewAccount { owner: program_id, space: new_len, lamports: rent_for(new_len)?, seeds: &seeds },
        )?;
    } else {
        resize_paid(response, authority, new_len)?;
    }
    let mut data = response.try_borrow_mut()?;
    let start = ResponseHeader::LEN.checked_add(resp.data_len as usize).ok_or(fail(Error::ArithmeticOverflow))?;
    let mut w = Writer::new(data.get_mut(start..).ok_or(fail(Error::Truncated))?);
    w.bytes(chunk).or_fail()?;
    w.finish().or_fail()?;
    resp.chunk_count = resp.chunk_count.checked_add(1).ok_or(fail(Error::ArithmeticOverflow))?;
    // size_after_append bounded the new length by MAX_RESPONSE_LEN, so it fits u32.
    resp.data_len =
        u32::try_from(new_len.saturating_sub(ResponseHeader::LEN)).map_err(|_| fail(Error::ResponseTooLarge))?;
    resp.finished = is_final;
    resp.encode_into(&mut data).or_fail()
}

fn complete_request(ctx: &mut Ctx<'_>, tokens: u64) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, server, request, response, config, treasury, client, ..] = &mut *ctx.accounts else {
        return Err(not_enough());
    };
    signer(authority)?;
    writable(authority)?;
    writable(server)?;
    writable(request)?;
    writable(treasury)?;
    writable(client)?;
    owned(server, program_id)?;
    owned(request, program_id)?;
    distinct(server, request)?;
    let cfg = load_config(config, program_id)?;
    check_treasury(treasury, program_id, &cfg)?;
    let resp = load_response(response, program_id, request)?;
    let fx = {
        let mut server_data = server.try_borrow_mut()?;
        let server_header = server_in(&mut server_data, authority.address().as_array(), Error::NotServerAuthority)?;
        let mut request_data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut request_data).or_fail()?;
        request_client_is(client, header)?;
        if header.has_response() && resp.is_none() {
            return Err(fail(Error::ResponseMismatch));
        }
        let event = Event::Complete {
            server: authority.address().as_array(),
            tokens,
            response_finished: resp.is_some_and(|r| r.finished),
            response_len: resp.map_or(0, |r| r.data_len),
            min_counted_fee: cfg.params.min_counted_fee,
        };
        let fx = header.apply(event, now()?).or_fail()?;
        // The rule ran first (it names the precise reason: state, locker, deadline); a locker's
        // response can then only be its own.
        if resp.is_some_and(|r| &r.server != authority.address().as_array()) {
            return Err(fail(Error::ResponseMismatch));
        }
        count(server_header, &fx)?;
        fx
    };
    // The server's share stays in the request (server_due) until the flag window closes.
    move_lamports(request, treasury, fx.to_treasury)?;
    refund_client(request, client, fx.to_client)
}

/// Pays a refund to the client now, unless it would leave the client's account below the
/// rent-exempt minimum (an emptied wallet), which the runtime would refuse, blocking the
/// settlement. Then the refund stays in the request account and comes back with its rent at
/// close: nobody can stall a completion by draining their own wallet.
fn refund_client(request: &mut AccountView, client: &mut AccountView, amount: u64) -> R {
    let after = client.lamports().checked_add(amount).ok_or(fail(Error::ArithmeticOverflow))?;
    // A wallet already above the minimum at the default rate needs no sysvar read (the usual case).
    // (A u64 `*` would need __multi3 for its overflow check on SBF; core's wide multiply does not.)
    let floor = chainference_core::pricing::mul_div(
        (client.data_len() as u64).saturating_add(128),
        pinocchio::sysvars::rent::DEFAULT_LAMPORTS_PER_BYTE,
        1,
        chainference_core::pricing::Rounding::Down,
    )
    .unwrap_or(u64::MAX);
    if client.lamports() < floor && after < rent_for(client.data_len())? {
        return Ok(());
    }
    move_lamports(request, client, amount)
}

fn release_request(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [caller, server, request, response, config, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(caller)?;
    writable(server)?;
    writable(request)?;
    distinct(server, request)?;
    let lock_window = load_params(config, program_id)?.lock_window;
    owned(request, program_id)?;
    let resp = load_response(response, program_id, request)?;
    let fx = {
        let mut request_data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut request_data).or_fail()?;
        let (had_response, locked_by) = (header.has_response(), header.locked_by);
        let event = Event::Release { signer: caller.address().as_array(), lock_window };
        let fx = header.apply(event, now()?).or_fail()?;
        owned(server, program_id)?;
        let mut server_data = server.try_borrow_mut()?;
        let server_header = server_in(&mut server_data, &locked_by, Error::ServerMismatch)?;
        if had_response != resp.is_some() || resp.is_some_and(|r| &r.server != caller.address().as_array()) {
            // The request has a response (so the rule let only its server release): it must be
            // passed, and be this server's, to be discarded; and only then may one be passed.
            return Err(fail(Error::ResponseMismatch));
        }
        count(server_header, &fx)?;
        fx
    };
    if fx.discard_response && resp.is_some() {
        writable(caller)?;
        writable(response)?;
        // The locking server paid the response's rent (load_response checked it is this request's).
        close_into(response, caller)?;
    }
    Ok(())
}

fn reclaim_request(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [request, client, rest @ ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    writable(request)?;
    writable(client)?;
    owned(request, program_id)?;
    let request_key = *request.address().as_array();
    let fx = {
        let mut request_data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut request_data).or_fail()?;
        request_client_is(client, header)?;
        let locked_by = header.locked_by;
        let fx = header.apply(Event::Reclaim, now()?).or_fail()?;
        if !fx.server.is_empty() {
            let [server, ..] = rest else { return Err(not_enough()) };
            writable(server)?;
            if server.address().as_array() == &request_key {
                return Err(fail(Error::DuplicateAccount));
            }
            owned(server, program_id)?;
            let mut server_data = server.try_borrow_mut()?;
            count(server_in(&mut server_data, &locked_by, Error::ServerMismatch)?, &fx)?;
        }
        fx
    };
    // Anyone may crank a reclaim: a client that emptied its wallet gets the stake at close.
    refund_client(request, client, fx.to_client)
}

fn flag_response(ctx: &mut Ctx<'_>, refund: bool) -> ProgramResult {
    let program_id = ctx.program_id;
    let [client, request, server, config, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(client)?;
    writable(client)?;
    writable(request)?;
    writable(server)?;
    let params = load_params(config, program_id)?;
    owned(request, program_id)?;
    owned(server, program_id)?;
    distinct(server, request)?;
    let fx = {
        let mut request_data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut request_data).or_fail()?;
        let mut server_data = server.try_borrow_mut()?;
        let server_header = server_in(&mut server_data, &header.locked_by, Error::ServerMismatch)?;
        let terms = FlagTerms { flag_window: params.flag_window, flag_refund_bps: params.flag_refund_bps, refund };
        let fx = header.flag(client.address().as_array(), terms, now()?).or_fail()?;
        count(server_header, &fx)?;
        fx
    };
    // The signer is the request's client (the rule checked it): the refund goes to its wallet.
    move_lamports(request, client, fx.to_client)
}

fn compare_responses(ctx: &mut Ctx<'_>, reveal: &CompareReveal<'_>, preferred: u8) -> ProgramResult {
    let program_id = ctx.program_id;
    let [client, request_a, request_b, server_a, server_b, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(client)?;
    writable(request_a)?;
    writable(request_b)?;
    writable(server_a)?;
    writable(server_b)?;
    distinct(request_a, request_b)?;
    owned(request_a, program_id)?;
    owned(request_b, program_id)?;
    let (header_a, header_b, fx) = {
        let (data_a, data_b) = (request_a.try_borrow()?, request_b.try_borrow()?);
        let (mut header_a, mut header_b) =
            (RequestHeader::decode(&data_a).or_fail()?, RequestHeader::decode(&data_b).or_fail()?);
        let sides = CompareSides {
            a: &mut header_a,
            model_a: RequestAccount::model_bytes(&data_a).or_fail()?,
            commitment_a: read_array(&data_a, RequestHeader::COMMITMENT_OFFSET).or_fail()?,
            b: &mut header_b,
            model_b: RequestAccount::model_bytes(&data_b).or_fail()?,
            commitment_b: read_array(&data_b, RequestHeader::COMMITMENT_OFFSET).or_fail()?,
        };
        let fx = compare(sides, client.address().as_array(), reveal, preferred, sha256).or_fail()?;
        (header_a, header_b, fx)
    };
    let mut stats_a = load_server_of(server_a, program_id, &fx.server_a)?;
    let mut stats_b = load_server_of(server_b, program_id, &fx.server_b)?;
    fx.apply(&mut stats_a.stats, true).or_fail()?;
    fx.apply(&mut stats_b.stats, false).or_fail()?;
    store_request(request_a, &header_a)?;
    store_request(request_b, &header_b)?;
    store_server(server_a, &stats_a)?;
    store_server(server_b, &stats_b)
}

fn close_request(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [caller, request, client, response, served_by, config, ..] = &mut *ctx.accounts else {
        return Err(not_enough());
    };
    signer(caller)?;
    writable(request)?;
    writable(client)?;
    let retention = load_params(config, program_id)?.retention;
    owned(request, program_id)?;
    let (fx, had_response, locked_by) = {
        let mut data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut data).or_fail()?;
        request_client_is(client, header)?;
        let (had_response, locked_by) = (header.has_response(), header.locked_by);
        let fx = header.apply(Event::Close { signer: caller.address().as_array(), retention }, now()?).or_fail()?;
        (fx, had_response, locked_by)
    };
    let resp = load_response(response, program_id, request)?;
    if had_response && resp.is_none() {
        // Closing the request without its response would strand the server's rent.
        return Err(fail(Error::ResponseMismatch));
    }
    let resp = resp.filter(|_| fx.discard_response);
    if fx.to_server > 0 || resp.is_some() {
        // The held share and the response's rent go to the server that served the request.
        writable(served_by)?;
        at(served_by, &locked_by, Error::ServerMismatch)?;
    }
    if let Some(resp) = resp {
        writable(response)?;
        at(served_by, &resp.server, Error::ServerMismatch)?;
        close_into(response, served_by)?;
    }
    move_lamports(request, served_by, fx.to_server)?;
    close_into(request, client)
}

fn claim_payment(ctx: &mut Ctx<'_>) -> ProgramResult {
    let program_id = ctx.program_id;
    let [authority, request, response, config, ..] = &mut *ctx.accounts else { return Err(not_enough()) };
    signer(authority)?;
    writable(authority)?;
    writable(request)?;
    let flag_window = load_params(config, program_id)?.flag_window;
    owned(request, program_id)?;
    let resp = load_response(response, program_id, request)?;
    let (fx, had_response) = {
        let mut data = request.try_borrow_mut()?;
        let header = RequestHeader::view_mut(&mut data).or_fail()?;
        let had_response = header.has_response();
        let event = Event::Claim { signer: authority.address().as_array(), flag_window };
        (header.apply(event, now()?).or_fail()?, had_response)
    };
    if had_response && resp.is_none_or(|r| &r.server != authority.address().as_array()) {
        return Err(fail(Error::ResponseMismatch));
    }
    if let Some(_resp) = resp.filter(|_| fx.discard_response) {
        writable(response)?;
        close_into(response, authority)?;
    }
    move_lamports(request, authority, fx.to_server)
}
