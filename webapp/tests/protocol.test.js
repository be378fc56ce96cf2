import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimSession } from '../protocol.js';
import { OBSTACLE_COUNT, RoverSim } from '../sim/core.js';

const INFO_KEYS = [
  'episode_length',
  'orbs_collected',
  'orbs_deposited_construction',
  'orbs_deposited_berm',
  'collision_occurred',
  'zone',
  'total_reward',
];

function assertObservation(obs) {
  assert.equal(obs.length, 30);
  assert.ok(obs.every((v) => Number.isFinite(v) && v >= -1 && v <= 1));
}

/** Every reply goes over the wire as JSON: check it survives the round trip unchanged. */
function wire(reply) {
  const back = JSON.parse(JSON.stringify(reply));
  assert.deepEqual(back, reply);
  return back;
}

test('hello announces lock-step, sizes and the number of simulations', () => {
  assert.deepEqual(new SimSession({ sims: 3 }).hello(), {
    type: 'lunarfleet_hello',
    protocol: 1,
    lockstep: true,
    observation_size: 30,
    action_size: 3,
    sims: 3,
  });
  assert.equal(new SimSession().hello({ lockstep: false }).lockstep, false);
  assert.equal(Object.keys(new SimSession().hello())[0], 'type');
});

test('one simulation: reset_complete, then one state per action', () => {
  const session = new SimSession({ seed: 3 });
  const reset = wire(session.resetAll());
  assert.equal(reset.type, 'reset_complete');
  assert.equal(reset.reward, 0);
  assert.equal(reset.done, false);
  assertObservation(reset.observation);
  assert.deepEqual(Object.keys(reset.info), INFO_KEYS);
  assert.equal(reset.info.zone, 'start');

  const state = wire(session.handle({ type: 'action', action: [0.5, 0.1, 0] }));
  assert.equal(state.type, 'state');
  assertObservation(state.observation);
  assert.equal(typeof state.reward, 'number');
  assert.equal(state.done, false);
  assert.equal(state.info.episode_length, 1);
  assert.equal(session.stepsAnswered, 1);

  for (const type of ['reset_request', 'ready_to_resume']) {
    const again = session.handle({ type });
    assert.equal(again.type, 'reset_complete');
    assert.equal(again.info.episode_length, 0);
  }
});

test('observations on the wire match the core to 6 decimals', () => {
  const session = new SimSession({ seed: 11 });
  const sim = new RoverSim({ seed: 11 });
  const reset = session.resetAll();
  const direct = sim.reset().observation;
  direct.forEach((v, i) => assert.ok(Math.abs(v - reset.observation[i]) <= 5e-7));
  const state = session.handle({ type: 'action', action: [1, 0.3, 0] });
  const step = sim.step([1, 0.3, 0]);
  step.observation.forEach((v, i) => assert.ok(Math.abs(v - state.observation[i]) <= 5e-7));
  assert.equal(state.reward, step.reward);
});

test('settings messages change every simulation and produce no reply', () => {
  const session = new SimSession({ sims: 2 });
  assert.equal(session.handle({ type: 'set_timescale', timescale: 4 }), null);
  assert.equal(session.handle({ type: 'set_config', max_episode_steps: 123 }), null);
  assert.equal(session.handle({ type: 'set_stage', stage: 3 }), null);
  for (const sim of session.sims) {
    assert.equal(sim.timescale, 4);
    assert.equal(sim.maxSteps, 123);
    assert.equal(sim.stage, 3);
  }
  // Bad values are ignored, not applied.
  session.handle({ type: 'set_stage', stage: 9 });
  session.handle({ type: 'set_timescale', timescale: 'fast' });
  assert.equal(session.sims[0].stage, 3);
  assert.equal(session.sims[0].timescale, 4);
});

test('set_stage carries the curriculum obstacle count; without it, the full field', () => {
  const session = new SimSession({ sims: 2 });
  const counts = () => {
    session.resetAll();
    return session.sims.map((sim) => sim.state.obstacles.count);
  };
  assert.deepEqual(counts(), [OBSTACLE_COUNT, OBSTACLE_COUNT]);
  session.handle({ type: 'set_stage', stage: 2, obstacles: 4 });
  assert.deepEqual(counts(), [4, 4]);
  session.handle({ type: 'set_stage', stage: 2, obstacles: 0 });
  assert.deepEqual(counts(), [0, 0]);
  session.handle({ type: 'set_stage', stage: 3, obstacles: 99 }); // out of range: the count stays
  assert.deepEqual(counts(), [0, 0]);
  session.handle({ type: 'set_stage', stage: 3 });
  assert.deepEqual(counts(), [OBSTACLE_COUNT, OBSTACLE_COUNT]);
});

