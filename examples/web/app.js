// A Chainference dApp: @solana/kit talks to the cluster (RPC and websocket), the wasm package
// derives the client's keys, seals the prompt, builds the instructions and opens the answer.
// Query parameters: `rpc`, `ws`, `program` (defaults: the local validator and the built-in id).
import init, * as cf from '../../pkg/web/chainference_wasm.js';
import * as kit from './vendor/kit.js';

const $ = (id) => document.getElementById(id);
const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const fromHex = (text) => new Uint8Array(text.match(/../g).map((b) => parseInt(b, 16)));
const LAMPORTS_PER_SOL = 1_000_000_000n;
/** A table cell showing the start and end of a long address or signature (all of it on hover). */
function shortCell(row, text) {
  const cell = row.insertCell();
  cell.textContent = text.length > 16 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text;
  cell.title = text;
  return cell;
}
const U64_MAX = (1n << 64n) - 1n;
const COMMITMENT = 'confirmed';

/** An error the user can act on: what went wrong and what to do about it. */
class Hinted extends Error {
  constructor(message, hint) {
    super(message);
    this.hint = hint;
  }
}

function showError(error) {
  const hint = error?.hint ? `\nhint: ${error.hint}` : '';
  $('error').textContent = `${error?.message ?? error}${hint}`;
  console.error(error);
}

function clearError() {
  $('error').textContent = '';
}

function setStatus(text) {
  $('status').textContent = text;
}

// ---------------------------------------------------------------------------------------------
// cluster
// ---------------------------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const rpcUrl = params.get('rpc') ?? 'http://127.0.0.1:8899';
/** The websocket beside an RPC URL: the agave convention is the next port, same host. */
function defaultWsUrl(http) {
  const url = new URL(http);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  if (url.port) url.port = String(Number(url.port) + 1);
  return url.toString();
}
const wsUrl = params.get('ws') ?? defaultWsUrl(rpcUrl);
const rpc = kit.createSolanaRpc(rpcUrl);
const subscriptions = kit.createSolanaRpcSubscriptions(wsUrl);
const sendAndConfirm = kit.sendAndConfirmTransactionFactory({ rpc, rpcSubscriptions: subscriptions });
const airdrop = kit.airdropFactory({ rpc, rpcSubscriptions: subscriptions });

/** The Wallet Standard chain id of the cluster behind `url` (wallets sign for one chain). */
function chainOf(url) {
  const host = new URL(url).hostname;
  if (host === '127.0.0.1' || host === 'localhost') return 'solana:localnet';
  if (host.includes('devnet')) return 'solana:devnet';
  if (host.includes('testnet')) return 'solana:testnet';
  return 'solana:mainnet';
}

/** Runs an RPC call; a network failure becomes an error naming the URL. */
async function call(request) {
  try {
    return await request.send();
  } catch (error) {
    if (error instanceof TypeError || /fetch|network|HTTP error/i.test(String(error?.message))) {
      throw new Hinted(
        `cannot reach the RPC node at ${rpcUrl}: ${error.message}`,
        'start a local validator with `chainference localnet` (or `cargo xtask localnet`), or open this page with ?rpc=<url>',
      );
    }
    throw error;
  }
}

async function accountBytes(address) {
  const { value } = await call(rpc.getAccountInfo(address, { encoding: 'base64', commitment: COMMITMENT }));
  return value ? fromBase64(value.data[0]) : null;
}

async function balanceOf(address) {
  return (await call(rpc.getBalance(address, { commitment: COMMITMENT }))).value;
}

// ---------------------------------------------------------------------------------------------
// wallets: an in-page keypair, or any Wallet Standard wallet the browser has
// ---------------------------------------------------------------------------------------------

/** The page's own keypair, kept for this tab only (sessionStorage): for local and test funds. */
async function inPageWallet() {
  let seed = sessionStorage.getItem('chainference-in-page-seed');
  if (!seed) {
    seed = toHex(crypto.getRandomValues(new Uint8Array(32)));
    sessionStorage.setItem('chainference-in-page-seed', seed);
  }
  const signer = await kit.createKeyPairSignerFromPrivateKeyBytes(fromHex(seed));
  return {
    kind: 'in-page keypair',
    address: signer.address,
    signMessage: (message) => kit.signBytes(signer.keyPair.privateKey, message),
    signTransaction: (transaction) => kit.signTransaction([signer.keyPair], transaction),
  };
}

