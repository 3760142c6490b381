// The dApp (index.html) against a real cluster: starts a real `chainference server run` on the
// validator at $CHAINFERENCE_RPC_URL, then in headless Chromium and Firefox (or $BROWSERS) checks
// the errors a user meets first (an RPC that is not there, a cluster without the program, an empty
// wallet), funds the page's in-page keypair from the faucet, asks, and checks the streamed answer
// and every lamport against the chain; then the same through a Wallet Standard wallet, a
// request that every allowed server declines on chain (cancelled and closed at once), and one its
// server never answers (reclaimed at the deadline and closed).
//
//   CHAINFERENCE_RPC_URL   the validator (e.g. from `cargo xtask localnet`; its config must exist:
//                          `chainference localnet` and the CLI's validator test create it)
//   CHAINFERENCE_WS_URL    its websocket (default: the next port)
//   CHAINFERENCE_BIN       the `chainference` binary (built with the `rpc` features)
//   GECKODRIVER, FIREFOX, CHROMIUM   where the drivers and browsers are (Debian's by default)
//   CHAINFERENCE_SCREENSHOTS   where to save each browser's final page (default: a temp dir)
//
// Run by `cargo xtask test` in its validator stage, after `npm ci` and `npm run build` here.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, root, serveRepository } from './browsers.mjs';

const rpcUrl = process.env.CHAINFERENCE_RPC_URL;
if (!rpcUrl) {
  console.log('dapp.test.mjs: CHAINFERENCE_RPC_URL is not set; start a validator (cargo xtask localnet) to run it');
  process.exit(process.env.CHAINFERENCE_REQUIRE_RPC ? 1 : 0);
}
const wsUrl = process.env.CHAINFERENCE_WS_URL ?? (() => {
  const url = new URL(rpcUrl);
  url.protocol = 'ws:';
  url.port = String(Number(url.port) + 1);
  return url.toString();
})();
const bin = process.env.CHAINFERENCE_BIN ?? 'chainference';
const screenshots = process.env.CHAINFERENCE_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'chainference-dapp-'));
const cf = createRequire(import.meta.url)(join(root, 'pkg/node/chainference_wasm.js'));
const ANSWER = 'The capital of France is Paris.';
const PRICE = 2_000_000n;

async function rpc(method, ...params) {
  const res = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const body = await res.json();
  if (body.error) throw new Error(`${method}: ${JSON.stringify(body.error)}`);
  return body.result;
}
const balance = async (address) => BigInt((await rpc('getBalance', address, { commitment: 'confirmed' })).value);
const exists = async (address) =>
  (await rpc('getAccountInfo', address, { commitment: 'confirmed', encoding: 'base64' })).value !== null;

// A real server, as an operator runs it, with its own fresh key.
const dir = mkdtempSync(join(tmpdir(), 'chainference-dapp-server-'));
const keyFile = join(dir, 'server.json');
const server = JSON.parse(execFileSync(bin, ['keygen', '--out', keyFile, '--json'], { encoding: 'utf8' })).address;
const serverProcess = spawn(
  bin,
  ['--rpc', rpcUrl, '--ws', wsUrl, '--keypair', keyFile, 'server', 'run', '--price', PRICE.toString(), '--airdrop', '10'],
  { stdio: ['ignore', 'ignore', 'inherit'] },
);
let stopping = false;
const serverExit = new Promise((ok) => serverProcess.on('exit', ok));
// A second server that declines every prompt longer than 16 bytes, on chain.
const pickyKey = join(dir, 'picky.json');
const pickyServer = JSON.parse(execFileSync(bin, ['keygen', '--out', pickyKey, '--json'], { encoding: 'utf8' })).address;
const picky = spawn(
  bin,
  ['--rpc', rpcUrl, '--ws', wsUrl, '--keypair', pickyKey, 'server', 'run', '--price', PRICE.toString(), '--airdrop', '10',
    '--max-prompt-bytes', '16'],
  { stdio: ['ignore', 'ignore', 'inherit'] },
);
serverExit.then((code) => {
  if (!stopping) {
    console.error(`chainference server run exited early (${code}); see its output above`);
    process.exit(1);
  }
});

