// The dashboard page: one push channel (server-sent events at /stream), everything drawn from what
// it brings. The server reads the run folder (orchestrator/dashboard_feed.py); this file only shows it.
'use strict';

const token = new URLSearchParams(location.search).get('token') || '';
const withToken = (path, extra = '') => `${path}?token=${encodeURIComponent(token)}${extra}`;
const FOCUS_AGAIN_MS = 4000; // the server forgets an enlarged tab after 10 s unasked
const $ = (id) => document.getElementById(id);

const view = { status: null, curve: [], thumbs: {}, stage: null, canEnlarge: false, live: true, enlarged: null, ended: false };
const cards = new Map(); // tab number -> its elements

function number(value, digits = 0) {
  return Number.isFinite(value) ? value.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–';
}

function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  seconds = Math.round(seconds);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, '0')} s`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')} min`;
}

function clock(time) {
  return new Date(time * 1000).toLocaleTimeString('en-GB');
}

// ---- the run ------------------------------------------------------------------------------
function showRun() {
  const s = view.status;
  if (!s) return;
  $('run').textContent = `run ${s.run_id || '?'} · ${s.command || ''} · ${s.state || '?'}`;
  $('run').dataset.state = s.state || '';
  const target = s.target_timesteps;
  const steps = s.timesteps || 0;
  const share = target ? Math.min(steps / target, 1) : 0;
  $('bar').style.width = `${(100 * share).toFixed(1)}%`;
  $('percent').textContent = target ? `${Math.floor(100 * share)} %` : '';
  const fps = s.fps || 0;
  const eta = target && fps > 0 && steps < target ? (target - steps) / fps : null;
  const task = s.task || {};
  const figures = [
    ['steps', target ? `${number(steps)} / ${number(target)}` : number(steps)],
    ['speed', `${number(fps)} steps/s`],
    ['ETA', s.state === 'running' ? duration(eta) : '–'],
    ['elapsed', duration(s.elapsed_s)],
    ['stage', view.stage ?? '–'],
    ['mean reward', Number.isFinite(task.mean_reward) ? number(task.mean_reward, 1) : '–'],
    ['tabs', `${(s.tabs || []).length}`],
    ['Chromium PSS', `${number(s.chromium_pss_mb)} MB`],
    ['machine CPU', `${number((s.system || {}).cpu_percent)} %`],
  ];
  $('figures').replaceChildren(...figures.map(([name, value]) => {
    const figure = document.createElement('span');
    figure.className = 'figure';
    figure.append(name + ' ', Object.assign(document.createElement('b'), { textContent: value }));
    figure.dataset.figure = name;
    return figure;
  }));
  $('task').textContent = s.task ? taskLine(s.task) : '';
  const warnings = [...(s.warnings || [])];
  if ((s.reward_gaming || {}).gaming) warnings.unshift(s.reward_gaming.message);
  if (s.error) warnings.unshift(s.error);
  $('warnings').replaceChildren(...warnings.map((text) => Object.assign(document.createElement('li'), { textContent: text })));
  showCards(s.tabs || []);
}

function taskLine(task) {
  const share = (key) => (Number.isFinite(task[key]) ? `${Math.round(100 * task[key])} %` : '–');
  return `last ${task.episodes || 0} episodes: orb collected ${share('orb_collected')} · deposited ${share('orb_deposited')} · ` +
    `collided ${share('collided')} · ended early ${share('ended_early')} · mean length ${number(task.mean_length)}`;
}

// ---- the tabs -----------------------------------------------------------------------------
function makeCard(tab) {
  const card = document.createElement('article');
  card.className = 'card';
  card.dataset.tab = tab;
  card.innerHTML = `<div class="thumb"><img alt="tab ${tab}" hidden /><span class="no-picture">no picture yet</span></div>
    <div class="head"><b>tab ${tab}</b> <span class="port"></span> <span class="state"></span></div>
    <div class="facts"></div><div class="failure"></div>`;
  card.addEventListener('click', () => enlarge(tab));
  $('cards').append(card);
  const parts = { card, img: card.querySelector('img'), noPicture: card.querySelector('.no-picture'), port: card.querySelector('.port'),
    state: card.querySelector('.state'), facts: card.querySelector('.facts'), failure: card.querySelector('.failure'), version: null,
    eventTime: 0 };
  cards.set(tab, parts);
  return parts;
}

function showCards(rows) {
  const sampled = view.status.updated || view.status.time || 0;
  for (const row of rows) {
    const parts = cards.get(row.tab) || makeCard(row.tab);
    parts.port.textContent = row.host ? `host ${row.host} · port ${row.port}` : `port ${row.port}`;
    if (!(parts.eventTime > sampled)) {
      parts.state.textContent = row.state;
      parts.card.dataset.state = row.state;
    }
    parts.facts.textContent = `${number(row.steps_per_s, 1)} steps/s · ${row.restarts} restarts · CPU ${number(row.cpu_percent)} % · PSS ${number(row.pss_mb)} MB`;
    parts.failure.textContent = row.last_failure ? `last failure: ${row.last_failure}` : '';
  }
  $('tabs-note').textContent = view.canEnlarge ? '(click a tab for a live view)' : '';
  showThumbs();
}