/** A Wallet Standard wallet's account as the page's wallet (sign message, sign transaction). */
async function standardWallet(wallet) {
  const { accounts } = await wallet.features['standard:connect'].connect();
  const account = accounts[0];
  if (!account) throw new Hinted(`${wallet.name} gave no account`, 'unlock the wallet and allow this page');
  const chain = chainOf(rpcUrl);
  return {
    kind: wallet.name,
    address: kit.address(account.address),
    async signMessage(message) {
      const [out] = await wallet.features['solana:signMessage'].signMessage({ account, message });
      return out.signature;
    },
    async signTransaction(transaction) {
      const wire = kit.getTransactionEncoder().encode(transaction);
      const [out] = await wallet.features['solana:signTransaction'].signTransaction({ account, transaction: wire, chain });
      const signed = kit.getTransactionDecoder().decode(out.signedTransaction);
      return { ...signed, lifetimeConstraint: transaction.lifetimeConstraint };
    },
  };
}

/** Wallets that register through the Wallet Standard and can sign what the page needs. */
const standardWallets = [];
function listenForWallets(onChange) {
  const api = {
    register(...wallets) {
      for (const w of wallets) {
        const usable = ['standard:connect', 'solana:signMessage', 'solana:signTransaction'].every((f) => f in w.features);
        if (usable && !standardWallets.includes(w)) standardWallets.push(w);
      }
      onChange();
      return () => {};
    },
  };
  window.addEventListener('wallet-standard:register-wallet', (event) => event.detail(api));
  window.dispatchEvent(new CustomEvent('wallet-standard:app-ready', { detail: api }));
}

// ---------------------------------------------------------------------------------------------
// transactions
// ---------------------------------------------------------------------------------------------

/** Signs and sends one transaction of `instructions`; returns its signature and fee. */
async function send(wallet, label, instructions) {
  const { value: blockhash } = await call(rpc.getLatestBlockhash({ commitment: COMMITMENT }));
  const message = kit.pipe(
    kit.createTransactionMessage({ version: 'legacy' }),
    (m) => kit.setTransactionMessageFeePayer(wallet.address, m),
    (m) => kit.setTransactionMessageLifetimeUsingBlockhash(blockhash, m),
    (m) => kit.appendTransactionMessageInstructions(instructions.map(kitInstruction), m),
  );
  const compiled = kit.compileTransaction(message);
  // What the runtime will charge for it (confirmed transactions reach getTransaction seconds
  // later on a busy node, so ask before sending).
  const messageBase64 = kit.getBase64Decoder().decode(compiled.messageBytes);
  const { value: quoted } = await call(rpc.getFeeForMessage(messageBase64, { commitment: COMMITMENT }));
  if (quoted == null) throw new Error(`${label}: the cluster could not price the transaction (blockhash expired?)`);
  const fee = BigInt(quoted);
  const signed = await wallet.signTransaction(compiled);
  const signature = kit.getSignatureFromTransaction(signed);
  try {
    await sendAndConfirm(signed, { commitment: COMMITMENT });
  } catch (error) {
    const logs = error?.cause?.context?.logs ?? error?.context?.logs;
    throw new Error(`${label} failed: ${error.message}${logs ? `\n${logs.join('\n')}` : ''}`);
  }
  const row = $('transactions').querySelector('tbody').insertRow();
  row.insertCell().textContent = label;
  shortCell(row, signature);
  row.insertCell().textContent = fee.toString();
  row.cells[2].className = 'num';
  return { signature, fee };
}

/** The wasm package's instruction object as @solana/kit takes it. */
function kitInstruction(ix) {
  return {
    programAddress: kit.address(ix.programAddress),
    accounts: ix.accounts.map((a) => ({ address: kit.address(a.address), role: a.role })),
    data: ix.data,
  };
}

// ---------------------------------------------------------------------------------------------
// servers
// ---------------------------------------------------------------------------------------------

