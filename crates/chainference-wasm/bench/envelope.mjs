// Seal and open of 1 KiB and 16 KiB prompts to 1, 4 and 8 recipients in Node.js through the
// wasm package (`cargo xtask wasm` first), printed as a table to set next to the native criterion
// bench (`cargo bench -p chainference-core --bench envelope`). Usage: node envelope.mjs
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(import.meta.url);
const cf = require('../../../pkg/node/chainference_wasm.js');

function time(fn, minMs = 300) {
  for (let i = 0; i < 5; i++) fn();
  let n = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0n;
  while (elapsed < BigInt(minMs) * 1_000_000n) {
    fn();
    n++;
    elapsed = process.hrtime.bigint() - start;
  }
  return Number(elapsed) / n / 1000; // µs per op
}

const request = randomBytes(32);
const keys = cf.ClientKeys.fromWalletSignature(randomBytes(64)).requestKeys(request);
const servers = Array.from({ length: 8 }, () => cf.ServerKeys.generate());
console.log('| operation | prompt | recipients | µs/op (wasm, node) |');
console.log('| --- | ---: | ---: | ---: |');
for (const size of [1024, 16384]) {
  const prompt = randomBytes(size);
  for (const n of [1, 4, 8]) {
    const pks = servers.slice(0, n).map((s) => s.publicKey);
    const seal = time(() => cf.sealPrompt(request, pks, keys.promptPublicKey, prompt));
    const sealed = cf.sealPrompt(request, pks, keys.promptPublicKey, prompt);
    const open = time(() => servers[0].openPrompt(sealed, request, 0));
    console.log(`| seal | ${size} | ${n} | ${seal.toFixed(1)} |`);
    console.log(`| open | ${size} | ${n} | ${open.toFixed(1)} |`);
  }
}
