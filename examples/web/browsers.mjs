// What the page tests share: a static server for the repository, and headless browsers behind
// one small interface. Chromium runs through Playwright (playwright-core, pointed at Debian's
// /usr/bin/chromium); Firefox through W3C WebDriver (geckodriver, pointed at Debian's
// firefox-esr), since Playwright drives only its own patched Firefox builds.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';

export const root = normalize(join(import.meta.dirname, '..', '..'));
const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

/** Serves the repository on 127.0.0.1 (the page loads ../../pkg/web); returns `{ base, close }`. */
export async function serveRepository() {
  const server = createServer(async (req, res) => {
    let path;
    try {
      path = normalize(join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname)));
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (!path.startsWith(root + sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(path);
      res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** A free TCP port on 127.0.0.1. */
async function freePort() {
  const probe = createServer();
  await new Promise((ok) => probe.listen(0, '127.0.0.1', ok));
  const { port } = probe.address();
  await new Promise((ok) => probe.close(ok));
  return port;
}

/**
 * Launches `name` ('chromium' or 'firefox') headless. The page handle has `goto(url)`,
 * `evaluate(fn, arg)` (an async function run in the page; its result must be JSON),
 * `screenshot(path)` and `close()`; `errors` collects uncaught page errors where the browser
 * reports them (Chromium; pages under test also keep their own list).
 */
export async function launch(name) {
  if (name === 'chromium') return launchChromium();
  if (name === 'firefox') return launchFirefox();
  throw new Error(`unknown browser ${name}: chromium or firefox`);
}

async function launchChromium() {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return {
    name: 'chromium',
    errors,
    goto: (url) => page.goto(url),
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    screenshot: (path) => page.screenshot({ path, fullPage: true }),
    close: () => browser.close(),
  };
}

async function launchFirefox() {
  const port = await freePort();
  // Firefox logs freely on stderr (through geckodriver): kept, and shown only when it fails.
  const driver = spawn(process.env.GECKODRIVER ?? 'geckodriver', ['--port', String(port), '--log', 'error'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  const keep = (chunk) => {
    log.push(chunk.toString());
    if (log.length > 200) log.shift();
  };
  driver.stdout.on('data', keep);
  driver.stderr.on('data', keep);
  const exited = new Promise((_, fail) => driver.on('exit', (code) => fail(new Error(`geckodriver exited with ${code}`))));
  exited.catch(() => {});
  const base = `http://127.0.0.1:${port}`;
  const command = async (method, path, body) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) {
      throw new Error(`WebDriver ${method} ${path}: ${json.value?.error}: ${json.value?.message}\nfirefox said:\n${log.join('').slice(-4000)}`);
    }
    return json.value;
  };
  for (let i = 0; ; i += 1) {
    try {
      if ((await command('GET', '/status')).ready) break;
    } catch (error) {
      if (i > 100) throw new Error(`geckodriver never answered on ${base}: ${error.message}`);
    }
    await Promise.race([new Promise((r) => setTimeout(r, 100)), exited]);
  }
  let session;
  try {
    session = await command('POST', '/session', {
      capabilities: {
        alwaysMatch: {
          browserName: 'firefox',
          'moz:firefoxOptions': {
            binary: process.env.FIREFOX ?? '/usr/bin/firefox-esr',
            args: ['-headless', '-width', '1200', '-height', '900'],
            // No network of its own: updates, telemetry and the like stay off.
            prefs: { 'app.update.enabled': false, 'datareporting.policy.dataSubmissionEnabled': false },
          },
        },
      },
    });
  } catch (error) {
    driver.kill();
    throw error;
  }
  const id = session.sessionId;
  await command('POST', `/session/${id}/timeouts`, { script: 600_000, pageLoad: 60_000 });
  return {
    name: 'firefox',
    errors: [],
    goto: (url) => command('POST', `/session/${id}/url`, { url }),
    async evaluate(fn, arg) {
      const script = `const done = arguments[arguments.length - 1];
        Promise.resolve(arguments[0]).then(${fn}).then((value) => done({ value }), (e) => done({ error: String(e && e.stack || e) }));`;
      const out = await command('POST', `/session/${id}/execute/async`, { script, args: [arg ?? null] });
      if (out.error) throw new Error(out.error);
      return out.value;
    },
    async screenshot(path) {
      const png = await command('GET', `/session/${id}/moz/screenshot/full`);
      const { writeFile } = await import('node:fs/promises');
      await writeFile(path, Buffer.from(png, 'base64'));
    },
    async close() {
      await command('DELETE', `/session/${id}`).catch(() => {});
      driver.kill();
    },
  };
}