let programAddress;
let programBytes;
let config;
let servers = [];

async function loadConfig() {
  const bytes = await accountBytes(kit.address(cf.toBase58(cf.programAddresses(programBytes).config)));
  if (!bytes) {
    throw new Hinted(
      `no Chainference deployment at ${rpcUrl}: program ${programAddress} has no config account`,
      'start a local cluster with `chainference localnet` (it deploys and configures the program), or pass ?program=<id>',
    );
  }
  config = cf.decodeConfig(bytes);
  $('fee-bps').textContent = `${config.feeBps / 100}%`;
}

async function loadServers() {
  const kindServer = btoa(String.fromCharCode(2)); // the kind byte at offset 0
  const accounts = await call(
    rpc.getProgramAccounts(programAddress, {
      encoding: 'base64',
      commitment: COMMITMENT,
      filters: [{ memcmp: { offset: 0n, bytes: kindServer, encoding: 'base64' } }],
    }),
  );
  const ticked = new Set(servers.filter((s) => s.ticked).map((s) => s.authority));
  servers = [];
  for (const { account } of accounts) {
    let server;
    try {
      server = cf.decodeServer(fromBase64(account.data[0]));
    } catch {
      continue; // an account this version cannot read: not one we can seal to
    }
    if (!server.active || server.retired) continue;
    for (const offer of server.offers) {
      servers.push({ ...server, model: offer.model, price: offer.pricePerMtok, ticked: ticked.has(server.authority) });
    }
  }
  // Cheapest first, then the better reputation.
  servers.sort((a, b) => (a.price === b.price ? b.stats.successBps - a.stats.successBps : a.price < b.price ? -1 : 1));
  renderServers();
}

function renderServers() {
  const body = $('servers').querySelector('tbody');
  body.replaceChildren();
  for (const s of servers) {
    const row = body.insertRow();
    row.dataset.authority = s.authority;
    row.dataset.model = s.model;
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = s.ticked;
    box.addEventListener('change', () => {
      s.ticked = box.checked;
      renderModels();
    });
    row.insertCell().append(box);
    const preferred = s.stats.preferenceBps == null ? '—' : `${(s.stats.preferenceBps / 100).toFixed(1)}%`;
    shortCell(row, s.authority);
    const cells = [s.model, s.price.toString(), s.stats.completed.toString(),
      `${(s.stats.successBps / 100).toFixed(2)}%`, preferred, s.endpoint || '—'];
    for (const text of cells) row.insertCell().textContent = text;
    for (const i of [3, 4, 5, 6]) row.cells[i].className = 'num';
  }
  $('servers-note').textContent = servers.length
    ? `${servers.length} offer${servers.length === 1 ? "" : "s"} from ${new Set(servers.map((s) => s.authority)).size} active server(s)`
    : `no active server on this cluster yet — run \`chainference server run --rpc ${rpcUrl}\` to start one`;
  renderModels();
}

function renderModels() {
  const select = $('model');
  const chosen = select.value;
  const models = [...new Set(servers.map((s) => s.model))];
  select.replaceChildren(...models.map((m) => new Option(m, m)));
  const ticked = servers.find((s) => s.ticked);
  select.value = ticked?.model ?? (models.includes(chosen) ? chosen : models[0] ?? '');
}

/** The servers allowed to answer: the ticked ones offering the model, else the cheapest three. */
function chosenServers(model) {
  const offering = servers.filter((s) => s.model === model);
  const ticked = offering.filter((s) => s.ticked);
  const chosen = (ticked.length ? ticked : offering).slice(0, 3);
  if (!chosen.length) {
    throw new Hinted(
      `no active server offers ${model || 'any model'} on this cluster`,
      `start one with \`chainference server run --rpc ${rpcUrl}\`, then press Refresh`,
    );
  }
  return chosen;
}

// ---------------------------------------------------------------------------------------------
// asking
// ---------------------------------------------------------------------------------------------

function randomU64() {
  return new DataView(crypto.getRandomValues(new Uint8Array(8)).buffer).getBigUint64(0);
}

