// Drives the dashboard page in a running headless Chromium through the
// DevTools protocol (Node's built-in WebSocket, no packages) and proves that
// the page updates live, without a reload:
//   1. load the page: #round shows "Round R / 10" (the script ran and fetched
//      api/state), the charts and the table hold R rounds, the badge is "live"
//   2. tell the server to finish a round: the same document (a marker set in
//      step 1 survives) shows round R+1 within a few seconds
//   3. change the phase: the phase pill follows
//   4. stop the server: the badge turns "disconnected"
// No script exception, console error or CSP violation may occur before step 4.
// usage: node [--experimental-websocket] dashboard_live.js DEVTOOLS_PORT PAGE_URL CONTROL_FIFO ROUND
//   ROUND: the round the dashboard_demo server shows now (it has run rounds 1..ROUND)
'use strict';
const fs = require('fs');
const http = require('http');

const [devPort, pageUrl, fifo, roundArg] = process.argv.slice(2);
const R = parseInt(roundArg, 10);
if (!(R > 0)) { console.error('usage: dashboard_live.js DEVTOOLS_PORT PAGE_URL CONTROL_FIFO ROUND'); process.exit(2); }

const overall = setTimeout(() => { console.error('FAIL: dashboard_live.js timed out'); process.exit(1); }, 60000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function devtools(method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: devPort, path: path, method: method, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => { try { resolve(JSON.parse(body)); } catch (e) { reject(new Error(path + ': ' + body)); } });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

let ws, nextId = 1;
const pending = new Map();
const problems = [];
let watching = true; // collect errors until the server is stopped on purpose

function send(method, params) {
  const id = nextId++;
  ws.send(JSON.stringify({ id: id, method: method, params: params || {} }));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { pending.delete(id); reject(new Error(method + ': no answer')); }, 10000);
    pending.set(id, (m) => { clearTimeout(t); if (m.error) reject(new Error(method + ': ' + m.error.message)); else resolve(m.result); });
  });
}

async function evaluate(expr) {
  const r = await send('Runtime.evaluate', { expression: expr, returnByValue: true });
  if (r.exceptionDetails) throw new Error('evaluate ' + expr + ': ' + JSON.stringify(r.exceptionDetails));
  return r.result.value;
}

// Polls `expr` until it is truthy; returns its value or throws after `ms`.
async function waitFor(what, expr, ms) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    last = await evaluate(expr);
    if (last) return { value: last, ms: Date.now() - t0 };
    await sleep(100);
  }
  throw new Error('waited ' + ms + ' ms for ' + what + ' (last: ' + JSON.stringify(last) + ')');
}

function control(line) { fs.appendFileSync(fifo, line + '\n'); }

const SNAP = `(() => {
  const q = (s) => document.querySelector(s);
  return {
    round: q('#round').dataset.round, roundText: q('#round').textContent,
    conn: q('#conn-text').textContent, connClass: q('#conn').className,
    phase: q('#phase').textContent, phaseClass: q('#phase').className,
    job: q('#job').textContent, participants: q('#c-participants').textContent,
    received: q('#c-received').textContent, eps: q('#c-eps').textContent,
    accPoints: q('#ch-acc').dataset.points, accPaths: q('#ch-acc svg').querySelectorAll('path').length,
    clientBars: q('#ch-clients svg').querySelectorAll('rect').length,
    rows: q('#rounds tbody').children.length, probe: window.__edgeflProbe || 0,
  };
})()`;

let checks = 0, fails = 0;
function check(cond, msg) { checks++; if (!cond) { fails++; console.error('FAIL: ' + msg); } }

