// The page's socket bridge: reads the URL, keeps one WebSocket to the Python side alive
// (reconnecting forever), answers every message synchronously from onmessage (lock-step),
// shows a status line and exposes window.lunarfleet for the browser pool.

import { DEFAULT_PORT, parseParams, socketUrl } from './params.js';
import { SimSession } from './protocol.js';
import { shouldDraw, startDrawing } from './draw.js';

const RETRY_MIN_MS = 250; // reconnect delay doubles from here ...
const RETRY_MAX_MS = 1000; // ... up to here, forever
const STATUS_INTERVAL_MS = 250;

const params = parseParams(location.search);
const session = new SimSession(params);
const link = { port: params.wsPort, socket: null, connected: false, retryMs: RETRY_MIN_MS };
let pendingStep = null; // realtime=1 only: latest step message, applied on the next frame

function connect() {
  let socket;
  try {
    socket = new WebSocket(socketUrl(link.port, params.token));
  } catch (error) {
    console.warn('lunarfleet: cannot open socket', error);
    scheduleReconnect();
    return;
  }
  link.socket = socket;
  socket.onopen = () => {
    link.connected = true;
    link.retryMs = RETRY_MIN_MS;
    socket.send(JSON.stringify(session.hello({ lockstep: !params.realtime })));
    socket.send(JSON.stringify(session.resetAll()));
  };
  socket.onmessage = (event) => onMessage(socket, event.data);
  // onerror is always followed by onclose; reconnecting from onclose alone avoids doubling up.
  socket.onclose = () => {
    if (link.socket !== socket) return;
    link.socket = null;
    link.connected = false;
    pendingStep = null;
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  setTimeout(connect, link.retryMs);
  link.retryMs = Math.min(RETRY_MAX_MS, link.retryMs * 2);
}

/** The step path: parse, step, reply, all inside this handler (no frames, no timers). */
function onMessage(socket, data) {
  if (typeof data !== 'string') return;
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    console.warn('lunarfleet: ignoring a malformed frame');
    return;
  }
  if (params.realtime && message && (message.type === 'action' || message.type === 'step_batch')) {
    pendingStep = message; // the original app's behaviour: latest action wins, one per frame
    return;
  }
  const reply = session.handle(message);
  if (reply !== null && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(reply));
}

/** realtime=1: apply at most one queued step per animation frame (~60 Hz), like the original. */
function realtimeFrame() {
  const socket = link.socket;
  if (pendingStep !== null && socket && socket.readyState === WebSocket.OPEN) {
    const reply = session.handle(pendingStep);
    pendingStep = null;
    if (reply !== null) socket.send(JSON.stringify(reply));
  }
  requestAnimationFrame(realtimeFrame);
}

/** Hooks for the browser pool (page.evaluate): fault injection and inspection. */
window.lunarfleet = {
  disconnect() {
    if (!link.socket) return false;
    link.socket.close(); // onclose reconnects
    return true;
  },
  sendGarbage() {
    const socket = link.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send('{"type": "state", "observation": [0.1, 0.2,'); // truncated JSON on purpose
    return true;
  },
  get steps() {
    return session.stepsAnswered;
  },
  get connected() {
    return link.connected;
  },
  get sims() {
    return session.size;
  },
  session, // for inspection from devtools
};

function statusText() {
  const lines = [];
  if (link.port === null) lines.push('Not connected. Click "Connect to Python" (port 8765).');
  else if (link.connected) lines.push(`Connected to Python on port ${link.port}`);
  else lines.push(`Disconnected, retrying port ${link.port}...`);
  if (session.parallel) {
    const { env_count: count, env_id: id } = session.parallel;
    lines.push(`Parallel Training: ${count} environments` + (id !== undefined ? ` (this is env ${id})` : ''));
  }
  if (session.checkpoint) {
    const { checkpoint_name: name, checkpoint_steps: steps } = session.checkpoint;
    lines.push(`Checkpoint: ${name}` + (steps !== undefined ? ` (${steps} steps)` : ''));
  }
  const sim = session.sims[0];
  lines.push(`Steps answered: ${session.stepsAnswered}`);
  lines.push(
    `Stage ${sim.stage}, seed ${sim.seed}, timescale ${sim.timescale}, max steps ${sim.maxSteps}, ` +
      `${session.size} sim${session.size > 1 ? 's' : ''}, ${params.realtime ? 'realtime (60 Hz)' : 'lock-step'}`,
  );
  return lines.join('\n');
}

function startStatus() {
  const element = document.getElementById('status');
  let shown = '';
  const update = () => {
    const text = statusText();
    if (text !== shown) element.textContent = shown = text;
  };
  update();
  setInterval(update, STATUS_INTERVAL_MS);
}

function start() {
  const button = document.getElementById('connect');
  if (link.port !== null) {
    connect();
  } else {
    session.resetAll(); // a still rover to look at until someone connects
    button.hidden = false;
    button.addEventListener('click', () => {
      button.hidden = true;
      link.port = DEFAULT_PORT;
      connect();
    });
  }
  if (params.realtime) requestAnimationFrame(realtimeFrame);
  if (shouldDraw(params)) startDrawing(document.getElementById('arena'), () => session.sims[0]);
  startStatus();
}

start();