function parseLamports(text, name) {
  if (!/^\d+$/.test(text.trim())) throw new Hinted(`${name} must be a whole number`, `e.g. ${name === 'max tokens' ? '256' : '1000000'}`);
  return BigInt(text.trim());
}

/** Follows the response account: opens each new chunk in order and shows the text. */
class AnswerReader {
  constructor(requestKeys) {
    this.requestKeys = requestKeys;
    this.sent = performance.now();
    this.reset();
  }

  reset() {
    this.server = null;
    this.opener = null;
    this.next = 0;
    this.decoder = new TextDecoder();
    $('answer').textContent = '';
  }

  get finished() {
    return this.opener?.isFinished ?? false;
  }

  /** Takes the response account's bytes (`null`: discarded, e.g. a server released it). */
  update(bytes) {
    if (this.finished) return; // complete: the account closing later takes nothing away
    if (!bytes || bytes.length === 0) {
      if (this.next > 0) this.reset(); // discarded by a release: another server starts over
      return;
    }
    const response = cf.decodeResponse(bytes);
    if (response.server !== this.server || response.chunks.length < this.next) {
      if (this.server) setStatus(`restarted: ${response.server} now answers`);
      this.reset();
      this.server = response.server;
      this.opener = this.requestKeys.responseOpener(cf.fromBase58(response.server));
    }
    for (const chunk of response.chunks.slice(this.next)) {
      const { text, isFinal } = this.opener.openChunk(chunk);
      this.next += 1;
      $('answer').textContent += this.decoder.decode(text, { stream: !isFinal });
      if (this.next === 1) $('first-text').textContent = `${((performance.now() - this.sent) / 1000).toFixed(2)} s`;
      $('chunks').textContent = String(this.next);
    }
  }
}

/** Resolves on the first of: a websocket notification, a poll (in case the socket is gone). */
async function watch(address, abort, onBytes) {
  const notifications = await subscriptions
    .accountNotifications(address, { encoding: 'base64', commitment: COMMITMENT })
    .subscribe({ abortSignal: abort });
  (async () => {
    try {
      for await (const { value } of notifications) onBytes(value.lamports === 0n ? null : fromBase64(value.data[0]));
    } catch (error) {
      if (!abort.aborted) console.warn(`websocket for ${address} ended, polling`, error);
    }
  })();
}

let wallet;
let busy = false;

async function ask(event) {
  event.preventDefault();
  if (busy) return;
  busy = true;
  $('ask').disabled = true;
  clearError();
  const abort = new AbortController();
  try {
    await askOnce(abort.signal);
  } catch (error) {
    showError(error);
    setStatus('failed');
  } finally {
    abort.abort();
    busy = false;
    $('ask').disabled = false;
    await refreshBalance().catch(() => {});
  }
}