async function main() {
  if (typeof WebSocket !== 'function') { console.error('SKIP: this node has no WebSocket'); process.exit(77); }
  const target = await devtools('PUT', '/json/new?about:blank');
  ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('websocket to DevTools failed')); });
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.id && pending.has(m.id)) { const f = pending.get(m.id); pending.delete(m.id); f(m); return; }
    if (!watching) return;
    if (m.method === 'Runtime.exceptionThrown') problems.push('exception: ' + JSON.stringify(m.params.exceptionDetails).slice(0, 400));
    if (m.method === 'Runtime.consoleAPICalled' && (m.params.type === 'error' || m.params.type === 'warning'))
      problems.push('console.' + m.params.type + ': ' + JSON.stringify(m.params.args).slice(0, 400));
    if (m.method === 'Log.entryAdded' && (m.params.entry.level === 'error' || m.params.entry.level === 'warning'))
      problems.push('log ' + m.params.entry.level + ': ' + m.params.entry.text);
  };
  await send('Runtime.enable');
  await send('Log.enable');
  await send('Page.enable');
  await send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
  await send('Page.navigate', { url: pageUrl });

  // 1. first load
  const w3 = await waitFor('round ' + R, `(() => { const e = document.getElementById('round'); return e && e.dataset.round === '${R}' && e.textContent; })()`, 15000);
  console.log('page shows "' + w3.value + '" ' + w3.ms + ' ms after navigation');
  await sleep(300); // let the render settle
  let s = await evaluate(SNAP);
  check(s.roundText === 'Round ' + R + ' / 10', 'round text ' + JSON.stringify(s.roundText));
  check(s.conn === 'live' && /\blive\b/.test(s.connClass), 'badge ' + s.conn + ' / ' + s.connClass);
  check(s.job.startsWith('demo'), 'job ' + JSON.stringify(s.job));
  check(s.accPoints === String(R) && s.accPaths >= 1, 'accuracy chart: ' + s.accPoints + ' points, ' + s.accPaths + ' paths');
  check(s.clientBars >= R * 2, 'clients chart: ' + s.clientBars + ' rects');
  check(s.rows === R, 'table rows ' + s.rows);
  check(s.eps.startsWith('\u03b5 = '), 'epsilon card ' + JSON.stringify(s.eps));
  await evaluate('window.__edgeflProbe = 42');

  // 2. the server finishes round 4: the same document follows
  const tAdvance = Date.now();
  control('next');
  const w4 = await waitFor('round ' + (R + 1) + ' without reload', `(() => { const e = document.getElementById('round'); return e.dataset.round === '${R + 1}' && e.textContent; })()`, 8000);
  console.log('the same page shows "' + w4.value + '" ' + (Date.now() - tAdvance) + ' ms after the server moved on');
  await sleep(300);
  s = await evaluate(SNAP);
  check(s.probe === 42, 'the page was reloaded (marker lost)');
  check(s.roundText === 'Round ' + (R + 1) + ' / 10', 'round text after advance ' + JSON.stringify(s.roundText));
  check(s.accPoints === String(R + 1), 'accuracy chart after advance: ' + s.accPoints + ' points');
  check(s.rows === R + 1, 'table rows after advance ' + s.rows);

  // 3. phase
  control('phase secagg: unmasking');
  const wp = await waitFor('phase', `document.getElementById('phase').textContent === 'secagg: unmasking' && document.getElementById('phase').className`, 8000);
  check(/\bsecure\b/.test(wp.value), 'phase class ' + wp.value);

  // hover a chart: the tooltip names the round under the pointer
  const b = await evaluate(`(() => { const f = document.querySelector('#ch-acc svg'); f.scrollIntoView({ block: 'center' });
    const r = f.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()`);
  await send('Input.dispatchMouseEvent', { type: 'mouseMoved', x: b[0] + b[2] * 0.97, y: b[1] + b[3] * 0.5 });
  const tip = await waitFor('tooltip', `(() => { const t = document.querySelector('#ch-acc .tip'); return !t.hidden && t.textContent; })()`, 3000);
  check(tip.value.startsWith('Round ' + (R + 1)), 'tooltip ' + JSON.stringify(tip.value));

  check(problems.length === 0, 'page problems:\n  ' + problems.join('\n  '));

  // 4. the server goes away
  watching = false;
  control('stop');
  const wd = await waitFor('disconnected badge', `(() => { const b = document.getElementById('conn'); return b.classList.contains('down') && document.getElementById('conn-text').textContent; })()`, 8000);
  check(wd.value === 'disconnected', 'badge text ' + JSON.stringify(wd.value));
  s = await evaluate(SNAP);
  check(s.round === String(R + 1) && s.rows === R + 1, 'the last data stays on screen while disconnected');
  console.log('badge shows "' + wd.value + '" ' + wd.ms + ' ms after the server stopped');

  ws.close();
  clearTimeout(overall);
  console.log('dashboard_live: ' + (checks - fails) + ' of ' + checks + ' checks passed');
  process.exit(fails ? 1 : 0);
}

main().catch((e) => { console.error('FAIL: ' + (e && e.stack || e)); process.exit(1); });
