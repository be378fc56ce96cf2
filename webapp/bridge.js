// The page's socket bridge: reads the URL, keeps one WebSocket to the Python side alive
// (reconnecting forever, in the page or in a shared worker: socket_link.js), answers every
// message synchronously as it arrives (lock-step),
// shows a status line and exposes window.lunarfleet for the browser pool (and, for videos,
// frames of the canvas taken after each step: lunarfleet evaluate --video; a snapshot now and then:
// the dashboard).

import { DEFAULT_PORT, parseParams } from './params.js';
import { SimSession } from './protocol.js';
import { drawSim, shouldDraw, startDrawing } from './draw.js';
import { openLink } from './socket_link.js';

const STATUS_INTERVAL_MS = 250;
const MAX_RECORDED_FRAMES = 3000; // frames not taken by then are dropped, oldest first
const FRAME_REPLIES = new Set(['state', 'state_batch', 'reset_complete', 'reset_batch']);

const params = parseParams(location.search);
const session = new SimSession(params);
let link = null; // socket_link.js, once connecting
let pendingStep = null; // realtime=1 only: latest step message, applied on the next frame
// startRecording(): after every step or reset reply, simulation 0 is drawn and its canvas kept as
// [JPEG data URL, episode ended]; the Python side takes them with takeFrames(). Only then does
// drawing sit in the step path.
const recording = { on: false, frames: [], dropped: 0, quality: 0.9 };

function connect(port) {
  link = openLink({
    port,
    token: params.token,
    viaWorker: params.socket === 'worker',
    // lock-step: the worker answers the steps and this page replays them (onMirror)
    answer: params.realtime ? null : 'sim',
    pageSearch: location.search,
    onOpen() {
      if (link.answersInWorker) {
        session.resetAll(); // the worker said hello and reset its own session: replay the reset
        return;
      }
      link.send(JSON.stringify(session.hello({ lockstep: !params.realtime })));
      link.send(JSON.stringify(session.resetAll()));
    },
    onMessage,
    onMirror,
    onClose() {
      pendingStep = null;
    },
  });
}

/** Messages the worker answered: replayed here so that this session stays the worker's twin. */
function onMirror(messages) {
  for (const message of messages) {
    const reply = session.handle(message);
    if (reply !== null && recording.on) recordFrame(reply);
  }
}

/** The step path: parse, step, reply, all inside this handler (no frames, no timers). */
function onMessage(data) {
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
  if (reply !== null) link.send(JSON.stringify(reply));
  if (reply !== null && recording.on) recordFrame(reply);
}

/** One frame of simulation 0 after `reply` (a step or reset), with whether its episode ended. */
function recordFrame(reply) {
  if (!FRAME_REPLIES.has(reply.type)) return;
  const canvas = document.getElementById('arena');
  drawSim(canvas.getContext('2d'), session.sims[0]);
  const ended = reply.type === 'state' ? Boolean(reply.done) : reply.type === 'state_batch' ? Boolean(reply.dones[0]) : false;
  recording.frames.push([canvas.toDataURL('image/jpeg', recording.quality), ended]);
  if (recording.frames.length > MAX_RECORDED_FRAMES) {
    recording.frames.shift();
    recording.dropped += 1;
  }
}

/** realtime=1: apply at most one queued step per animation frame (~60 Hz), like the original. */
function realtimeFrame() {
  if (pendingStep !== null && link && link.connected) {
    const reply = session.handle(pendingStep);
    pendingStep = null;
    if (reply !== null) link.send(JSON.stringify(reply));
    if (reply !== null && recording.on) recordFrame(reply);
  }
  requestAnimationFrame(realtimeFrame);
}

/** Hooks for the browser pool (page.evaluate): fault injection and inspection. */
window.lunarfleet = {
  disconnect() {
    return link !== null && link.close(); // the link reconnects
  },
  /** The chaos fault `hang`: this page's thread and, where it answers, its socket's worker loop forever. */
  hang() {
    if (link !== null) link.hang();
    setTimeout(() => {
      for (;;);
    }, 0);
    return true;
  },
  sendGarbage() {
    return link !== null && link.send('{"type": "state", "observation": [0.1, 0.2,'); // truncated JSON on purpose
  },
  get steps() {
    return session.stepsAnswered;
  },
  get connected() {
    return link !== null && link.connected;
  },
  get sims() {
    return session.size;
  },
  /** Keep a frame of simulation 0 after every step and reset from now on (JPEG, `quality` 0-1). */
  startRecording(quality = 0.9) {
    Object.assign(recording, { on: true, frames: [], dropped: 0, quality });
    if (link !== null) link.relay(true); // frames come here one by one, answered here
    return true;
  },
  /** The frames kept since the last call, oldest first: [[data URL, episode ended], ...]. */
  takeFrames() {
    const frames = recording.frames;
    recording.frames = [];
    return frames;
  },
  stopRecording() {
    recording.on = false;
    if (link !== null) link.relay(false);
    return this.takeFrames();
  },
  get recording() {
    return { on: recording.on, waiting: recording.frames.length, dropped: recording.dropped };
  },
  /** Simulation 0 drawn now, scaled to `width` pixels wide, as a JPEG data URL (`quality` 0-1): the
   * dashboard's thumbnails (orchestrator/thumbnails.py). Called between two steps, never in the step path. */
  snapshot(width = 240, quality = 0.6) {
    const arena = document.getElementById('arena');
    drawSim(arena.getContext('2d'), session.sims[0]);
    const small = document.createElement('canvas');
    small.width = Math.min(width, arena.width);
    small.height = Math.round((arena.height * small.width) / arena.width);
    small.getContext('2d').drawImage(arena, 0, 0, small.width, small.height);
    return small.toDataURL('image/jpeg', quality);
  },
  session, // for inspection from devtools
};

function statusText() {
  const lines = [];
  const port = params.wsPort ?? DEFAULT_PORT;
  if (link === null) lines.push('Not connected. Click "Connect to Python" (port 8765).');
  else if (link.connected) lines.push(`Connected to Python on port ${port}`);
  else lines.push(`Disconnected, retrying port ${port}...`);
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
    `Stage ${sim.stage}, ${sim.obstacleCount} obstacles, seed ${sim.seed}, timescale ${sim.timescale}, max steps ${sim.maxSteps}, ` +
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
  if (params.wsPort !== null) {
    connect(params.wsPort);
  } else {
    session.resetAll(); // a still rover to look at until someone connects
    button.hidden = false;
    button.addEventListener('click', () => {
      button.hidden = true;
      connect(DEFAULT_PORT);
    });
  }
  if (params.realtime) requestAnimationFrame(realtimeFrame);
  if (shouldDraw(params)) startDrawing(document.getElementById('arena'), () => session.sims[0]);
  startStatus();
}

start();