async function askOnce(abort) {
  for (const id of ['tokens', 'price', 'stake-paid', 'cost', 'protocol-fee', 'refund', 'rent', 'tx-fees',
    'balance-before', 'balance-after', 'spent', 'served-by', 'request-address', 'response-address', 'chunks', 'first-text']) $(id).textContent = '';
  $('transactions').querySelector('tbody').replaceChildren();
  $('answer').textContent = '';
  const model = $('model').value;
  const prompt = $('prompt').value;
  if (!prompt.trim()) throw new Hinted('the prompt is empty', 'type a question');
  const maxTokens = parseLamports($('max-tokens').value, 'max tokens');
  if (maxTokens < 1n || maxTokens > 0xffffffffn) throw new Hinted('max tokens must be from 1 to 4294967295', 'e.g. 256');
  const chosen = chosenServers(model);
  const maxPrice = chosen.reduce((max, s) => (s.price > max ? s.price : max), 0n);
  const stake = $('stake').value.trim() ? parseLamports($('stake').value, 'stake') : cf.maxCost(maxTokens, maxPrice, U64_MAX);
  if (stake < 1n) throw new Hinted('the stake must be at least 1 lamport', 'leave it blank for the most the answer can cost');

  // Keys: derived from the wallet's signature of a fixed message, so the same wallet can read
  // its history anywhere.
  setStatus('sign the key message in your wallet…');
  const keys = cf.ClientKeys.fromWalletSignature(await wallet.signMessage(cf.clientKeyMessage()));
  const client = cf.fromBase58(wallet.address);
  const nonce = cf.usableNonce(client, randomU64(), programBytes);
  const request = cf.requestAddress(client, nonce, programBytes);
  const requestAddress = kit.address(cf.toBase58(request));
  const responseAddress = kit.address(cf.toBase58(cf.responseAddress(request, programBytes)));
  $('request-address').textContent = requestAddress;
  $('response-address').textContent = responseAddress;
  const requestKeys = keys.requestKeys(request);
  const messages = [];
  if ($('system').value.trim()) messages.push({ role: 'system', content: $('system').value });
  messages.push({ role: 'user', content: prompt });
  const payload = cf.encodePrompt({ messages, maxCompletionTokens: Number(maxTokens) });
  const envelope = cf.sealPrompt(request, chosen.map((s) => s.hpkeKey), requestKeys.promptPublicKey, payload);
  const instructions = cf.openRequestInstructions({
    client, nonce, stake, maxPricePerMtok: maxPrice, maxTokens: Number(maxTokens), model,
    allowed: chosen.map((s) => cf.fromBase58(s.authority)),
    responseKey: requestKeys.responsePublicKey,
    commitment: keys.commitment(request, model, payload),
    envelope, programId: programBytes,
  });
  keys.free();

  // Can the wallet pay? Stake + the request account's rent + a fee per transaction.
  const before = await balanceOf(wallet.address);
  const size = cf.requestAccountSize(new TextEncoder().encode(model).length, envelope.length);
  const rent = BigInt(await call(rpc.getMinimumBalanceForRentExemption(BigInt(size))));
  const needed = stake + rent + 5000n * BigInt(instructions.length + 1);
  if (before < needed) {
    throw new Hinted(
      `the wallet holds ${before} lamports; this request needs ${needed} (stake ${stake} + rent ${rent} + fees)`,
      `press "Airdrop 1 SOL" on a local or test cluster, or send SOL to ${wallet.address}`,
    );
  }
  $('balance-before').textContent = before.toString();
  $('stake-paid').textContent = stake.toString();
  $('rent').textContent = String(rent);

  // Follow both accounts before the open, so no chunk is missed.
  const reader = new AnswerReader(requestKeys);
  let latest = null;
  let wake = () => {};
  const changed = () => new Promise((resolve) => { wake = resolve; });
  await watch(responseAddress, abort, (bytes) => { try { reader.update(bytes); } catch (error) { showError(error); } wake(); });
  await watch(requestAddress, abort, (bytes) => { latest = bytes; wake(); });

  let fees = 0n;
  for (const [i, ix] of instructions.entries()) {
    setStatus(i === 0 ? 'opening the request…' : `uploading the prompt (${i + 1}/${instructions.length})…`);
    fees += (await send(wallet, i === 0 ? 'open' : `write prompt ${i}`, [ix])).fee;
  }
  reader.sent = performance.now();
  setStatus(`open: waiting for ${chosen.length === 1 ? 'the server' : `one of ${chosen.length} servers`}…`);

  // Until the request ends: notifications wake us, a poll every 2 s is the fallback.
  let state;
  for (;;) {
    if (latest === null) await Promise.race([changed(), new Promise((r) => setTimeout(r, 2000))]);
    const bytes = latest ?? (await accountBytes(requestAddress));
    latest = null;
    if (!bytes) throw new Error(`request ${requestAddress} disappeared`);
    state = cf.decodeRequest(bytes);
    if (state.status === 'Locked') {
      $('served-by').textContent = state.lockedBy;
      setStatus(`answering: ${state.lockedBy}`);
    }
    if (state.status === 'Completed') break;
    if (state.status === 'Open' && state.declinedByAll) {
      fees += (await send(wallet, 'cancel + close', [
        cf.cancelRequestInstruction(client, request, programBytes),
        cf.closeRequestInstruction(client, request, client, client, programBytes),
      ])).fee;
      throw new Hinted(
        `every allowed server declined: ${state.declineReasons.join(', ')}; the request was cancelled and closed (stake and rent back)`,
        'tick other servers, shorten the prompt or raise the stake',
      );
    }
    if (Date.now() / 1000 > state.deadline + 1 && (state.status === 'Open' || state.status === 'Locked')) {
      const lockedBy = state.lockedBy ? cf.fromBase58(state.lockedBy) : undefined;
      fees += (await send(wallet, 'reclaim + close', [
        cf.reclaimRequestInstruction(request, client, lockedBy, programBytes),
        cf.closeRequestInstruction(client, request, client, client, programBytes),
      ])).fee;
      throw new Hinted('no answer before the deadline; the stake and rent are back', 'try other servers');
    }
  }
  // The final chunk is written before completion: read it if no notification has yet.
  if (!reader.finished) reader.update(await accountBytes(responseAddress));
  if (!reader.finished) throw new Error('the answer ended without its final chunk');
  $('served-by').textContent = state.lockedBy;
  $('tokens').textContent = state.tokens.toString();
  $('price').textContent = state.pricePerMtok.toString();
  $('cost').textContent = state.cost.toString();
  $('protocol-fee').textContent = state.fee.toString();
  $('refund').textContent = (state.stake - state.cost).toString();

  setStatus('answered: closing the request (rent back)…');
  fees += (await send(wallet, 'close', [
    cf.closeRequestInstruction(client, request, client, cf.fromBase58(state.lockedBy), programBytes),
  ])).fee;
  const after = await balanceOf(wallet.address);
  $('tx-fees').textContent = fees.toString();
  $('balance-after').textContent = after.toString();
  $('spent').textContent = (before - after).toString();
  setStatus('done');
  $('status').dataset.done = 'true';
}

