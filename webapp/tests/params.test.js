import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseParams, socketUrl } from '../params.js';
import { shouldDraw, drawSim } from '../draw.js';
import { RoverSim } from '../sim/core.js';

test('URL parameters: defaults', () => {
  assert.deepEqual(parseParams(''), {
    wsPort: null,
    maxSteps: 10000,
    seed: 0,
    stage: 1,
    timescale: 2,
    token: null,
    sims: 1,
    watch: false,
    realtime: false,
    socket: 'page',
  });
});

test('URL parameters: all given', () => {
  const p = parseParams('?wsPort=8766&maxSteps=5000&seed=12&stage=3&timescale=4.5&token=a%2Fb&sims=8&watch=1&realtime=1&socket=worker');
  assert.deepEqual(p, {
    wsPort: 8766,
    maxSteps: 5000,
    seed: 12,
    stage: 3,
    timescale: 4.5,
    token: 'a/b',
    sims: 8,
    watch: true,
    realtime: true,
    socket: 'worker',
  });
});

test('URL parameters: bad values fall back to defaults', () => {
  const p = parseParams('?wsPort=abc&maxSteps=-3&stage=7&timescale=0&sims=0&watch=0');
  assert.equal(p.wsPort, null);
  assert.equal(p.maxSteps, 10000);
  assert.equal(p.stage, 1);
  assert.equal(p.timescale, 2);
  assert.equal(p.sims, 1);
  assert.equal(p.watch, false);
  assert.equal(parseParams('?socket=shared').socket, 'page');
});

test('socket URL carries the token', () => {
  assert.equal(socketUrl(8765, null), 'ws://localhost:8765/');
  assert.equal(socketUrl(8766, 'x y&z'), 'ws://localhost:8766/?token=x%20y%26z');
});

test('drawing: on for people, off under automation unless watch=1', () => {
  assert.equal(shouldDraw({ watch: false }, { webdriver: false }), true);
  assert.equal(shouldDraw({ watch: false }, { webdriver: true }), false);
  assert.equal(shouldDraw({ watch: true }, { webdriver: true }), true);
  assert.equal(shouldDraw({ watch: false }, undefined), true);
});

test('drawSim runs against a canvas context without errors', () => {
  const calls = [];
  const ctx = new Proxy(
    { canvas: { width: 680, height: 500 }, measureText: () => ({ width: 100 }) },
    {
      get(target, key) {
        if (key in target) return target[key];
        return (...args) => calls.push(key);
      },
      set(target, key, value) {
        target[key] = value;
        return true;
      },
    },
  );
  drawSim(ctx, new RoverSim()); // not reset yet: the bare arena
  const sim = new RoverSim({ seed: 2 });
  sim.reset();
  sim.state.heldCount = 3;
  drawSim(ctx, sim);
  assert.ok(calls.includes('arc') && calls.includes('fillRect') && calls.includes('fillText'));
});
