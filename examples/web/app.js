// A Chainference dApp: @solana/kit talks to the cluster (RPC and websocket), the wasm package
// derives the client's keys, seals the prompt, builds the instructions and opens the answer.
// Query parameters: `rpc`, `ws`, `program` (defaults: the local validator and the built-in id).
import init, * as cf from '../../pkg/web/chainference_wasm.js';
import * as kit from './vendor/kit.js';

const $ = (id) => document.getElementById(id);
const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const fromHex = (text) => new Uint8Array(text.match(/../g).map((b) => parseInt(b, 16)));
const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const LAMPORTS_PER_SOL = 1_000_000_000n;
const U64_MAX = (1n << 64n) - 1n;
const COMMITMENT = 'confirmed';
const CLOCK_SYSVAR = kit.address('SysvarC1ock11111111111111111111111111111111');
/** Genesis hashes of the public clusters; anything else is a local or private one. */
const CLUSTERS = {
  '5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d': 'solana:mainnet',
  EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG: 'solana:devnet',
  '4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY': 'solana:testnet',
};

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

/** A table cell showing the start and end of a long address or signature (all of it on hover). */
function shortCell(row, text) {
  const cell = row.insertCell();
  cell.textContent = text.length > 16 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text;
  cell.title = text;
  return cell;
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
/** The Wallet Standard chain id (`solana:localnet` for any cluster not public), from genesis. */
let chain = 'solana:localnet';

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

/** The cluster's clock (the Clock sysvar's unix_timestamp): deadlines are in chain time. */
async function chainTime() {
  const clock = await accountBytes(CLOCK_SYSVAR);
  return Number(new DataView(clock.buffer, clock.byteOffset).getBigInt64(32, true));
}

// ---------------------------------------------------------------------------------------------
// wallets: an in-page keypair, or any Wallet Standard wallet the browser has
// ---------------------------------------------------------------------------------------------

/**
 * The page's own keypair, kept for this tab only (sessionStorage, readable by scripts of this
 * origin): for local and test clusters' funds, never real ones.
 */
async function inPageWallet() {
  if (chain === 'solana:mainnet') {
    throw new Hinted('the in-page keypair is for local and test clusters only', 'connect a wallet');
  }
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

const WALLET_FEATURES = ['standard:connect', 'solana:signMessage', 'solana:signTransaction'];

/** A Wallet Standard wallet's account as the page's wallet (sign message, sign transaction). */
async function standardWallet(wallet) {
  if (!wallet.chains.includes(chain)) {
    throw new Hinted(`${wallet.name} does not sign for ${chain}`, 'switch the wallet to this cluster, or pick another wallet');
  }
  const { accounts } = await wallet.features['standard:connect'].connect();
  const account = accounts.find((a) => a.chains.includes(chain)
    && ['solana:signMessage', 'solana:signTransaction'].every((f) => a.features.includes(f)));
  if (!account) throw new Hinted(`${wallet.name} has no account that signs messages and transactions on ${chain}`, 'unlock the wallet and allow this page');
  const address = kit.address(account.address);
  const publicKey = await kit.getPublicKeyFromAddress(address);
  return {
    kind: wallet.name,
    address,
    async signMessage(message) {
      const [out] = await wallet.features['solana:signMessage'].signMessage({ account, message });
      // The client's keys come from this signature: it must be over exactly these bytes, or the
      // same wallet would derive other keys elsewhere and lose its history.
      if (!sameBytes(out.signedMessage, message) || !(await kit.verifySignature(publicKey, out.signature, message))) {
        throw new Hinted(`${wallet.name} signed something other than the key message`, 'use a wallet that signs messages as given');
      }
      return out.signature;
    },
    async signTransaction(transaction) {
      const wire = kit.getTransactionEncoder().encode(transaction);
      const [out] = await wallet.features['solana:signTransaction'].signTransaction({ account, transaction: wire, chain });
      const signed = kit.getTransactionDecoder().decode(out.signedTransaction);
      // A wallet may add its own instructions (priority fees, guards): the message then differs
      // and is what gets priced and sent; its blockhash must still be ours.
      const message = kit.getCompiledTransactionMessageDecoder().decode(signed.messageBytes);
      if (message.lifetimeToken !== transaction.lifetimeConstraint.blockhash) {
        throw new Hinted(`${wallet.name} changed the transaction's blockhash`, 'try again');
      }
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
        if (WALLET_FEATURES.every((f) => f in w.features) && !standardWallets.includes(w)) standardWallets.push(w);
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

/** The fee the cluster charges for a compiled message. */
async function feeFor(messageBytes, label) {
  const messageBase64 = kit.getBase64Decoder().decode(messageBytes);
  const { value } = await call(rpc.getFeeForMessage(messageBase64, { commitment: COMMITMENT }));
  if (value == null) throw new Error(`${label}: the cluster could not price the transaction (blockhash expired?)`);
  return BigInt(value);
}

/** Signs `instructions` in one transaction with `wallet`, sends it and waits for confirmation;
 *  returns its signature and the fee it paid. */
async function send(wallet, label, instructions) {
  const { value: blockhash } = await call(rpc.getLatestBlockhash({ commitment: COMMITMENT }));
  const message = kit.pipe(
    kit.createTransactionMessage({ version: 'legacy' }),
    (m) => kit.setTransactionMessageFeePayer(wallet.address, m),
    (m) => kit.setTransactionMessageLifetimeUsingBlockhash(blockhash, m),
    (m) => kit.appendTransactionMessageInstructions(instructions.map(kitInstruction), m),
  );
  const signed = await wallet.signTransaction(kit.compileTransaction(message));
  // Priced from what was signed (confirmed transactions reach getTransaction seconds later on a
  // busy node, so ask now).
  const fee = await feeFor(signed.messageBytes, label);
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

/** Best first, as the Rust client ranks them: reliability (with a prior against newcomers), fees
 *  paid by counted work, preference (overall: the page does not weigh it per comparing client),
 *  price, then address. */
function byReliability(a, b) {
  const key = (s) => [s.stats.rankingBps, s.stats.fees, s.stats.preferenceBps ?? 5000];
  const [ka, kb] = [key(a), key(b)];
  for (let i = 0; i < ka.length; i += 1) if (ka[i] !== kb[i]) return ka[i] > kb[i] ? -1 : 1;
  if (a.price !== b.price) return a.price < b.price ? -1 : 1;
  return a.authority < b.authority ? -1 : a.authority > b.authority ? 1 : 0;
}

async function loadServers() {
  const kindServer = btoa(String.fromCharCode(cf.serverAccountKind()));
  const accounts = await call(
    rpc.getProgramAccounts(programAddress, {
      encoding: 'base64',
      commitment: COMMITMENT,
      filters: [{ memcmp: { offset: 0n, bytes: kindServer, encoding: 'base64' } }],
    }),
  );
  const ticked = new Set(servers.filter((s) => s.ticked).map((s) => `${s.authority} ${s.model}`));
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
      const key = `${server.authority} ${offer.model}`;
      servers.push({ ...server, model: offer.model, price: offer.pricePerMtok, ticked: ticked.has(key) });
    }
  }
  servers.sort(byReliability);
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
    shortCell(row, s.authority);
    const preferred = s.stats.preferenceBps == null ? '—' : `${(s.stats.preferenceBps / 100).toFixed(1)}%`;
    const cells = [s.model, s.price.toString(), s.stats.counted.toString(),
      `${(s.stats.successBps / 100).toFixed(2)}%`, preferred, s.endpoint || '—'];
    for (const text of cells) row.insertCell().textContent = text;
    for (const i of [3, 4, 5, 6]) row.cells[i].className = 'num';
  }
  const operators = new Set(servers.map((s) => s.authority)).size;
  $('servers-note').textContent = servers.length
    ? `${servers.length} offer${servers.length === 1 ? '' : 's'} from ${operators} active server${operators === 1 ? '' : 's'}`
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

/**
 * The servers allowed to answer: the ticked ones offering the model, else the three most
 * reliable. Never the wallet's own server: the program refuses self-dealing locks.
 */
function chosenServers(model, wallet) {
  const offering = servers.filter((s) => s.model === model && s.authority !== wallet.address);
  const ticked = offering.filter((s) => s.ticked);
  if (ticked.length > cf.maxAllowedServers()) {
    throw new Hinted(`${ticked.length} servers ticked; a request allows at most ${cf.maxAllowedServers()}`, 'untick some');
  }
  const chosen = ticked.length ? ticked : offering.slice(0, 3);
  if (!chosen.length) {
    throw new Hinted(
      `no active server offers ${model || 'any model'} on this cluster (other than this wallet's own)`,
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

function parseWhole(text, name, example) {
  if (!/^\d+$/.test(text.trim())) throw new Hinted(`${name} must be a whole number`, `e.g. ${example}`);
  return BigInt(text.trim());
}

/** Follows the response account: opens each new chunk in order and shows the text. */
class AnswerReader {
  constructor(requestKeys) {
    this.requestKeys = requestKeys;
    this.sent = performance.now();
    this.failure = null;
    this.release = 0;
    this.reset();
  }

  reset() {
    this.server = null;
    this.opener?.free();
    this.opener = null;
    this.next = 0;
    this.decoder = new TextDecoder();
    for (const id of ['answer', 'chunks', 'first-text']) $(id).textContent = '';
  }

  get finished() {
    return this.opener?.isFinished ?? false;
  }

  /** A release discards the answer so far: another server starts over. */
  released(releaseCount) {
    if (releaseCount === this.release) return;
    this.release = releaseCount;
    if (this.server) setStatus(`released by ${this.server}: waiting for another server…`);
    this.failure = null; // the discarded answer's fault is not the next server's
    this.reset();
  }

  /** Takes the response account's bytes (`null`: it is gone). Never throws: a chunk that does
   *  not open is kept as `failure` (the answer is then not trusted). */
  update(bytes) {
    if (this.finished || this.failure) return; // complete: the account closing later takes nothing away
    try {
      if (!bytes || bytes.length === 0) return;
      const response = cf.decodeResponse(bytes);
      if (response.server !== this.server || response.chunks.length < this.next) {
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
    } catch (error) {
      this.failure = new Hinted(`chunk ${this.next} of ${this.server}'s answer does not open: ${error.message}`,
        'the answer is not shown as trusted; flag the server');
    }
  }

  free() {
    this.opener?.free();
    this.requestKeys.free();
  }
}

/** Calls `onBytes` with the account's bytes (`null`: closed) on every websocket notification. */
async function watch(address, abort, onBytes) {
  let notifications;
  try {
    notifications = await subscriptions
      .accountNotifications(address, { encoding: 'base64', commitment: COMMITMENT })
      .subscribe({ abortSignal: abort });
  } catch (error) {
    throw new Hinted(`cannot subscribe over the websocket at ${wsUrl}: ${error.message}`, 'open this page with ?ws=<url>');
  }
  (async () => {
    try {
      for await (const { value } of notifications) onBytes(value.lamports === 0n ? null : fromBase64(value.data[0]));
    } catch (error) {
      if (!abort.aborted) console.warn(`websocket for ${address} ended; polling instead`, error);
    }
  })();
}

let wallet;
let busy = false;

function setBusy(value) {
  busy = value;
  $('ask').disabled = value;
  for (const el of document.querySelectorAll('#wallets button, #cluster-form input, #airdrop')) el.disabled = value;
}

async function ask(event) {
  event.preventDefault();
  if (busy) return;
  if (!wallet) {
    showError(new Hinted('no wallet connected', 'pick a wallet above'));
    return;
  }
  setBusy(true);
  clearError();
  const abort = new AbortController();
  const asking = wallet; // the wallet that opens the request signs everything after it
  try {
    await askOnce(asking, abort.signal);
  } catch (error) {
    showError(error);
    setStatus('failed');
  } finally {
    abort.abort();
    setBusy(false);
    await refreshBalance().catch(() => {});
  }
}

async function askOnce(asking, abort) {
  for (const id of ['tokens', 'price', 'stake-paid', 'cost', 'protocol-fee', 'refund', 'rent', 'tx-fees',
    'balance-before', 'balance-after', 'spent', 'served-by', 'request-address', 'response-address', 'chunks',
    'first-text', 'answer']) $(id).textContent = '';
  $('transactions').querySelector('tbody').replaceChildren();
  $('verdict').hidden = true;
  const model = $('model').value;
  const prompt = $('prompt').value;
  if (!prompt.trim()) throw new Hinted('the prompt is empty', 'type a question');
  const maxTokens = parseWhole($('max-tokens').value, 'max tokens', '256');
  if (maxTokens < 1n || maxTokens > 0xffffffffn) throw new Hinted('max tokens must be from 1 to 4294967295', 'e.g. 256');
  const chosen = chosenServers(model, asking);
  const maxPrice = chosen.reduce((max, s) => (s.price > max ? s.price : max), 0n);
  // Blank: the most the answer can cost (at least 1 lamport, as the program requires).
  let stake = cf.maxCost(maxTokens, maxPrice, U64_MAX);
  if ($('stake').value.trim()) stake = parseWhole($('stake').value, 'the stake', '1000000');
  else if (stake < 1n) stake = 1n;
  if (stake < 1n) throw new Hinted('the stake must be at least 1 lamport', 'leave it blank for the most the answer can cost');
  // 0: the deployment's default; otherwise within the config's bounds (the program's rule).
  const timeout = $('timeout').value.trim() ? Number(parseWhole($('timeout').value, 'the timeout', String(config.defaultTimeout))) : 0;
  if (timeout !== 0 && (timeout < config.minTimeout || timeout > config.maxTimeout)) {
    throw new Hinted(`the timeout must be from ${config.minTimeout} to ${config.maxTimeout} s on this deployment`, 'leave it blank for the default');
  }

  // Keys: derived from the wallet's signature of a fixed message, so the same wallet can read
  // its history anywhere.
  setStatus('sign the key message in your wallet…');
  const keys = cf.ClientKeys.fromWalletSignature(await asking.signMessage(cf.clientKeyMessage()));
  const client = cf.fromBase58(asking.address);
  const nonce = cf.usableNonce(client, randomU64(), programBytes);
  const request = cf.requestAddress(client, nonce, programBytes);
  const requestAddress = kit.address(cf.toBase58(request));
  const responseAddress = kit.address(cf.toBase58(cf.responseAddress(request, programBytes)));
  let instructions;
  let reader;
  try {
    reader = new AnswerReader(keys.requestKeys(request));
    const messages = [];
    if ($('system').value.trim()) messages.push({ role: 'system', content: $('system').value });
    messages.push({ role: 'user', content: prompt });
    const payload = cf.encodePrompt({ messages, maxCompletionTokens: Number(maxTokens) });
    const envelope = cf.sealPrompt(request, chosen.map((s) => s.hpkeKey), reader.requestKeys.promptPublicKey, payload);
    instructions = cf.openRequestInstructions({
      client, nonce, stake, maxPricePerMtok: maxPrice, maxTokens: Number(maxTokens), model, timeout,
      allowed: chosen.map((s) => cf.fromBase58(s.authority)),
      responseKey: reader.requestKeys.responsePublicKey,
      commitment: keys.commitment(request, model, payload),
      envelope, programId: programBytes,
    });

    // Can the wallet pay? Stake + the request account's rent + each transaction's fee, and the
    // wallet may not be left below the rent-exempt minimum unless it is left empty.
    const before = await balanceOf(asking.address);
    const size = cf.requestAccountSize(new TextEncoder().encode(model).length, envelope.length);
    const rent = BigInt(await call(rpc.getMinimumBalanceForRentExemption(BigInt(size))));
    const reserve = BigInt(await call(rpc.getMinimumBalanceForRentExemption(0n)));
    const signatureFee = 5000n; // per signature on every cluster today; each transaction here has one
    let needed = stake + rent + signatureFee * BigInt(instructions.length + 1);
    if (before > needed && before - needed < reserve) needed += reserve;
    if (before < needed) {
      const fund = chain === 'solana:mainnet'
        ? `connect a wallet holding SOL (${asking.address} needs ${needed - before} more)`
        : `press "Airdrop 1 SOL", or send SOL to ${asking.address}`;
      throw new Hinted(`the wallet holds ${before} lamports; this request needs ${needed} (stake ${stake} + rent ${rent} + fees)`, fund);
    }
    $('request-address').textContent = requestAddress;
    $('response-address').textContent = responseAddress;
    $('balance-before').textContent = before.toString();
    $('stake-paid').textContent = stake.toString();
    $('rent').textContent = rent.toString();

    const fees = await follow({ asking, abort, reader, chosen, client, request, requestAddress, responseAddress, instructions });
    const after = await balanceOf(asking.address);
    $('tx-fees').textContent = fees.toString();
    $('balance-after').textContent = after.toString();
    $('spent').textContent = (before - after).toString();
    setStatus('done');
  } finally {
    keys.free();
    reader?.free();
  }
}

/**
 * Opens the request, follows it to its end and closes it; returns the transaction fees paid.
 * Whatever happens after the open, the request does not stay open: a failed upload is
 * cancelled, an ended request closed (stake and rent back), and only then is the error shown.
 */
async function follow({ asking, abort, reader, chosen, client, request, requestAddress, responseAddress, instructions }) {
  let latest = null;
  let wake = () => {};
  const changed = () => new Promise((resolve) => { wake = resolve; });
  // Follow both accounts before the open, so no chunk is missed.
  await watch(responseAddress, abort, (bytes) => { reader.update(bytes); });
  await watch(requestAddress, abort, (bytes) => { latest = bytes; wake(); });

  let fees = 0n;
  const pay = async (label, ixs) => { fees += (await send(asking, label, ixs)).fee; };
  const readState = async () => {
    const bytes = await accountBytes(requestAddress);
    return bytes ? cf.decodeRequest(bytes) : null;
  };
  /** Closes an ended request: its rent back, and the held share to whoever served it. */
  const close = (state, label = 'close') => pay(label, [cf.closeRequestInstruction(
    client, request, client, state.lockedBy ? cf.fromBase58(state.lockedBy) : client, programBytes)]);
  /** An Open (or Draft) request nobody holds: cancelled and closed in one transaction. */
  const cancelAndClose = () => pay('cancel + close', [
    cf.cancelRequestInstruction(client, request, programBytes),
    cf.closeRequestInstruction(client, request, client, client, programBytes),
  ]);

  setStatus('opening the request…');
  await pay('open', [instructions[0]]);
  try {
    for (const [i, ix] of instructions.slice(1).entries()) {
      setStatus(`uploading the prompt (${i + 2}/${instructions.length})…`);
      await pay(`write prompt ${i + 1}`, [ix]);
    }
  } catch (error) {
    // A request whose prompt never finished uploading can only be cancelled by its client.
    const state = await readState().catch(() => null);
    if (state && (state.status === 'Draft' || state.status === 'Open')) {
      await cancelAndClose();
      error.message += '; the request was cancelled and closed (stake and rent back)';
    }
    throw error;
  }
  reader.sent = performance.now();
  setStatus(`open: waiting for ${chosen.length === 1 ? 'the server' : `one of ${chosen.length} servers`}…`);

  // Until the request ends: notifications wake us, a poll every 2 s is the fallback.
  let reclaimFailures = 0;
  for (;;) {
    if (latest === null) await Promise.race([changed(), new Promise((r) => setTimeout(r, 2000))]);
    latest = null;
    const state = await readState();
    if (!state) throw new Error(`request ${requestAddress} disappeared`);
    reader.released(state.releaseCount);
    if (state.status === 'Locked') {
      $('served-by').textContent = state.lockedBy;
      setStatus(`answering: ${state.lockedBy}`);
    }
    if (state.status === 'Completed') {
      return finish(state, { asking, client, request, reader, responseAddress, close, fees: () => fees });
    }
    if (state.status === 'Expired' || state.status === 'Cancelled') {
      await close(state);
      throw new Hinted(`the request ended ${state.status.toLowerCase()} without an answer; it is closed (stake and rent back)`, 'try other servers');
    }
    if (state.status === 'Open' && state.declinedByAll) {
      try {
        await cancelAndClose();
      } catch (error) {
        const now = await readState();
        // A server locked it meanwhile: follow the answer. (Gone: the cancel + close landed.)
        if (now && now.status !== 'Open') continue;
        if (now) throw error;
      }
      throw new Hinted(
        `every allowed server declined: ${state.declineReasons.join(', ')}; the request was cancelled and closed (stake and rent back)`,
        'tick other servers, shorten the prompt or raise the stake',
      );
    }
    if ((state.status === 'Open' || state.status === 'Locked') && (await chainTime()) >= state.deadline) {
      try {
        await pay('reclaim', [cf.reclaimRequestInstruction(request, client, state.lockedBy ? cf.fromBase58(state.lockedBy) : undefined, programBytes)]);
      } catch (error) {
        // A last-moment answer makes the reclaim fail: read again. Persistent failure ends here.
        reclaimFailures += 1;
        if (reclaimFailures >= 3) {
          throw new Hinted(`no answer before the deadline, and the reclaim fails: ${error.message}`,
            `reclaim it later (\`chainference reclaim ${requestAddress}\`)`);
        }
      }
      // The next pass sees Expired (closes it) or Completed (a last-moment answer).
    }
  }
}

/** A completed request: the whole answer checked, the settlement shown, the request closed. */
async function finish(state, { asking, client, request, reader, responseAddress, close, fees }) {
  // The final chunk is written before completion: read it if no notification has yet.
  if (!reader.finished) reader.update(await accountBytes(responseAddress));
  $('served-by').textContent = state.lockedBy;
  $('tokens').textContent = state.tokens.toString();
  $('price').textContent = state.pricePerMtok.toString();
  $('cost').textContent = state.cost.toString();
  $('protocol-fee').textContent = state.fee.toString();
  $('refund').textContent = (state.stake - state.cost).toString();
  // Closing accepts the answer (the server's held share is paid): an answer that did not open
  // stays open to be flagged or disputed first, as the user chooses.
  if (reader.failure || !reader.finished) {
    offerVerdict(asking, client, request, cf.fromBase58(state.lockedBy));
    throw reader.failure ?? new Hinted('the answer ended without its final chunk', 'flag or dispute it below, then it is closed');
  }
  setStatus('answered: closing the request (rent back)…');
  await close(state);
  return fees();
}

/** Shows the flag / dispute / close choices for a completed request whose answer failed. */
function offerVerdict(asking, client, request, servedBy) {
  const done = async (label, ixs) => {
    if (busy) return;
    setBusy(true);
    clearError();
    try {
      await send(asking, label, ixs);
      $('verdict').hidden = true;
      setStatus(`${label}: done`);
    } catch (error) {
      showError(error);
    } finally {
      setBusy(false);
      await refreshBalance().catch(() => {});
    }
  };
  const closeIx = () => cf.closeRequestInstruction(client, request, client, servedBy, programBytes);
  $('flag').onclick = () => done('flag + close', [cf.flagResponseInstruction(client, request, servedBy, programBytes, false), closeIx()]);
  $('dispute').onclick = () => done('dispute + close', [cf.flagResponseInstruction(client, request, servedBy, programBytes, true), closeIx()]);
  $('accept').onclick = () => done('close', [closeIx()]);
  $('verdict').hidden = false;
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
  if (chain !== 'solana:mainnet') {
    const inPage = document.createElement('button');
    inPage.type = 'button';
    inPage.textContent = 'in-page keypair';
    inPage.disabled = busy;
    inPage.addEventListener('click', () => inPageWallet().then(useWallet).catch(showError));
    list.append(inPage);
  }
  for (const w of standardWallets) {
    const button = document.createElement('button');
    button.type = 'button';
    button.disabled = busy;
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
  if (programAddress !== cf.programId()) {
    $('program-warning').textContent = `This page uses program ${programAddress}, not Chainference's (${cf.programId()}): ` +
      'your stake goes to whatever that program does. Go on only if you trust who gave you this link.';
  }
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
  const [version, genesis] = [await call(rpc.getVersion()), await call(rpc.getGenesisHash())];
  chain = CLUSTERS[genesis] ?? 'solana:localnet';
  $('cluster').textContent = `${chain} (solana-core ${version['solana-core']})`;
  // Wallets sign for a chain: list them once the cluster's is known.
  listenForWallets(renderWallets);
  renderWallets();
  // The in-page keypair by default, but never on mainnet, where it would hold real funds.
  if (chain !== 'solana:mainnet') await useWallet(await inPageWallet());
  await loadConfig();
  await loadServers();
  setStatus('ready');
}

// Whatever escapes a handler still reaches the user, and is counted (the tests read it).
window.unexpectedErrors = [];
const unexpected = (error) => {
  window.unexpectedErrors.push(String(error?.stack ?? error));
  showError(error);
};
window.addEventListener('error', (event) => unexpected(event.error ?? event.message));
window.addEventListener('unhandledrejection', (event) => unexpected(event.reason));

main().catch((error) => {
  showError(error);
  setStatus('failed');
});