function showThumbs() {
  for (const [tab, version] of Object.entries(view.thumbs)) {
    const parts = cards.get(Number(tab));
    if (!parts || parts.version === version) continue;
    parts.version = version;
    parts.img.src = withToken(`files/thumbnails/tab-${tab}.jpg`, `&v=${version}`);
    parts.img.hidden = false;
    parts.noPicture.hidden = true;
  }
  if (view.enlarged !== null && view.thumbs[view.enlarged] !== undefined) {
    $('enlarged-img').src = withToken(`files/thumbnails/tab-${view.enlarged}.jpg`, `&v=${view.thumbs[view.enlarged]}`);
  }
}

function enlarge(tab) {
  view.enlarged = tab;
  $('enlarged-title').textContent = `tab ${tab}`;
  $('enlarged-note').textContent = view.canEnlarge && !view.ended ? 'live, a few frames a second' : 'its latest picture';
  $('enlarged').showModal();
  showThumbs();
  askFocus();
}

function askFocus() {
  if (!view.canEnlarge || view.ended) return;
  fetch(withToken('focus'), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ tab: view.enlarged }) })
    .catch(() => {}); // the run may have just ended
}

$('close').addEventListener('click', () => $('enlarged').close());
$('enlarged').addEventListener('close', () => {
  view.enlarged = null;
  askFocus();
});
setInterval(() => { if (view.enlarged !== null) askFocus(); }, FOCUS_AGAIN_MS);

// ---- events and curves --------------------------------------------------------------------
// Between two samples (status.json, every --monitor-interval), a tab's failure and its recovery are
// events: its card says so at once. A sample taken after the tab's latest such event has the last word.
const STATE_AFTER = { tab_frozen: 'frozen', tab_failed: 'replacing', tab_recovered: 'stepping' };

function noteTabEvent(event) {
  const parts = cards.get(event.tab);
  if (!parts || !(event.kind in STATE_AFTER)) return;
  parts.eventTime = event.time;
  parts.state.textContent = STATE_AFTER[event.kind];
  parts.card.dataset.state = STATE_AFTER[event.kind];
}

function addEvents(events) {
  const list = $('events');
  for (const event of events) {
    noteTabEvent(event);
    const item = document.createElement('li');
    item.dataset.kind = event.kind;
    item.textContent = `${clock(event.time)}  ${event.text}`;
    list.prepend(item);
  }
  if (view.status) showCards(view.status.tabs || []);
  while (list.children.length > 300) list.lastChild.remove();
}

function showCurves() {
  lineChart($('reward-chart'), view.curve.map((p) => [p.steps, p.reward]), '#6cc3ff');
  lineChart($('speed-chart'), view.curve.map((p) => [p.steps, p.fps]), '#ffc35c');
}

// ---- the push channel ---------------------------------------------------------------------
function setLink(state, text) {
  $('link').dataset.state = state;
  $('link').textContent = text;
}

function connect() {
  const source = new EventSource(withToken('stream'));
  const on = (kind, handler) => source.addEventListener(kind, (message) => handler(JSON.parse(message.data)));
  on('hello', (hello) => {
    Object.assign(view, { status: hello.status, curve: hello.curve, thumbs: hello.thumbs, stage: hello.stage,
      canEnlarge: hello.can_enlarge, live: hello.live });
    $('events').replaceChildren();
    addEvents(hello.events);
    setLink('live', hello.live ? 'live' : 'from the run folder');
    showRun();
    showCurves();
  });
  on('status', (status) => { view.status = status; showRun(); });
  on('events', addEvents);
  on('curve', (points) => { view.curve.push(...points); showCurves(); });
  on('stage', (stage) => { view.stage = stage; showRun(); });
  on('thumbs', (thumbs) => { Object.assign(view.thumbs, thumbs); showThumbs(); });
  on('end', (end) => {
    view.ended = true;
    source.close();
    for (const [tab, picture] of Object.entries(end.pictures || {})) {
      const parts = cards.get(Number(tab));
      if (!parts) continue;
      parts.img.src = picture;
      parts.img.hidden = false;
      parts.noPicture.hidden = true;
      if (view.enlarged === Number(tab)) $('enlarged-img').src = picture;
    }
    setLink('ended', 'run ended');
    const banner = $('banner');
    banner.textContent = `The run has ended; this is its final state. 'lunarfleet dashboard ${view.status ? view.status.run_dir || '' : ''}' shows it again.`;
    banner.hidden = false;
  });
  source.onopen = () => setLink('live', view.live ? 'live' : 'from the run folder');
  source.onerror = () => { if (!view.ended) setLink('lost', 'reconnecting…'); };
}

connect();