async function refreshBalance() {
  $('balance').textContent = (await balanceOf(wallet.address)).toString();
}

// ---------------------------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------------------------

async function useWallet(next) {
  wallet = next;
  $('wallet-address').textContent = wallet.address;
  $('wallet-kind').textContent = wallet.kind;
  await refreshBalance();
}

function renderWallets() {
  const list = $('wallets');
  list.replaceChildren();
  const inPage = document.createElement('button');
  inPage.type = 'button';
  inPage.textContent = 'in-page keypair';
  inPage.addEventListener('click', () => inPageWallet().then(useWallet).catch(showError));
  list.append(inPage);
  for (const w of standardWallets) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = w.name;
    button.addEventListener('click', () => standardWallet(w).then(useWallet).catch(showError));
    list.append(button);
  }
}

async function main() {
  await init();
  programAddress = kit.address(params.get('program') ?? cf.programId());
  programBytes = cf.fromBase58(programAddress);
  $('rpc-url').value = rpcUrl;
  $('ws-url').value = wsUrl;
  $('program').value = programAddress;
  $('cluster-form').addEventListener('change', () => {
    const next = new URLSearchParams({ rpc: $('rpc-url').value, ws: $('ws-url').value, program: $('program').value });
    location.search = next.toString();
  });
  $('ask-form').addEventListener('submit', ask);
  $('refresh-servers').addEventListener('click', () => loadServers().catch(showError));
  $('airdrop').addEventListener('click', async () => {
    clearError();
    try {
      setStatus('airdrop…');
      await airdrop({ recipientAddress: wallet.address, lamports: kit.lamports(LAMPORTS_PER_SOL), commitment: COMMITMENT });
      await refreshBalance();
      setStatus('ready');
    } catch (error) {
      setStatus('failed');
      showError(new Hinted(`airdrop failed: ${error.message}`, 'only local and test clusters have a faucet; send SOL to the address instead'));
    }
  });
  listenForWallets(renderWallets);
  renderWallets();
  await useWallet(await inPageWallet());
  const version = await call(rpc.getVersion());
  $('cluster').textContent = `${chainOf(rpcUrl)} (solana-core ${version['solana-core']})`;
  await loadConfig();
  await loadServers();
  setStatus('ready');
}

// Whatever escapes a handler still reaches the user.
window.addEventListener('error', (event) => showError(event.error ?? event.message));
window.addEventListener('unhandledrejection', (event) => showError(event.reason));

main().catch((error) => {
  showError(error);
  setStatus('failed');
});
