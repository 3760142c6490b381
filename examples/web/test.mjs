// Serves the repository on 127.0.0.1 and drives examples/web in headless Chromium with
// Playwright (playwright-core from npm, pointed at Debian's /usr/bin/chromium), checking what the
// page shows. Run by `cargo xtask test` after `cargo xtask wasm` built pkg/.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { extname, join, normalize } from 'node:path';
import assert from 'node:assert/strict';

const root = normalize(join(import.meta.dirname, '..', '..'));
const require = createRequire(join(process.env.PLAYWRIGHT_DIR ?? root, 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

const server = createServer(async (req, res) => {
  const path = normalize(join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname)));
  if (!path.startsWith(root)) { res.writeHead(403).end(); return; }
  try {
    const body = await readFile(path);
    res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' }).end(body);
  } catch { res.writeHead(404).end(); }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/examples/web/index.html`;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector('#done', { timeout: 30_000 });
  const text = async (sel) => (await page.textContent(sel)).trim();
  assert.deepEqual(errors, []);
  assert.equal(Number(await text('#envelope-size')), 2 + 80 * 2 + 30 + 16);
  assert.equal(await text('#instruction-count'), '1');
  assert.equal(await text('#first-tag'), '7');
  assert.equal(await text('#server-opened'), 'What is the capital of France?');
  const rows = await page.$$eval('#servers tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.equal(rows.length, 2);
  assert.equal(rows[0][1], 'HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1');
  assert.equal(rows[0][2], '2000000');
  assert.equal(rows[0][3], '81.81%');
  assert.equal(await text('#chunks-opened'), '3');
  assert.equal(await text('#answer'), 'The capital of France is Paris.');
  assert.equal(await text('#declined'), 'declined by all 2 allowed servers: prompt too large, client not served');
  assert.equal(await text('#give-up'), 'tag 9 + tag 17');
  console.log(`examples/web: all checks passed in headless Chromium (${url})`);
} finally {
  await browser.close();
  server.close();
}
