// Imports the built package as a user would (pkg/, `cargo xtask wasm`), and checks that what
// wasm seals native Rust (chainference-core, through the envelope_interop example) opens, and
// the reverse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(import.meta.url);
const cf = require('../../../../pkg/node/chainference_wasm.js');
const interop = process.env.CHAINFERENCE_INTEROP;
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s.trim(), 'hex'));
const native = (...args) => execFileSync(interop, args, { encoding: 'utf8' });

test('what wasm seals, native opens', () => {
  const request = randomBytes(32);
  const seed = randomBytes(32);
  const signature = randomBytes(64);
  const server = cf.ServerKeys.fromSeed(seed);
  const keys = cf.ClientKeys.fromWalletSignature(signature).requestKeys(request);
  const prompt = new TextEncoder().encode('Sealed in wasm, opened in Rust: héllo ✓');
  const envelope = cf.sealPrompt(request, [server.publicKey], keys.promptPublicKey, prompt);
  assert.equal(envelope.length, cf.envelopeLength(1, prompt.length));
  assert.deepEqual(unhex(native('open', hex(request), hex(seed), '0', hex(envelope))), prompt);
  assert.deepEqual(unhex(native('open-own', hex(request), hex(signature), hex(envelope))), prompt);
});

test('what native seals, wasm opens', () => {
  const request = randomBytes(32);
  const seed = randomBytes(32);
  const signature = randomBytes(64);
  const prompt = new TextEncoder().encode('Sealed in Rust, opened in wasm');
  const envelope = unhex(native('seal', hex(request), hex(seed), hex(signature), hex(prompt)));
  assert.deepEqual(cf.ServerKeys.fromSeed(seed).openPrompt(envelope, request, 0), prompt);
  const keys = cf.ClientKeys.fromWalletSignature(signature).requestKeys(request);
  assert.deepEqual(keys.openOwnPrompt(envelope), prompt);
});

test('a native response stream opens in wasm, in order only', () => {
  const request = randomBytes(32);
  const server = randomBytes(32);
  const signature = randomBytes(64);
  const parts = ['The capital', ' of France', ' is Paris.'].map((p) => hex(new TextEncoder().encode(p)));
  const chunks = native('stream', hex(request), hex(server), hex(signature), ...parts).trim().split('\n').map(unhex);
  const keys = cf.ClientKeys.fromWalletSignature(signature).requestKeys(request);
  const opener = keys.responseOpener(server);
  assert.throws(() => opener.openChunk(chunks[1]), (e) => e.code === 121 && e.name === 'OpenFailed');
  let text = '';
  for (const chunk of chunks) {
    const { text: part, isFinal } = opener.openChunk(chunk);
    text += new TextDecoder().decode(part);
    assert.equal(isFinal, chunk === chunks[chunks.length - 1]);
  }
  opener.finish();
  assert.equal(text, 'The capital of France is Paris.');
});

test('instructions come in web3.js and @solana/kit shapes', () => {
  const client = randomBytes(32);
  const request = cf.requestAddress(client, 1n);
  const ix = cf.cancelRequestInstruction(client, request);
  assert.equal(ix.programId, cf.programId());
  assert.equal(ix.programAddress, cf.programId());
  assert.deepEqual(Array.from(ix.data), [9]);
  assert.equal(ix.keys[0].pubkey, cf.toBase58(client));
  assert.equal(ix.keys[0].isSigner, true);
  assert.equal(ix.accounts[1].role, 1);
  // A server's decline: tag 19 and the reasons byte; no reason is refused by name.
  const decline = cf.declineRequestInstruction(client, request, 1 | 32);
  assert.deepEqual(Array.from(decline.data), [19, 33]);
  assert.throws(() => cf.declineRequestInstruction(client, request, 0), (e) => e.name === 'NoDeclineReason' && e.code === 107);
});

