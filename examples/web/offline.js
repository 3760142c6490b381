// The example page: everything runs in the browser, in wasm, with the browser's own randomness.
import init, * as cf from '../../pkg/web/chainference_wasm.js';

const $ = (id) => document.getElementById(id);
const unhex = (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16)));

async function main() {
  await init();
  // Test data: the core test vectors (a real app reads accounts over RPC).
  const vectors = await (await fetch('../../crates/chainference-core/tests/vectors/core-v1.json')).json();

  // 1. A wallet signs the fixed message (here: the vectors' signature stands in for signMessage).
  const keys = cf.ClientKeys.fromWalletSignature(unhex(vectors.keys.wallet_signature));
  const client = crypto.getRandomValues(new Uint8Array(32));
  // A nonce whose request and response addresses both use the canonical bump 255 (protocol v2).
  const nonce = cf.usableNonce(client, 1n);
  const request = cf.requestAddress(client, nonce);
  const requestKeys = keys.requestKeys(request);
  const server = cf.ServerKeys.generate();
  const prompt = new TextEncoder().encode('What is the capital of France?');
  const model = 'HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1';
  const envelope = cf.sealPrompt(request, [server.publicKey], requestKeys.promptPublicKey, prompt);
  const instructions = cf.openRequestInstructions({
    client, nonce, stake: 10_000_000n, maxPricePerMtok: 3_000_000n, maxTokens: 512, model,
    allowed: [crypto.getRandomValues(new Uint8Array(32))],
    responseKey: requestKeys.responsePublicKey,
    commitment: keys.commitment(request, model, prompt),
    envelope,
  });
  $('envelope-size').textContent = envelope.length;
  $('recipients').textContent = 2;
  $('instruction-count').textContent = instructions.length;
  $('first-tag').textContent = instructions[0].data[0];
  $('program-id').textContent = instructions[0].programId;
  $('server-opened').textContent = new TextDecoder().decode(server.openPrompt(envelope, request, 0));

  // 2. Decode server accounts (one from the vectors) into a table.
  const body = $('servers').querySelector('tbody');
  for (const hex of [vectors.layouts.server]) {
    const s = cf.decodeServer(unhex(hex));
    for (const offer of s.offers) {
      const row = body.insertRow();
      for (const cell of [s.authority.slice(0, 8) + '…', offer.model, offer.pricePerMtok.toString(), (s.stats.successBps / 100).toFixed(2) + '%']) {
        row.insertCell().textContent = cell;
      }
    }
  }

  // 3. Open the stored answer chunk by chunk, as they would stream in.
  const streamKeys = keys.requestKeys(unhex(vectors.keys.request));
  const opener = streamKeys.responseOpener(unhex(vectors.stream.server));
  let text = '';
  let opened = 0;
  for (const chunk of vectors.stream.chunks) {
    text += new TextDecoder().decode(opener.openChunk(unhex(chunk)).text);
    opened += 1;
    $('answer').textContent = text;
  }
  opener.finish();
  $('chunks-opened').textContent = opened;

  // 4. A request every allowed server declined (the vectors' request, with the bytes the
  //    program writes on DeclineRequest: one bit per allow-list slot, the union of reasons).
  const declinedBytes = unhex(vectors.layouts.request);
  declinedBytes[cf.requestDeclinedOffset()] = 0b11;
  declinedBytes[cf.requestDeclinedOffset() + 1] = 1 | 8;
  const declined = cf.decodeRequest(declinedBytes);
  if (declined.status === 'Open' && declined.declinedByAll) {
    $('declined').textContent =
      `declined by all ${declined.declined.length} allowed servers: ${declined.declineReasons.join(', ')}`;
    $('declined').className = 'error';
    const owner = cf.fromBase58(declined.client);
    const address = unhex(vectors.keys.request);
    const giveUp = [
      cf.cancelRequestInstruction(owner, address),
      cf.closeRequestInstruction(owner, address, owner, owner),
    ];
    $('give-up').textContent = giveUp.map((ix) => `tag ${ix.data[0]}`).join(' + ');
  }
  $('status').textContent = 'done';
  $('status').id = 'done';
}

main().catch((e) => {
  $('status').textContent = `error ${e.code ?? ''}: ${e.message}`;
  $('status').className = 'error';
});