const site = await serveRepository();
const page = `${site.base}/examples/web/index.html`;
const treasury = cf.toBase58(cf.programAddresses().treasury);
const configBytes = (await rpc('getAccountInfo', cf.toBase58(cf.programAddresses().config), { encoding: 'base64' })).value;
if (!configBytes) throw new Error(`no config account at ${rpcUrl}: run \`chainference localnet\` (it initializes it)`);
const feeBps = cf.decodeConfig(Buffer.from(configBytes.data[0], 'base64')).feeBps;

/** Waits in the page until `#status` reads one of `states`; returns every element's text. */
const settle = (browser, states, seconds) =>
  browser.evaluate(async ({ states, seconds }) => {
    const until = Date.now() + seconds * 1000;
    while (!states.includes(document.getElementById('status').textContent) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const texts = {};
    for (const el of document.querySelectorAll('[id]')) texts[el.id] = el.textContent.trim();
    return texts;
  }, { states, seconds });

/**
 * Airdrops 1 SOL to the page's wallet, asks, and checks the answer and every lamport against
 * the chain; returns a line for the log.
 */
async function fundAndAsk(browser, name, wallet) {
  await browser.evaluate(async () => document.getElementById('airdrop').click());
  let shown = await settle(browser, ['ready', 'failed'], 60);
  assert.equal(shown.error, '', `${name}: airdrop: ${shown.error}`);
  const before = await balance(wallet);
  assert.equal(before, 1_000_000_000n);
  const treasuryBefore = await balance(treasury);
  const asked = Date.now();
  await browser.evaluate(async () => document.getElementById('ask-form').requestSubmit());
  shown = await settle(browser, ['failed', 'done'], 300);
  assert.equal(shown.status, 'done', `${name}: status "${shown.status}": ${shown.error}`);
  assert.equal(shown.error, '');
  assert.equal(shown.answer, ANSWER);
  assert.equal(shown['served-by'], server);
  assert.ok(Number(shown.chunks) >= 1, `${name}: chunks opened: ${shown.chunks}`);

  // Lamports: the page's figures against the chain's.
  const n = (id) => BigInt(shown[id]);
  const tokens = n('tokens');
  assert.ok(tokens > 0n);
  assert.equal(n('price'), PRICE);
  assert.equal(n('cost'), (tokens * PRICE + 999_999n) / 1_000_000n, 'cost = ⌈tokens × price / 10⁶⌉');
  assert.equal(n('stake-paid'), (256n * PRICE + 999_999n) / 1_000_000n, 'stake = the most 256 tokens can cost');
  assert.equal(n('refund'), n('stake-paid') - n('cost'));
  assert.equal(n('protocol-fee'), cf.settle(tokens, PRICE, n('stake-paid'), feeBps).fee, 'the fee at the config\'s rate');
  assert.equal(n('balance-before'), before);
  const after = await balance(wallet);
  assert.equal(n('balance-after'), after);
  assert.equal(before - after, n('cost') + n('tx-fees'), 'the wallet paid the cost and the fees; stake and rent are back');
  assert.equal(n('spent'), before - after);
  assert.equal(await balance(treasury) - treasuryBefore, n('protocol-fee'), 'the treasury took the fee');
  assert.ok(!(await exists(shown['request-address'])), 'request closed');
  assert.ok(!(await exists(shown['response-address'])), 'response closed');
  const transactions = await browser.evaluate(async () =>
    [...document.querySelectorAll('#transactions tbody tr')].map((tr) => tr.cells[0].textContent));
  assert.equal(transactions[0], 'open');
  assert.equal(transactions.at(-1), 'close');
  return `"${shown.answer}" from ${server}, ${tokens} tokens, ` +
    `cost ${shown.cost} + fees ${shown['tx-fees']} lamports (${transactions.length} transactions), ` +
    `${shown.chunks} chunks, first text ${shown['first-text']} after the open, ` +
    `answered ${((Date.now() - asked) / 1000).toFixed(1)} s after Ask`;
}

/**
 * Runs in the page: registers a Wallet Standard wallet (`name`, default "Test Wallet") holding a
 * fresh key, with the features the page needs, through the standard's register-wallet event;
 * returns its address. `prefix`: it signs a prefixed copy of each message instead.
 */
async function registerStandardWallet(options) {
  const { name = 'Test Wallet', prefix = false } = options ?? {};
  const kit = await import(new URL('vendor/kit.js', location.href).href);
  const signer = await kit.generateKeyPairSigner();
  const chains = ['solana:localnet'];
  const calls = { messages: 0, transactions: 0 };
  if (!prefix) window.testWalletCalls = calls;
  const account = {
    address: signer.address,
    publicKey: kit.getAddressEncoder().encode(signer.address),
    chains,
    features: ['solana:signMessage', 'solana:signTransaction'],
  };
  const wallet = {
    version: '1.0.0',
    name,
    icon: 'data:image/svg+xml;base64,PHN2Zy8+',
    chains,
    accounts: [account],
    features: {
      'standard:connect': { version: '1.0.0', connect: async () => ({ accounts: [account] }) },
      'solana:signMessage': {
        version: '1.0.0',
        signMessage: (...inputs) => Promise.all(inputs.map(async ({ message }) => {
          calls.messages += 1;
          // Some wallets sign a prefixed message: what the page must refuse.
          const signed = prefix ? new Uint8Array([...new TextEncoder().encode('\xffsolana offchain'), ...message]) : message;
          return { signedMessage: signed, signature: await kit.signBytes(signer.keyPair.privateKey, signed) };
        })),
      },
      'solana:signTransaction': {
        version: '1.0.0',
        supportedTransactionVersions: ['legacy', 0],
        signTransaction: (...inputs) => Promise.all(inputs.map(async ({ transaction, chain }) => {
          if (!chains.includes(chain)) throw new Error(`${name} does not sign for ${chain}`);
          calls.transactions += 1;
          const signed = await kit.signTransaction([signer.keyPair], kit.getTransactionDecoder().decode(transaction));
          return { signedTransaction: kit.getTransactionEncoder().encode(signed) };
        })),
      },
    },
  };
  window.dispatchEvent(new CustomEvent('wallet-standard:register-wallet', { detail: ({ register }) => register(wallet) }));
  return signer.address;
}

let failures = 0;
try {
  for (const name of (process.env.BROWSERS ?? 'chromium,firefox').split(',')) {
    const started = Date.now();
    const browser = await launch(name);
    try {
      // An RPC URL where nothing listens: the error names it, with a hint.
      await browser.goto(`${page}?rpc=${encodeURIComponent('http://127.0.0.1:9')}`);
      let shown = await settle(browser, ['failed', 'ready'], 30);
      assert.equal(shown.status, 'failed', `${name}: a dead RPC URL must fail: ${JSON.stringify(shown)}`);
      assert.match(shown.error, /cannot reach the RPC node at http:\/\/127\.0\.0\.1:9[\s\S]*hint: /);

      // A cluster without this program: says so, with a hint.
      const elsewhere = cf.toBase58(crypto.getRandomValues(new Uint8Array(32)));
      await browser.goto(`${page}?rpc=${encodeURIComponent(rpcUrl)}&ws=${encodeURIComponent(wsUrl)}&program=${elsewhere}`);
      shown = await settle(browser, ['failed', 'ready'], 30);
      assert.equal(shown.status, 'failed', `${name}: ${JSON.stringify(shown)}`);
      assert.match(shown.error, /no Chainference deployment[\s\S]*hint: .*chainference localnet/);
      assert.match(shown['program-warning'], /not Chainference's/, `${name}: a foreign program is warned about`);

      // The real cluster: the page lists our server once it has registered.
      await browser.goto(`${page}?rpc=${encodeURIComponent(rpcUrl)}&ws=${encodeURIComponent(wsUrl)}`);
      shown = await settle(browser, ['failed', 'ready'], 60);
      assert.equal(shown.status, 'ready', `${name}: status "${shown.status}": ${shown.error}`);
      const wallet = shown['wallet-address'];
      assert.equal(shown['wallet-kind'], 'in-page keypair');
      const listed = await browser.evaluate(async ({ server, seconds }) => {
        const until = Date.now() + seconds * 1000;
        for (;;) {
          const row = document.querySelector(`#servers tr[data-authority="${server}"]`);
          if (row) {
            row.querySelector('input[type=checkbox]').click();
            return [...row.cells].map((c) => c.textContent);
          }
          if (Date.now() > until) return null;
          document.getElementById('refresh-servers').click();
          await new Promise((r) => setTimeout(r, 1000));
        }
      }, { server, seconds: 180 });
      assert.ok(listed, `${name}: server ${server} never listed`);
      assert.equal(listed[3], PRICE.toString());

      // An empty wallet: refused before any transaction, with a hint to fund it.
      await browser.evaluate(async () => document.getElementById('ask-form').requestSubmit());
      shown = await settle(browser, ['failed', 'done'], 30);
      assert.equal(shown.status, 'failed');
      assert.match(shown.error, /the wallet holds 0 lamports[\s\S]*hint: .*Airdrop/);
      assert.equal(await balance(wallet), 0n);

      // Fund it from the faucet, then ask.
      const first = await fundAndAsk(browser, name, wallet);
      await browser.screenshot(join(screenshots, `dapp-${name}.png`));
      console.log(`examples/web/index.html in headless ${name}, in-page keypair: ${first}`);

      // The same with a Wallet Standard wallet (registered in the page, signing with its own
      // key): the page signs the key message and every transaction through the standard's API.
      const standard = await browser.evaluate(registerStandardWallet, null);
      await browser.evaluate(async () => {
        const button = [...document.querySelectorAll('#wallets button')].find((b) => b.textContent === 'Test Wallet');
        button.click();
        const until = Date.now() + 10_000;
        while (document.getElementById('wallet-kind').textContent !== 'Test Wallet' && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 100));
        }
      });
      shown = await settle(browser, ['ready', 'failed', 'done'], 5);
      assert.equal(shown['wallet-kind'], 'Test Wallet', `${name}: ${shown.error}`);
      assert.equal(shown['wallet-address'], standard);
      const second = await fundAndAsk(browser, name, standard);
      const calls = await browser.evaluate(async () => window.testWalletCalls);
      assert.equal(calls.messages, 1, `${name}: the key message is signed through the wallet`);
      const sent = await browser.evaluate(async () => document.querySelectorAll('#transactions tbody tr').length);
      assert.equal(calls.transactions, sent, `${name}: every transaction is signed through the wallet`);
      console.log(`examples/web/index.html in headless ${name}, Wallet Standard wallet: ${second}`);
      // A wallet that signs something other than the key message (here: a prefixed copy) is
      // refused before anything is sent: keys derived from it would not be this wallet's.
      await browser.evaluate(registerStandardWallet, { name: 'Prefixing Wallet', prefix: true });
      await browser.evaluate(async () => {
        [...document.querySelectorAll('#wallets button')].find((b) => b.textContent === 'Prefixing Wallet').click();
        const until = Date.now() + 10_000;
        while (document.getElementById('wallet-kind').textContent !== 'Prefixing Wallet' && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 100));
        }
        document.getElementById('ask-form').requestSubmit();
      });
      shown = await settle(browser, ['failed', 'done'], 30);
      assert.equal(shown.status, 'failed', `${name}: status "${shown.status}"`);
      assert.match(shown.error, /Prefixing Wallet signed something other than the key message/);
      assert.equal(shown['request-address'], '', 'nothing was opened');
      await browser.evaluate(async () => {
        [...document.querySelectorAll('#wallets button')].find((b) => b.textContent === 'Test Wallet').click();
        const until = Date.now() + 10_000;
        while (document.getElementById('wallet-kind').textContent !== 'Test Wallet' && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 100));
        }
      });

      // Only the picky server allowed: it declines on chain, and the page cancels and closes at
      // once (the stake and rent back; only the fees spent), naming the reason.
      const ticked = await browser.evaluate(async ({ picky, seconds }) => {
        const until = Date.now() + seconds * 1000;
        for (;;) {
          const row = document.querySelector(`#servers tr[data-authority="${picky}"]`);
          if (row) {
            for (const box of document.querySelectorAll('#servers input[type=checkbox]')) if (box.checked) box.click();
            row.querySelector('input[type=checkbox]').click();
            return true;
          }
          if (Date.now() > until) return false;
          document.getElementById('refresh-servers').click();
          await new Promise((r) => setTimeout(r, 1000));
        }
      }, { picky: pickyServer, seconds: 120 });
      assert.ok(ticked, `${name}: the picky server ${pickyServer} never listed`);
      const beforeDecline = await balance(standard);
      const declineStarted = Date.now();
      await browser.evaluate(async () => document.getElementById('ask-form').requestSubmit());
      shown = await settle(browser, ['failed', 'done'], 60);
      const declineTook = (Date.now() - declineStarted) / 1000;
      assert.equal(shown.status, 'failed', `${name}: status "${shown.status}"`);
      assert.match(shown.error, /every allowed server declined: prompt too large; the request was cancelled and closed[\s\S]*hint: /);
      assert.ok(!(await exists(shown['request-address'])), 'declined request closed');
      const feesPaid = await browser.evaluate(async () =>
        [...document.querySelectorAll('#transactions tbody tr')].map((tr) => tr.cells[0].textContent + ':' + tr.cells[2].textContent));
      assert.deepEqual(feesPaid.map((f) => f.split(':')[0]), ['open', 'cancel + close']);
      const feeSum = feesPaid.reduce((sum, f) => sum + BigInt(f.split(':')[1]), 0n);
      assert.equal(beforeDecline - (await balance(standard)), feeSum, 'a declined request costs only its fees');
      console.log(`examples/web/index.html in headless ${name}: declined on chain, cancelled and closed ${declineTook.toFixed(1)} s after Ask, ${feeSum} lamports of fees`);

      // A server that stops answering (SIGSTOP): with a 10 s timeout the page reclaims the request
      // at its deadline (chain time) and closes it; only the fees are spent.
      serverProcess.kill('SIGSTOP');
      try {
        await browser.evaluate(async ({ server }) => {
          for (const box of document.querySelectorAll('#servers input[type=checkbox]')) if (box.checked) box.click();
          document.querySelector(`#servers tr[data-authority="${server}"] input[type=checkbox]`).click();
          document.getElementById('timeout').value = '10';
        }, { server });
        const beforeExpiry = await balance(standard);
        const expiryStarted = Date.now();
        await browser.evaluate(async () => document.getElementById('ask-form').requestSubmit());
        shown = await settle(browser, ['failed', 'done'], 90);
        const expiryTook = (Date.now() - expiryStarted) / 1000;
        assert.equal(shown.status, 'failed', `${name}: status "${shown.status}": ${shown.error}`);
        assert.match(shown.error, /ended expired without an answer; it is closed \(stake and rent back\)[\s\S]*hint: /);
        assert.ok(!(await exists(shown['request-address'])), 'expired request closed');
        const paid = await browser.evaluate(async () =>
          [...document.querySelectorAll('#transactions tbody tr')].map((tr) => [tr.cells[0].textContent, tr.cells[2].textContent]));
        assert.deepEqual(paid.map(([label]) => label), ['open', 'reclaim', 'close']);
        const expiryFees = paid.reduce((sum, [, fee]) => sum + BigInt(fee), 0n);
        assert.equal(beforeExpiry - (await balance(standard)), expiryFees, 'an expired request costs only its fees');
        console.log(`examples/web/index.html in headless ${name}: unanswered, reclaimed at the deadline and closed ${expiryTook.toFixed(1)} s after Ask, ${expiryFees} lamports of fees`);
      } finally {
        serverProcess.kill('SIGCONT');
        await browser.evaluate(async () => { document.getElementById('timeout').value = ''; });
      }

      assert.deepEqual(browser.errors, []);
      assert.deepEqual(await browser.evaluate(async () => window.unexpectedErrors), [], `${name}: uncaught errors in the page`);
      console.log(`examples/web/index.html in headless ${name}: ${((Date.now() - started) / 1000).toFixed(1)} s in all`);
    } catch (error) {
      failures += 1;
      console.error(`examples/web/index.html in ${name} failed:`, error);
      await browser.screenshot(join(screenshots, `dapp-${name}-failed.png`)).catch(() => {});
    } finally {
      await browser.close();
    }
  }
} finally {
  site.close();
  stopping = true;
  picky?.kill('SIGINT');
  serverProcess.kill('SIGINT');
  await Promise.race([serverExit, new Promise((r) => setTimeout(r, 30_000))]);
  serverProcess.kill('SIGKILL');
  picky?.kill('SIGKILL');
}
console.log(`screenshots in ${screenshots}`);
process.exit(failures ? 1 : 0);
