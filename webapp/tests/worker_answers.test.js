import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EchoSession } from '../echo_session.js';
import { SimSession } from '../protocol.js';
import { MIRROR_INTERVAL_MS, workerAnswers } from '../worker_answers.js';

const OPTIONS = { sims: 2, seed: 5, stage: 4, maxSteps: 40 };

/** A worker side with a socket and a page that only record, and timers run by hand. */
function harness(session) {
  const socket = [];
  const page = [];
  const timers = [];
  const answers = workerAnswers({
    session,
    sendSocket: (text) => socket.push(JSON.parse(text)),
    postPage: (data) => page.push(data),
    later: (fn, ms) => timers.push([fn, ms]),
  });
  const runTimers = () => timers.splice(0).forEach(([fn]) => fn());
  return { answers, socket, page, timers, runTimers };
}

function stepBatch(i) {
  return JSON.stringify({ type: 'step_batch', actions: [[1, (i % 7) / 7 - 0.5, i % 2], [0.5, -0.2, 1]] });
}

/** The page's side: replays mirrored frames, answers relayed ones (as bridge.js does). */
function replay(pageSession, posted, answered) {
  for (const data of posted) {
    if (typeof data === 'string') answered.push(pageSession.handle(JSON.parse(data)));
    else if (data.mirror) JSON.parse(data.mirror).forEach((message) => pageSession.handle(message));
    else if (data.link === 'open') pageSession.resetAll();
  }
}

test('the worker answers each step at once and hands the page the frames in one batch later', () => {
  const { answers, socket, page, timers, runTimers } = harness(new SimSession(OPTIONS));
  answers.opened();
  assert.deepEqual(socket.map((m) => m.type), ['lunarfleet_hello', 'reset_batch']);
  assert.equal(socket[0].lockstep, true);
  assert.deepEqual(page, [{ link: 'open' }]);
  for (let i = 0; i < 5; i++) answers.fromSocket(stepBatch(i));
  assert.equal(socket.length, 7); // five state_batch replies, sent before any timer ran
  assert.ok(socket.slice(2).every((m) => m.type === 'state_batch'));
  assert.equal(page.length, 1, 'nothing reaches the page before the timer');
  assert.deepEqual(timers.map(([, ms]) => ms), [MIRROR_INTERVAL_MS]);
  runTimers();
  assert.deepEqual(JSON.parse(page[1].mirror), [0, 1, 2, 3, 4].map((i) => JSON.parse(stepBatch(i))));
});

test("the page's replay stays the worker's twin, across a relay while recording and back", () => {
  const worker = new SimSession(OPTIONS);
  const pageSession = new SimSession(OPTIONS);
  const alone = new SimSession(OPTIONS); // one session answering everything: what Python must see
  const { answers, socket, page, runTimers } = harness(worker);
  const pageAnswers = [];
  answers.opened();
  const expected = [alone.hello(), alone.resetAll()];
  for (let i = 0; i < 120; i++) {
    if (i === 30) answers.relay(true);
    if (i === 70) answers.relay(false);
    if (i === 90) answers.fromSocket('{"type": "set_seed", "seed": 9}');
    if (i === 90) alone.handle({ type: 'set_seed', seed: 9 });
    answers.fromSocket(stepBatch(i));
    expected.push(alone.handle(JSON.parse(stepBatch(i))));
    if (i % 17 === 0) runTimers();
  }
  runTimers();
  replay(pageSession, page, pageAnswers);
  // steps 30-69 went to the page as strings, and only those
  assert.equal(page.filter((d) => typeof d === 'string').length, 40);
  assert.equal(pageAnswers.length, 40);
  // Python got every reply once, in order, whichever side answered: the worker's then the page's
  const got = [...socket.slice(0, 32), ...pageAnswers.map((r) => JSON.parse(JSON.stringify(r))), ...socket.slice(32)];
  assert.deepEqual(got, JSON.parse(JSON.stringify(expected)));
  // and both sessions end where one alone would
  assert.equal(pageSession.stepsAnswered, alone.stepsAnswered);
  assert.equal(worker.stepsAnswered, alone.stepsAnswered);
  const next = JSON.parse(stepBatch(999));
  const reply = alone.handle(next);
  assert.deepEqual(pageSession.handle(next), reply);
  assert.deepEqual(worker.handle(next), reply);
});

test('a malformed frame is neither answered nor passed on; the next one is', () => {
  const { answers, socket, page, runTimers } = harness(new SimSession());
  answers.opened();
  answers.fromSocket('{"type": "action", "action": [0.1,');
  answers.fromSocket(JSON.stringify({ type: 'action', action: [1, 0, 0] }));
  runTimers();
  assert.deepEqual(socket.map((m) => m.type), ['lunarfleet_hello', 'reset_complete', 'state']);
  assert.deepEqual(JSON.parse(page[1].mirror), [{ type: 'action', action: [1, 0, 0] }]);
});

test('without a session (realtime=1) the worker only relays, both ways of the open', () => {
  const { answers, socket, page, timers } = harness(null);
  answers.opened();
  answers.fromSocket('{"type": "action", "action": [1, 0, 0]}');
  answers.relay(false); // stays a relay
  answers.fromSocket('{"type": "reset_request"}');
  answers.closed();
  assert.deepEqual(socket, []);
  assert.deepEqual(page, [{ link: 'open' }, '{"type": "action", "action": [1, 0, 0]}', '{"type": "reset_request"}', { link: 'close' }]);
  assert.equal(timers.length, 0);
});

test('the echo page answers in the worker too, with its fixed reply', () => {
  const { answers, socket, runTimers, page } = harness(new EchoSession());
  answers.opened();
  answers.fromSocket('{"type": "action", "action": [1, 0, 0]}');
  answers.closed();
  runTimers();
  assert.deepEqual(socket.map((m) => m.type), ['lunarfleet_hello', 'reset_complete', 'state']);
  assert.equal(socket[2].observation.length, 30);
  assert.equal(socket[2].info.episode_length, 1);
  assert.deepEqual(page.at(-1), { link: 'close' }); // pending frames flushed before the close
  assert.deepEqual(JSON.parse(page[1].mirror), [{ type: 'action', action: [1, 0, 0] }]);
});
