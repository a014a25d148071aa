#!/usr/bin/env node
// Opens the FlowSec live-flows page in headless Chromium and waits for a flow row that matches.
//
//   node tests/browser/live-flows.mjs URL [--process NAME] [--dst-port N] [--<data-attribute> VALUE]... [--timeout-ms N]
//
// Every --name VALUE is matched against the row attribute data-name (e.g. --src-ip, --dst-port,
// --node, --state); --process is short for --src-process. Prints the first matching row as JSON
// and exits 0, or exits 1 with what the page showed instead. playwright-core comes from ui/.

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const uiDir = fileURLToPath(new URL('../../ui/', import.meta.url));
if (!existsSync(join(uiDir, 'node_modules', 'playwright-core'))) {
  console.error(`live-flows: playwright-core is not installed; run \`npm ci\` in ${uiDir}`);
  process.exit(1);
}
const { chromium } = createRequire(join(uiDir, 'package.json'))('playwright-core');

function parseArgs(argv) {
  const [url, ...rest] = argv;
  if (!url || url.startsWith('--')) throw new Error('usage: live-flows.mjs URL [--process NAME] [--dst-port N] [--timeout-ms N]');
  const match = {};
  let timeoutMs = 15000;
  for (let i = 0; i < rest.length; i += 2) {
    const flag = rest[i];
    const value = rest[i + 1];
    if (!flag.startsWith('--') || value === undefined) throw new Error(`expected --name VALUE, got ${flag}`);
    const name = flag.slice(2);
    if (name === 'timeout-ms') timeoutMs = Number(value);
    else if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`bad attribute name ${name}`);
    else match[name === 'process' ? 'src-process' : name] = value;
  }
  if (Object.keys(match).length === 0) throw new Error('give at least one match, e.g. --process curl');
  return { url, match, timeoutMs };
}

let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(`live-flows: ${e.message}`);
  process.exit(1);
}

const profile = mkdtempSync(join(tmpdir(), 'flowsec-chromium-'));
let context;
let code = 1;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (['error', 'warning'].includes(m.type())) problems.push(`console ${m.type()}: ${m.text()}`); });
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`); });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));

  await page.goto(args.url, { timeout: args.timeoutMs });
  try {
    const handle = await page.waitForFunction((match) => {
      const rows = document.querySelectorAll('#flows tbody tr');
      for (const tr of rows) {
        if (Object.entries(match).every(([k, v]) => tr.getAttribute(`data-${k}`) === v)) {
          const data = {};
          for (const a of tr.attributes) if (a.name.startsWith('data-')) data[a.name.slice(5)] = a.value;
          return { data, cells: [...tr.cells].map((td) => td.textContent) };
        }
      }
      return null;
    }, args.match, { timeout: args.timeoutMs, polling: 100 });
    console.log(JSON.stringify(await handle.jsonValue()));
    code = 0;
  } catch (e) {
    const seen = await page.evaluate(() => ({
      status: document.getElementById('status')?.textContent,
      rows: [...document.querySelectorAll('#flows tbody tr')].slice(0, 5)
        .map((tr) => Object.fromEntries([...tr.attributes].map((a) => [a.name, a.value]))),
      rowCount: document.querySelectorAll('#flows tbody tr').length,
    })).catch(() => ({}));
    console.error(`live-flows: no row matching ${JSON.stringify(args.match)} within ${args.timeoutMs} ms ` +
      `(${e.message.split('\n')[0]}); status ${JSON.stringify(seen.status)}, ${seen.rowCount ?? 0} rows, first: ${JSON.stringify(seen.rows ?? [])}`);
    for (const p of problems) console.error(`live-flows: ${p}`);
  }
} catch (e) {
  console.error(`live-flows: ${e.message}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
