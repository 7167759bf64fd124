// edgefl live dashboard: polls api/state every second, keeps the round
// records (fetching only the rounds it lacks), and redraws the header, the
// cards, the SVG charts and the table. Data only ever reaches the page through
// textContent and SVG attributes, never as markup.
'use strict';
(function () {
  const POLL_MS = 1000, TIMEOUT_MS = 4000, MAX_BARS = 90, MAX_POINTS = 1200, TABLE_ROWS = 15;
  const NS = 'http://www.w3.org/2000/svg';
  const C = { blue: '#0072B2', orange: '#E69F00', green: '#009E73', verm: '#D55E00',
              purple: '#CC79A7', sky: '#56B4E9', gray: '#a0a7b0' };
  const $ = (id) => document.getElementById(id);

  const S = { instance: null, seq: -1, status: null, recs: [], max: 100000, lastOk: 0, fails: 0 };

  // ---- formatting ----------------------------------------------------------
  const num = (v) => typeof v === 'number' && isFinite(v);
  const fmtInt = (v) => num(v) ? Math.round(v).toLocaleString('en-US') : '\u2014';
  function fmtSig(v, d) {
    if (!num(v)) return '\u2014';
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return Number(v.toPrecision(d || 3)).toExponential().replace('e+', 'e');
    return String(Number(v.toPrecision(d || 4)));
  }
  const fmtPct = (v, d) => num(v) ? (v * 100).toFixed(d === undefined ? 1 : d) + ' %' : '\u2014';
  function fmtBytes(v) {
    if (!num(v)) return '\u2014';
    const u = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(Math.abs(v) < 10 ? 2 : Math.abs(v) < 100 ? 1 : 0)) + ' ' + u[i];
  }
  // Axis labels: as short as the tick values allow.
  function axisBytes(v) {
    if (v === 0) return '0';
    const u = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return Number(v.toPrecision(3)) + ' ' + u[i];
  }
  function axisSeconds(v) {
    if (v === 0) return '0';
    if (v < 1) return Number((v * 1000).toPrecision(3)) + ' ms';
    return Number(v.toPrecision(3)) + ' s';
  }
  function fmtDuration(s) {
    if (!num(s)) return '\u2014';
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + ' ms';
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (d > 0) return d + ' d ' + (h % 24) + ' h';
    if (h > 0) return h + ' h ' + String(m % 60).padStart(2, '0') + ' min';
    return m + ' min ' + String(Math.floor(s % 60)).padStart(2, '0') + ' s';
  }
  const setText = (id, t) => { const e = $(id); if (e.textContent !== t) e.textContent = t; };

  // ---- data ------------------------------------------------------------------
  // The newest record where `key` was measured.
  function latest(key) {
    for (let i = S.recs.length - 1; i >= 0; i--) if (num(S.recs[i][key])) return S.recs[i];
    return null;
  }

  function merge(j) {
    const recs = j.records || [];
    if (recs.length) {
      const first = recs[0].round;
      let keep = S.recs.length;
      while (keep > 0 && S.recs[keep - 1].round >= first) keep--;
      S.recs.length = keep;
      for (const r of recs) S.recs.push(r);
    }
    if (j.history && num(j.history.max)) S.max = j.history.max;
    if (S.recs.length > S.max) S.recs.splice(0, S.recs.length - S.max);
  }

  async function poll() {
    const since = S.recs.length ? S.recs[S.recs.length - 1].round : 0;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    let again = POLL_MS;
    try {
      const resp = await fetch('api/state?since=' + since, { cache: 'no-store', signal: ctl.signal });
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      const j = await resp.json();
      if (j.instance !== S.instance) {
        // a new server (or a restart): forget everything and fetch it all
        const wasKnown = S.instance !== null;
        S.instance = j.instance; S.recs = []; S.seq = -1;
        if (wasKnown && since > 0) { again = 0; return; }
      }
      merge(j);
      S.status = j.status;
      S.lastOk = Date.now(); S.fails = 0;
      setConn(true);
      setText('foot-version', 'edgefl ' + j.edgefl);
      if (j.seq !== S.seq) { S.seq = j.seq; render(); }
      else renderClock();
    } catch (e) {
      S.fails++;
      setConn(false, e);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, again);
    }
  }

  function setConn(ok, err) {
    const b = $('conn');
    b.classList.toggle('live', ok);
    b.classList.toggle('down', !ok);
    b.classList.remove('wait');
    document.body.classList.toggle('stale', !ok);
    if (ok) {
      setText('conn-text', 'live');
      b.title = 'updated ' + new Date(S.lastOk).toLocaleTimeString();
      setText('foot-updated', 'last update ' + new Date(S.lastOk).toLocaleTimeString());
    } else {
      setText('conn-text', 'disconnected');
      const why = err && err.name === 'AbortError' ? 'no answer within ' + TIMEOUT_MS / 1000 + ' s' : String(err && err.message || err);
      b.title = 'polling api/state failed ' + S.fails + ' time(s): ' + why + '; retrying every second';
      setText('foot-updated', S.lastOk ? 'disconnected; last update ' + new Date(S.lastOk).toLocaleTimeString() : 'disconnected');
    }
  }

  // ---- header and cards --------------------------------------------------------
  function phaseClass(p) {
    p = p.toLowerCase();
    if (/abort|error|fail|stopp/.test(p)) return 'error';
    if (/done|finish|complete/.test(p)) return 'done';
    if (/secagg|secure|mask/.test(p)) return 'secure';
    if (/wait|start|idle|join/.test(p)) return 'wait';
    if (/train|aggregat|round|eval/.test(p)) return 'train';
    return '';
  }

  function renderClock() {
    const s = S.status;
    if (!s) return;
    setText('uptime', num(s.uptime_s) ? 'up ' + fmtDuration(s.uptime_s) : '');
  }

  function render() {
    const s = S.status;
    const job = s.job || 'unnamed job';
    setText('job', job);
    document.title = (s.job ? s.job + ' \u00b7 ' : '') + 'round ' + s.round + ' \u00b7 edgefl';
    const ph = $('phase');
    setText('phase', s.phase || '\u2014');
    ph.className = 'phase ' + phaseClass(s.phase || '');

    const roundEl = $('round');
    roundEl.dataset.round = String(s.round);
    setText('round', s.rounds > 0 ? 'Round ' + s.round + ' / ' + s.rounds : 'Round ' + s.round);
    const frac = s.rounds > 0 ? Math.min(1, s.round / s.rounds) : 0;
    $('round-bar').style.width = (frac * 100).toFixed(1) + '%';
    const last = S.recs.length ? S.recs[S.recs.length - 1] : null;
    let sub = s.rounds > 0 ? Math.round(frac * 100) + ' % of ' + s.rounds + ' rounds' : 'open-ended run';
    const timed = latest('wall_s');
    if (timed) sub += ' \u00b7 round ' + timed.round + ' took ' + fmtDuration(timed.wall_s);
    setText('round-sub', sub);
    setText('hero-note', last && last.note ? 'round ' + last.round + ': ' + last.note : '');

    setText('c-participants', fmtInt(s.participants));
    setText('c-participants-sub', s.round > 0 ? 'in round ' + s.round : 'no round yet');
    setText('c-online', fmtInt(s.clients_online));
    setText('c-online-sub', 'of ' + fmtInt(s.clients_known) + ' known');
    setText('c-received', fmtInt(s.updates_received));
    setText('c-received-sub', last ? '+' + fmtInt(last.completed) + ' in round ' + last.round : '');
    setText('c-rejected', fmtInt(s.updates_rejected));
    const tot = s.updates_received + s.updates_rejected;
    setText('c-rejected-sub', s.updates_rejected > 0 ? fmtPct(s.updates_rejected / tot) + ' of all' : 'none');
    $('card-rejected').classList.toggle('alert', s.updates_rejected > 0);
    const acc = latest('test_accuracy');
    setText('c-acc', acc ? fmtPct(acc.test_accuracy, 2) : '\u2014');
    setText('c-acc-sub', acc ? 'in round ' + acc.round : 'not evaluated yet');
    setText('c-up', fmtBytes(s.bytes_up));
    setText('c-up-sub', last ? fmtBytes(last.bytes_up) + ' in round ' + last.round : 'clients \u2192 server');
    setText('c-down', fmtBytes(s.bytes_down));
    setText('c-down-sub', last ? fmtBytes(last.bytes_down) + ' in round ' + last.round : 'server \u2192 clients');
    if (num(s.epsilon)) {
      setText('c-eps', '\u03b5 = ' + fmtSig(s.epsilon, 3));
      setText('c-eps-sub', num(s.delta) ? '\u03b4 = ' + fmtSig(s.delta, 2) : '');
    } else {
      setText('c-eps', 'no DP');
      setText('c-eps-sub', 'differential privacy off');
    }
    renderClock();

    drawLines($('ch-acc'), {
      series: [{ key: 'test_accuracy', name: 'test (central)', color: C.blue },
               { key: 'fed_accuracy', name: 'federated', color: C.orange, dash: '6 4' }],
      fmt: (v) => fmtPct(v, 1), axis: (v) => (v * 100).toFixed(0) + '%',
      empty: 'No accuracy measured yet.' });
    drawLines($('ch-loss'), {
      series: [{ key: 'train_loss', name: 'train', color: C.green },
               { key: 'test_loss', name: 'test', color: C.blue },
               { key: 'fed_loss', name: 'federated', color: C.orange, dash: '6 4' }],
      fmt: (v) => fmtSig(v), axis: (v) => fmtSig(v, 3), empty: 'No loss measured yet.' });
    drawBars($('ch-clients'), {
      series: [{ key: 'completed', name: 'completed', color: C.green },
               { key: 'late', name: 'late', color: C.orange },
               { key: 'dropped', name: 'dropped', color: C.verm }],
      stacked: true, fmt: (v) => fmtSig(v, 3), axis: (v) => fmtSig(v, 3),
      extra: [{ key: 'selected', name: 'selected' }, { key: 'rejected', name: 'rejected messages' }],
      empty: 'No round has finished yet.' });
    drawBars($('ch-bytes'), {
      series: [{ key: 'bytes_up', name: 'up (clients \u2192 server)', color: C.blue },
               { key: 'bytes_down', name: 'down', color: C.sky }],
      stacked: false, fmt: fmtBytes, axis: axisBytes, empty: 'No round has finished yet.' });
    drawLines($('ch-eps'), {
      series: [{ key: 'epsilon', name: '\u03b5 spent', color: C.purple }],
      fmt: (v) => fmtSig(v, 4), axis: (v) => fmtSig(v, 3), zero: true,
      empty: num(s.epsilon) ? 'No round has finished yet.' : 'Differential privacy is off for this run.' });
    drawBars($('ch-time'), {
      series: [{ key: 'wall_s', name: 'wall clock', color: C.gray }],
      stacked: false, fmt: fmtDuration, axis: axisSeconds, empty: 'No timed round yet.' });
    renderTable();
  }

  // ---- charts --------------------------------------------------------------------
  // Chart size in SVG units = its size on screen in CSS pixels, so the text
  // keeps its size on a phone and on a wide monitor; set by size() per chart.
  const M = { l: 58, r: 12, t: 10, b: 28 };
  let W = 560, H = 236, PW = W - M.l - M.r, PH = H - M.t - M.b;
  function size(svg) {
    const w = svg.parentNode.clientWidth;
    W = Math.round(Math.min(1100, Math.max(300, w || 560)));
    H = Math.round(Math.min(260, Math.max(200, W * 0.42)));
    PW = W - M.l - M.r; PH = H - M.t - M.b;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('width', W);
    svg.setAttribute('height', H);
  }

  function mk(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function niceStep(range, n) {
    const raw = range / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
  }
  // Ticks covering [lo, hi], about n of them, domain snapped to ticks.
  function ticks(lo, hi, n, integer) {
    if (!(hi > lo)) { const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1; lo -= pad; hi += pad; }
    let step = niceStep(hi - lo, n);
    if (integer) step = Math.max(1, Math.round(step));
    const a = Math.floor(lo / step + 1e-9) * step, b = Math.ceil(hi / step - 1e-9) * step;
    const out = [];
    for (let v = a; v <= b + step * 1e-6; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
    return out;
  }
  // About n integer ticks inside [lo, hi] (round numbers on the x axis).
  function intTicks(lo, hi, n) {
    if (hi <= lo) return [lo];
    const step = Math.max(1, Math.round(niceStep(hi - lo, n)));
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
    return out;
  }

  function legend(fig, series, box) {
    const lg = fig.querySelector('.legend');
    lg.textContent = '';
    for (const s of series) {
      const it = document.createElement('span');
      const sw = document.createElement('span');
      sw.className = box ? 'sw box' : 'sw';
      sw.style.background = s.color;
      it.appendChild(sw);
      it.appendChild(document.createTextNode(s.name));
      lg.appendChild(it);
    }
  }

  function frame(svg, yt, yOf, axisFmt) {
    for (const v of yt) {
      const y = yOf(v);
      mk('line', { x1: M.l, x2: W - M.r, y1: y, y2: y, class: 'grid' }, svg);
      const t = mk('text', { x: M.l - 7, y: y + 3.5, 'text-anchor': 'end' }, svg);
      t.textContent = axisFmt(v);
    }
    mk('line', { x1: M.l, x2: W - M.r, y1: M.t + PH, y2: M.t + PH, class: 'axis' }, svg);
  }

  function xLabel(svg, x, text) {
    const t = mk('text', { x: x, y: H - 9, 'text-anchor': 'middle' }, svg);
    t.textContent = text;
  }

  function setEmpty(fig, msg) {
    fig.classList.toggle('nodata', !!msg);
    fig.querySelector('.msg').textContent = msg || '';
  }

  // Hover: a guide line and a tooltip for the column under the pointer.
  function hover(fig, svg, columns, colX, describe) {
    const tip = fig.querySelector('.tip');
    const guide = mk('line', { y1: M.t, y2: M.t + PH, class: 'guide', visibility: 'hidden' }, svg);
    const hit = mk('rect', { x: M.l, y: M.t, width: PW, height: PH, fill: 'transparent' }, svg);
    const hide = () => { tip.hidden = true; guide.setAttribute('visibility', 'hidden'); };
    hit.addEventListener('mouseleave', hide);
    hit.addEventListener('mousemove', (ev) => {
      const box = svg.getBoundingClientRect();
      const sx = (ev.clientX - box.left) * W / box.width;
      let best = -1, bd = Infinity;
      // columns are sorted by x: binary search, then check the neighbour
      let lo = 0, hi = columns - 1;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (colX(mid) < sx) lo = mid + 1; else hi = mid; }
      for (const i of [lo - 1, lo]) if (i >= 0 && i < columns && Math.abs(colX(i) - sx) < bd) { bd = Math.abs(colX(i) - sx); best = i; }
      if (best < 0) return hide();
      const x = colX(best);
      guide.setAttribute('x1', x); guide.setAttribute('x2', x); guide.setAttribute('visibility', 'visible');
      const d = describe(best);
      tip.textContent = '';
      const h = document.createElement('div'); h.className = 'h'; h.textContent = d.title; tip.appendChild(h);
      for (const r of d.rows) {
        const row = document.createElement('div'); row.className = 'row';
        const sw = document.createElement('span'); sw.className = 'sw box';
        if (r.color) sw.style.background = r.color; else sw.style.visibility = 'hidden';
        const name = document.createElement('span'); name.textContent = r.name;
        const val = document.createElement('b'); val.textContent = r.value;
        row.append(sw, name, val); tip.appendChild(row);
      }
      tip.hidden = false;
      const px = x * box.width / W, tw = tip.offsetWidth;
      tip.style.left = Math.max(0, Math.min(box.width - tw, px + (px + tw + 16 > box.width ? -tw - 12 : 12))) + 'px';
    });
  }

  // Keeps at most MAX_POINTS points: the first and last of each bucket plus
  // its minimum and maximum, so spikes survive.
  function decimate(pts) {
    if (pts.length <= MAX_POINTS) return pts;
    const per = Math.ceil(pts.length / (MAX_POINTS / 4)), out = [];
    for (let i = 0; i < pts.length; i += per) {
      const b = pts.slice(i, i + per);
      let mn = b[0], mx = b[0];
      for (const p of b) { if (p[1] < mn[1]) mn = p; if (p[1] > mx[1]) mx = p; }
      const keep = [b[0], mn, mx, b[b.length - 1]].sort((a, c) => a[0] - c[0]);
      for (const p of keep) if (out[out.length - 1] !== p) out.push(p);
    }
    return out;
  }

  function drawLines(fig, o) {
    const svg = fig.querySelector('svg');
    svg.textContent = '';
    size(svg);
    const rs = S.recs;
    const data = o.series.map((s) => { const p = []; for (const r of rs) if (num(r[s.key])) p.push([r.round, r[s.key]]); return p; });
    legend(fig, o.series.filter((s, k) => data[k].length), false);
    const all = data.flat();
    if (!all.length) {
      setEmpty(fig, o.empty);
      frame(svg, [0, 0.5, 1], (v) => M.t + PH - v * PH, () => '');
      return;
    }
    setEmpty(fig, null);
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const [x, y] of all) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    if (o.zero) y0 = Math.min(0, y0);
    const xt = intTicks(x0, x1, 7);
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    else { const pad = (x1 - x0) * 0.015; x0 -= pad; x1 += pad; } // markers clear of the axes
    const yt = ticks(y0, y1, 5);
    const ya = yt[0], yb = yt[yt.length - 1];
    const X = (x) => M.l + (x - x0) / (x1 - x0) * PW, Y = (y) => M.t + PH - (y - ya) / (yb - ya) * PH;
    frame(svg, yt, Y, o.axis);
    for (const v of xt) xLabel(svg, X(v), String(v));
    o.series.forEach((s, k) => {
      const pts = decimate(data[k]);
      if (!pts.length) return;
      const d = pts.map((p, i) => (i ? 'L' : 'M') + X(p[0]).toFixed(1) + ' ' + Y(p[1]).toFixed(1)).join('');
      const attrs = { d: d, fill: 'none', stroke: s.color, 'stroke-width': 2, 'stroke-linejoin': 'round', 'stroke-linecap': 'round' };
      if (s.dash) attrs['stroke-dasharray'] = s.dash;
      mk('path', attrs, svg);
      if (data[k].length <= 40)
        for (const p of data[k]) mk('circle', { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.8, fill: s.color }, svg);
    });
    fig.dataset.points = String(all.length);
    // hover over the rounds that have a value in any series
    const cols = rs.filter((r) => o.series.some((s) => num(r[s.key])));
    hover(fig, svg, cols.length, (i) => X(cols[i].round), (i) => ({
      title: 'Round ' + cols[i].round,
      rows: o.series.filter((s) => num(cols[i][s.key])).map((s) => ({ name: s.name, color: s.color, value: o.fmt(cols[i][s.key]) })),
    }));
  }

  function drawBars(fig, o) {
    const svg = fig.querySelector('svg');
    svg.textContent = '';
    size(svg);
    const rs = S.recs.filter((r) => o.series.some((s) => num(r[s.key])));
    legend(fig, o.series.filter((s) => rs.some((r) => num(r[s.key]))), true);
    if (!rs.length) {
      setEmpty(fig, o.empty);
      frame(svg, [0, 0.5, 1], (v) => M.t + PH - v * PH, () => '');
      return;
    }
    setEmpty(fig, null);
    // more rounds than bars: each bar is the mean of a group of rounds
    const per = Math.ceil(rs.length / MAX_BARS), groups = [];
    for (let i = 0; i < rs.length; i += per) {
      const g = rs.slice(i, i + per), v = {};
      for (const s of o.series.concat(o.extra || [])) {
        let sum = 0, n = 0;
        for (const r of g) if (num(r[s.key])) { sum += r[s.key]; n++; }
        v[s.key] = n ? sum / n : NaN;
      }
      groups.push({ r0: g[0].round, r1: g[g.length - 1].round, v: v });
    }
    let top = 0;
    for (const g of groups) {
      if (o.stacked) top = Math.max(top, o.series.reduce((a, s) => a + (num(g.v[s.key]) ? g.v[s.key] : 0), 0));
      else for (const s of o.series) if (num(g.v[s.key])) top = Math.max(top, g.v[s.key]);
    }
    const yt = ticks(0, top > 0 ? top : 1, 5);
    const yb = yt[yt.length - 1];
    const Y = (y) => M.t + PH - y / yb * PH;
    frame(svg, yt, Y, o.axis);
    const band = PW / groups.length, gap = Math.min(band * 0.22, 6), bw = Math.min(band - gap, 44);
    const cx = (i) => M.l + band * (i + 0.5);
    groups.forEach((g, i) => {
      let acc = 0;
      o.series.forEach((s, k) => {
        const v = g.v[s.key];
        if (!num(v) || v <= 0) return;
        let x, w, y0, y1;
        if (o.stacked) { x = cx(i) - bw / 2; w = bw; y0 = acc; y1 = acc + v; acc = y1; }
        else { w = bw / o.series.length; x = cx(i) - bw / 2 + k * w; y0 = 0; y1 = v; }
        const h = Math.max(0.5, Y(y0) - Y(y1));
        mk('rect', { x: x.toFixed(2), y: (Y(y0) - h).toFixed(2), width: Math.max(0.6, w - (o.stacked ? 0 : 0.6)).toFixed(2), height: h.toFixed(2), fill: s.color, rx: Math.min(2, w / 4) }, svg);
      });
    });
    const lab = (g) => g.r0 === g.r1 ? String(g.r0) : g.r0 + '\u2013' + g.r1;
    // round numbers on the axis, each under the bar that holds it
    let gi = 0;
    for (const t of intTicks(groups[0].r0, groups[groups.length - 1].r1, 7)) {
      while (gi < groups.length - 1 && groups[gi].r1 < t) gi++;
      if (groups[gi].r0 <= t && t <= groups[gi].r1) xLabel(svg, cx(gi), String(t));
    }
    fig.dataset.points = String(rs.length);
    hover(fig, svg, groups.length, cx, (i) => {
      const g = groups[i];
      const rows = o.series.map((s) => ({ name: s.name, color: s.color, value: o.fmt(g.v[s.key]) }));
      for (const e of o.extra || []) if (num(g.v[e.key])) rows.push({ name: e.name, value: o.fmt(g.v[e.key]) });
      return { title: (per === 1 ? 'Round ' : 'Rounds ') + lab(g) + (per === 1 ? '' : ' (mean)'), rows: rows };
    });
  }

  // ---- table ----------------------------------------------------------------------
  function renderTable() {
    const tb = document.querySelector('#rounds tbody');
    tb.textContent = '';
    $('rounds-empty').hidden = S.recs.length > 0;
    const n = S.recs.length;
    for (let i = n - 1; i >= Math.max(0, n - TABLE_ROWS); i--) {
      const r = S.recs[i];
      const tr = document.createElement('tr');
      const cell = (t, cls) => { const td = document.createElement('td'); td.textContent = t; if (cls) td.className = cls; tr.appendChild(td); };
      cell(String(r.round) + (r.aggregated ? '' : ' \u2717'));
      cell(fmtInt(r.completed) + ' / ' + fmtInt(r.selected));
      cell(fmtInt(r.late));
      cell(fmtInt(r.dropped));
      cell(fmtInt(r.rejected), r.rejected > 0 ? 'bad' : '');
      cell(fmtSig(r.train_loss));
      cell(num(r.test_accuracy) ? fmtPct(r.test_accuracy, 2) : '\u2014');
      cell(fmtSig(r.test_loss));
      cell(fmtBytes(r.bytes_up));
      cell(fmtBytes(r.bytes_down));
      cell(fmtSig(r.epsilon, 3));
      cell(fmtDuration(r.wall_s));
      cell(r.note || (r.aggregated ? '' : 'not aggregated'), 'left');
      if (!r.aggregated) tr.title = 'the global model did not change in this round';
      tb.appendChild(tr);
    }
  }

  // redraw at the new size when the window changes (after it settles)
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (S.status) render(); }, 150);
  });

  poll();
})();
