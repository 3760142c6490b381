// Drives the offline walkthrough (offline.html) in headless Chromium and Firefox (or the
// browsers named in $BROWSERS, comma-separated), checking what the page
// shows: keys, sealing, instructions, decoding and streamed chunks, no cluster needed. Run by
// `cargo xtask test` after `cargo xtask wasm` built pkg/ and `npm ci` set up this folder.
import assert from 'node:assert/strict';
import { launch, serveRepository } from './browsers.mjs';

const site = await serveRepository();
const url = `${site.base}/examples/web/offline.html`;
for (const name of (process.env.BROWSERS ?? 'chromium,firefox').split(',')) {
  const browser = await launch(name);
  try {
    await browser.goto(url);
    const shown = await browser.evaluate(async () => {
      for (let i = 0; i < 300 && !document.getElementById('done'); i += 1) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const texts = {};
      for (const el of document.querySelectorAll('[id]')) texts[el.id] = el.textContent.trim();
      const rows = [...document.querySelectorAll('#servers tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent));
      return { texts, rows };
    });
    const text = async (id) => shown.texts[id.slice(1)];
    assert.deepEqual(browser.errors, []);
    assert.equal(await text('#done'), 'done', 'the page never finished');
    assert.equal(Number(await text('#envelope-size')), 2 + 80 * 2 + 30 + 16);
    assert.equal(await text('#instruction-count'), '1');
    assert.equal(await text('#first-tag'), '7');
    assert.equal(await text('#server-opened'), 'What is the capital of France?');
    const { rows } = shown;
    assert.equal(rows.length, 2);
    assert.equal(rows[0][1], 'HuggingFaceTB/SmolLM2-135M-Instruct:Q4_1');
    assert.equal(rows[0][2], '2000000');
    assert.equal(rows[0][3], '81.81%');
    assert.equal(await text('#chunks-opened'), '3');
    assert.equal(await text('#answer'), 'The capital of France is Paris.');
    assert.equal(await text('#declined'), 'declined by all 2 allowed servers: prompt too large, client not served');
    assert.equal(await text('#give-up'), 'tag 9 + tag 17');
    console.log(`examples/web/offline.html: all checks passed in headless ${name}`);
  } finally {
    await browser.close();
  }
}
site.close();