test('a prompt payload with stop sequences round-trips, and bad ones are refused', () => {
  const payload = cf.encodePrompt({
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Héllo ✓' }],
    temperature: 0.7, seed: 42n, stop: ['\n\n', 'END'],
  });
  assert.equal(payload[0], 2, 'version 2: with stop sequences');
  const back = cf.decodePrompt(payload);
  assert.deepEqual(back.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Héllo ✓' }]);
  assert.deepEqual(back.stop, ['\n\n', 'END']);
  assert.equal(back.temperature, 0.7);
  assert.equal(back.seed, 42n);
  assert.equal(cf.encodePrompt({ messages: [{ role: 'user', content: 'hi' }] })[0], 1, 'no stops: version 1');
  assert.throws(() => cf.encodePrompt({ messages: [{ role: 'user', content: 'hi' }], stop: [''] }), (e) => e.name === 'MalformedPrompt');
  assert.throws(() => cf.encodePrompt({ messages: [{ role: 'wizard', content: 'hi' }] }), TypeError);
});

test('what a dApp sizes, filters and ranks servers by comes from core', () => {
  const vectors = require('../../../chainference-core/tests/vectors/core-v1.json');
  const requestBytes = unhex(vectors.layouts.request);
  const request = cf.decodeRequest(requestBytes);
  assert.equal(cf.requestAccountSize(Buffer.byteLength(request.model), request.prompt.length), requestBytes.length);
  const serverBytes = unhex(vectors.layouts.server);
  assert.equal(cf.serverAccountKind(), serverBytes[0], 'the kind byte a getProgramAccounts filter matches');
  assert.notEqual(cf.serverAccountKind(), requestBytes[0]);
  const { stats } = cf.decodeServer(serverBytes);
  // (counted − flagged) / (counted + timed out + released + 2): below the plain success ratio.
  const expected = Math.floor((Number(stats.counted - stats.flagged) * 10_000) / Number(stats.counted + stats.timedOut + stats.released + 2n));
  assert.equal(stats.rankingBps, expected);
  assert.ok(stats.rankingBps < stats.successBps);
  // The allow-list bound: one more server than allowed is refused when the instructions are built.
  const client = randomBytes(32);
  const nonce = cf.usableNonce(client, 1n);
  const params = (allowed) => ({
    client, nonce, stake: 1000n, maxPricePerMtok: 1n, maxTokens: 16, model: request.model,
    allowed, responseKey: randomBytes(32), commitment: randomBytes(32), envelope: randomBytes(100),
  });
  const servers = (n) => Array.from({ length: n }, () => randomBytes(32));
  assert.ok(cf.openRequestInstructions(params(servers(cf.maxAllowedServers()))).length >= 1);
  assert.throws(() => cf.openRequestInstructions(params(servers(cf.maxAllowedServers() + 1))), (e) => typeof e.code === 'number');
});

test('bad input throws a clear Error, never a trap', () => {
  assert.throws(() => cf.ClientKeys.fromWalletSignature(new Uint8Array(3)), (e) => e instanceof Error && e.code === 7);
  assert.throws(() => cf.sealPrompt(new Uint8Array(32), 'nope', new Uint8Array(32), new Uint8Array(1)), TypeError);
  assert.throws(() => cf.decodeRequest(new Uint8Array([3, 2])), (e) => e.name === 'Truncated' && e.code === 1);
  // A version-1 account (before the protocol v2 layout) is refused by name.
  assert.throws(() => cf.decodeRequest(new Uint8Array([3, 1])), (e) => e.name === 'UnsupportedVersion' && e.code === 4);
  // A nonce must be usable (request and response at bump 255): usableNonce picks one.
  const client = new Uint8Array(32).fill(7);
  const nonce = cf.usableNonce(client, 0n);
  assert.ok(nonce >= 0n);
  assert.throws(() => cf.settle(1n, 1n, 1n, 10001), (e) => e.code === 40);
  assert.throws(() => cf.parseModelId('no slash'), (e) => e.code === 8);
  // The module still works after every error.
  assert.equal(cf.maxCost(300n, 2000000n, 10n ** 9n), 600n);
});