test('set_seed takes effect at the next reset, per simulation', () => {
  const session = new SimSession({ sims: 2, seed: 1 });
  const before = session.resetAll();
  session.handle({ type: 'set_seed', seed: 77 });
  const after = session.resetAll();
  const fresh = new SimSession({ sims: 2, seed: 77 }).resetAll();
  assert.deepEqual(after, fresh);
  assert.notDeepEqual(after.observations, before.observations);
  assert.notDeepEqual(after.observations[0], after.observations[1], 'simulations of a tab differ');
  session.handle({ type: 'set_seed' });
  session.handle({ type: 'set_seed', seed: 'x' });
  assert.equal(session.sims[0].seed, 77, 'a malformed set_seed is ignored');
});

test('display messages are stored for the status line', () => {
  const session = new SimSession();
  assert.equal(session.handle({ type: 'parallel_training_info', env_count: 4, env_id: 2 }), null);
  assert.equal(session.handle({ type: 'checkpoint_info', checkpoint_name: 'lunar_rover_ppo_5000_steps', checkpoint_steps: 5000 }), null);
  assert.deepEqual(session.parallel, { env_count: 4, env_id: 2 });
  assert.deepEqual(session.checkpoint, { checkpoint_name: 'lunar_rover_ppo_5000_steps', checkpoint_steps: 5000 });
});

test('unknown and malformed messages are ignored', () => {
  const session = new SimSession({ sims: 2 });
  session.resetAll();
  for (const message of [null, 5, 'action', [], {}, { type: 'nope' }, { type: 'restart_request' }]) {
    assert.equal(session.handle(message), null);
  }
  assert.equal(session.handle({ type: 'step_batch', actions: [[0, 0, 0]] }), null, 'wrong number of actions');
  assert.equal(session.handle({ type: 'step_batch' }), null);
  assert.equal(session.stepsAnswered, 0);
});

test('batched stepping: K results, finished episodes restart with their first observation', () => {
  const session = new SimSession({ sims: 3, seed: 5, maxSteps: 4 });
  const reset = wire(session.resetAll());
  assert.equal(reset.type, 'reset_batch');
  assert.equal(reset.observations.length, 3);
  assert.equal(reset.infos.length, 3);
  reset.observations.forEach(assertObservation);

  const actions = [[0.2, 0, 0], [0.5, -0.2, 0], [0, 0, 0]];
  for (let step = 1; step <= 4; step++) {
    const batch = wire(session.handle({ type: 'step_batch', actions }));
    assert.equal(batch.type, 'state_batch');
    for (const key of ['observations', 'rewards', 'dones', 'infos', 'reset_observations']) {
      assert.equal(batch[key].length, 3, key);
    }
    batch.observations.forEach(assertObservation);
    if (step < 4) {
      assert.deepEqual(batch.dones, [false, false, false]);
      assert.deepEqual(batch.reset_observations, [null, null, null]);
    } else {
      assert.deepEqual(batch.dones, [true, true, true]);
      batch.reset_observations.forEach(assertObservation);
      assert.deepEqual(batch.infos.map((i) => i.episode_length), [4, 4, 4]);
    }
  }
  const next = session.handle({ type: 'step_batch', actions });
  assert.deepEqual(next.infos.map((i) => i.episode_length), [1, 1, 1], 'new episodes run on');
  assert.equal(session.stepsAnswered, 15);
});

test('simulation 0 of a batched tab plays the same episodes as a single-simulation tab', () => {
  const single = new SimSession({ seed: 9, maxSteps: 50 });
  const batched = new SimSession({ sims: 2, seed: 9, maxSteps: 50 });
  assert.deepEqual(batched.resetAll().observations[0], single.resetAll().observation);
  for (let i = 0; i < 120; i++) {
    const action = [Math.sin(i), Math.cos(i * 0.7), (i % 9) / 8];
    const one = single.handle({ type: 'action', action });
    const many = batched.handle({ type: 'step_batch', actions: [action, [0, 0, 0]] });
    assert.deepEqual(many.observations[0], one.observation);
    assert.equal(many.rewards[0], one.reward);
    if (one.done) {
      assert.deepEqual(many.reset_observations[0], single.resetAll().observation);
    }
  }
});
