import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ARENA_HEIGHT,
  ARENA_WIDTH,
  CONSTRUCTION_CENTRE_X,
  CONSTRUCTION_CENTRE_Y,
  CONSTRUCTION_ZONE,
  OBSTACLE_KIND_CRATER,
  OBSTACLE_KIND_ROCK,
  OBSTACLE_SPACING,
  OBSERVATION_SIZE,
  ORB_DEPOSITED,
  ORB_ON_GROUND,
  ROVER,
  RoverSim,
  dropOutsidePenalty,
  START_ZONE,
  inConstruction,
  inExcavation,
  hasClearPath,
  inZone,
  roverHalfExtents,
} from '../sim/core.js';
import { STAGES, STAGE_LIST, clearedSim, drive, near, placeOrb, randomActions } from './helpers.js';

const TOWARD_CONSTRUCTION = Math.atan2(0.75 - 2.5, 5.3 - 1.25); // from (1.25, 2.5)

function assertObservationValid(obs, where) {
  assert.equal(obs.length, OBSERVATION_SIZE, where);
  for (let i = 0; i < obs.length; i++) {
    const v = obs[i];
    assert.ok(Number.isFinite(v) && v >= -1 && v <= 1, `${where}: observation[${i}] = ${v}`);
  }
}

/** Drives until the episode ends (or a step limit); returns the last result. */
function driveUntilDone(sim, action, limit = 2000) {
  for (let i = 0; i < limit; i++) {
    const result = sim.step(action);
    if (result.done) return result;
  }
  assert.fail('episode did not end');
}

test('driving into a wall ends the episode with the collision penalty, in every stage', () => {
  for (const stage of STAGE_LIST) {
    const sim = clearedSim({ stage });
    sim.teleport(1.25, 2.5, Math.PI); // facing the left wall, front 0.5 m from it
    const last = driveUntilDone(sim, [1, 0, 0]);
    const w = STAGES[stage];
    assert.equal(last.info.collision_occurred, true);
    assert.ok(Math.abs(last.reward - w.collision) < 3, `stage ${stage}: reward ${last.reward}`);
    assert.ok(sim.state.rover.x - ROVER.length / 2 <= 0.02, 'stopped at the wall');
    assert.ok(near(last.info.total_reward, sim.state.totalReward));
    const after = sim.step([1, 0, 0]);
    assert.equal(after.done, true);
    assert.equal(after.reward, 0);
  }
});

test('driving into a rock or a crater ends the episode with the collision penalty', () => {
  for (const kind of [OBSTACLE_KIND_ROCK, OBSTACLE_KIND_CRATER]) {
    const sim = clearedSim({ stage: 2 });
    const ob = sim.state.obstacles;
    ob.count = 1;
    ob.x[0] = 4.0;
    ob.y[0] = 3.0;
    ob.r[0] = 0.2;
    ob.kind[0] = kind;
    sim.teleport(2.6, 3.0, 0); // front at 3.35, rock surface at 3.8
    const last = driveUntilDone(sim, [1, 0, 0]);
    assert.equal(last.info.collision_occurred, true);
    assert.equal(last.info.zone, 'obstacle');
    assert.ok(Math.abs(last.reward - STAGES[2].collision) < 3);
    const front = sim.state.rover.x + ROVER.length / 2;
    assert.ok(front >= 3.8 && front < 3.83, `front at ${front}`);
  }
});

test('a rover passing beside a rock does not collide', () => {
  const sim = clearedSim({ stage: 1 });
  const ob = sim.state.obstacles;
  ob.count = 1;
  ob.x[0] = 4.0;
  ob.y[0] = 3.75; // 0.75 m beside the path: clear of the 0.5 m half width
  ob.r[0] = 0.2;
  sim.teleport(2.6, 3.0, 0);
  const results = drive(sim, [1, 0, 0], 150); // 2.5 m
  assert.ok(results.every((r) => !r.done));
});

/** Sim in a stage with orbs 0-2 in the grab zone of a rover at (1.2, 2.5) facing +x. */
function simWithOrbsAhead(stage) {
  const sim = clearedSim({ stage });
  sim.teleport(1.2, 2.5, 0);
  placeOrb(sim, 0, 2.0, 2.5);
  placeOrb(sim, 1, 2.1, 2.75);
  placeOrb(sim, 2, 2.25, 2.3);
  return sim;
}

test('grabbing picks up the orbs in the grab zone and scores the stage grab reward', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = simWithOrbsAhead(stage);
    assert.equal(sim.observation()[12], 1, 'orbs are in the grab zone');
    const grab = sim.step([0, 0, 1]);
    assert.ok(near(grab.reward, w.step + w.idle + 3 * w.grab), `stage ${stage}: ${grab.reward}`);
    assert.equal(grab.observation[4], 1);
    assert.ok(near(grab.observation[5], 3 / 15));
    assert.equal(grab.info.orbs_collected, 3);
    assert.equal(sim.state.heldCount, 3);
    // Holding dig high is not a new rising edge: nothing happens.
    const held = sim.step([0, 0, 1]);
    assert.ok(near(held.reward, w.step + w.idle));
    assert.equal(sim.state.heldCount, 3);
  }
});

test('a grab with nothing in reach holds nothing, so the next rising edge grabs again', () => {
  const sim = clearedSim({ stage: 3 });
  sim.teleport(1.2, 2.5, 0);
  sim.step([0, 0, 1]);
  assert.equal(sim.state.heldCount, 0);
  sim.step([0, 0, 0]);
  placeOrb(sim, 0, 2.0, 2.5);
  const grab = sim.step([0, 0, 1]);
  assert.equal(sim.state.heldCount, 1);
  assert.ok(near(grab.reward, STAGES[3].step + STAGES[3].idle + STAGES[3].grab));
});

for (const [place, x, key, infoKey] of [
  ['construction zone', 4.2, 'depositConstruction', 'orbs_deposited_construction'],
  ['berm', 5.3, 'depositBerm', 'orbs_deposited_berm'],
]) {
  test(`releasing orbs in the ${place} scores the stage deposit reward per orb`, () => {
    for (const stage of STAGE_LIST) {
      const w = STAGES[stage];
      const sim = simWithOrbsAhead(stage);
      sim.step([0, 0, 1]); // grab 3
      sim.step([0, 0, 0]); // dig falls
      sim.teleport(x, 0.75, 0);
      const release = sim.step([0, 0, 1]);
      assert.ok(near(release.reward, w.step + w.idle + 3 * w[key]), `stage ${stage}: ${release.reward}`);
      assert.equal(release.info[infoKey], 3);
      assert.equal(release.info.orbs_deposited_construction + release.info.orbs_deposited_berm, 3);
      assert.equal(release.observation[4], 0);
      assert.equal(sim.state.heldCount, 0);
      assert.deepEqual([0, 1, 2].map((i) => sim.state.orbs.status[i]), [ORB_DEPOSITED, ORB_DEPOSITED, ORB_DEPOSITED]);
      // Deposited orbs are out of play: the next grab finds nothing (an empty press).
      sim.step([0, 0, 0]);
      const regrab = sim.step([0, 0, 1]);
      assert.equal(sim.state.heldCount, 0);
      assert.ok(near(regrab.reward, w.step + w.idle + w.emptyGrab));
    }
  });
}

test('dropping orbs outside the construction zone costs the stage penalty, and re-grabs earn nothing', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    sim.teleport(1.2, 2.5, 0);
    placeOrb(sim, 0, 2.0, 2.5);
    sim.step([0, 0, 1]);
    sim.step([0, 0, 0]);
    const drop = sim.step([0, 0, 1]); // release in the excavation zone
    assert.ok(near(drop.reward, w.step + w.idle + w.dropOutsideMin), `stage ${stage}: ${drop.reward}`);
    assert.equal(sim.state.orbs.status[0], ORB_ON_GROUND);
    assert.ok(near(sim.state.orbs.x[0], 1.2) && near(sim.state.orbs.y[0], 2.5), 'dropped where the rover stands');
    // Back in front of the scoop: grabbing it again pays no second grab reward.
    sim.teleport(2.0, 2.5, Math.PI);
    sim.step([0, 0, 0]);
    const regrab = sim.step([0, 0, 1]);
    assert.equal(sim.state.heldCount, 1);
    assert.ok(near(regrab.reward, w.step + w.idle));
    assert.equal(regrab.info.orbs_collected, 1);
  }
  // A bigger load dropped outside costs more, up to dropOutsideMax for all 15.
  const sim = clearedSim({ stage: 4 });
  sim.teleport(1.2, 2.5, 0);
  for (let i = 0; i < 15; i++) placeOrb(sim, i, 2.0 + (i % 5) * 0.03, 2.3 + Math.floor(i / 5) * 0.1);
  sim.step([0, 0, 1]);
  assert.equal(sim.state.heldCount, 15);
  sim.step([0, 0, 0]);
  const drop = sim.step([0, 0, 1]);
  assert.ok(near(drop.reward, STAGES[4].step + STAGES[4].idle + STAGES[4].dropOutsideMax));
});

test('entering the construction zone holding orbs pays once per orb carried in', () => {
  const w = STAGES[4]; // stage 4: no forward, smoothness or progress terms to account for
  const sim = simWithOrbsAhead(4);
  sim.step([0, 0, 1]);
  sim.teleport(CONSTRUCTION_ZONE.x0 - 0.01, 0.75, 0, ROVER.topSpeed);
  const enter = sim.step([1, 0, 0]);
  assert.equal(enter.observation[7], 1);
  assert.ok(near(enter.reward, w.step + w.enterConstructionHolding), `${enter.reward}`);
  // Out and in again with the same load: no second bonus.
  sim.teleport(CONSTRUCTION_ZONE.x0 - 0.01, 0.75, 0, ROVER.topSpeed);
  const again = sim.step([1, 0, 0]);
  assert.ok(near(again.reward, w.step));
  // Without orbs there is no bonus at all.
  const empty = clearedSim({ stage: 4 });
  empty.teleport(CONSTRUCTION_ZONE.x0 - 0.01, 0.75, 0, ROVER.topSpeed);
  assert.ok(near(empty.step([1, 0, 0]).reward, w.step));
});

test('reaching the construction zone pays reachConstruction once per episode', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    const enter = () => {
      sim.teleport(CONSTRUCTION_ZONE.x0 - 0.01, 0.75, 0, ROVER.topSpeed);
      sim.state.prevSpeedCmd = 1;
      return sim.step([1, 0, 0]).reward;
    };
    const first = enter();
    const again = enter();
    assert.ok(near(first - again, w.reachConstruction, 1e-9), `stage ${stage}: ${first - again}`);
    sim.reset();
    sim.state.obstacles.count = 0;
    sim.state.orbs.status.fill(ORB_DEPOSITED);
    assert.ok(near(enter() - again, w.reachConstruction, 1e-6), `stage ${stage}: a new episode pays again`);
  }
  assert.ok(STAGES[2].reachConstruction > 0);
});

test('zone flags and zone names are right at known poses', () => {
  const sim = clearedSim();
  const cases = [
    // x, y, [excavation, construction, berm, obstacle], zone
    [1.0, 1.0, [1, 0, 0, 0], 'start'],
    [1.5, 3.5, [1, 0, 0, 0], 'excavation'],
    [2.2, 1.0, [1, 0, 0, 0], 'excavation'],
    [3.5, 3.5, [0, 0, 0, 1], 'obstacle'],
    [3.0, 0.75, [0, 0, 0, 1], 'obstacle'],
    [5.0, 2.5, [0, 0, 0, 1], 'obstacle'],
    [4.0, 0.75, [0, 1, 0, 0], 'construction'],
    [6.0, 1.3, [0, 1, 0, 0], 'construction'],
    [5.3, 0.75, [0, 1, 1, 0], 'berm'],
    [4.6, 0.5, [0, 1, 1, 0], 'berm'],
  ];
  for (const [x, y, flags, zone] of cases) {
    sim.teleport(x, y, Math.PI / 2);
    const obs = sim.observation();
    assert.deepEqual(obs.slice(6, 10), flags, `flags at (${x}, ${y})`);
    assert.equal(sim.info().zone, zone, `zone at (${x}, ${y})`);
  }
});

test('observation layout at a known pose', () => {
  const sim = clearedSim();
  sim.teleport(3.4, 2.5, Math.PI / 2, ROVER.topSpeed / 2);
  const obs = sim.observation();
  assert.ok(near(obs[0], 0));
  assert.ok(near(obs[1], 0));
  assert.ok(near(obs[2], 0.5));
  assert.ok(near(obs[3], 0.5));
  assert.deepEqual(obs.slice(13, 28), [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0], 'no obstacles: missing = 1, 0, 0');
  // Construction centre (5.3, 0.75): distance and bearing relative to heading +y.
  const dx = 5.3 - 3.4;
  const dy = 0.75 - 2.5;
  assert.ok(near(obs[28], Math.hypot(dx, dy) / Math.hypot(ARENA_WIDTH, ARENA_HEIGHT)));
  assert.ok(near(obs[29], (Math.atan2(dy, dx) - Math.PI / 2) / Math.PI));
  // One obstacle straight ahead.
  const ob = sim.state.obstacles;
  ob.count = 1;
  ob.x[0] = 3.4;
  ob.y[0] = 4.0;
  ob.r[0] = 0.2;
  const withRock = sim.observation();
  assert.ok(near(withRock[13], 1.5 / Math.hypot(ARENA_WIDTH, ARENA_HEIGHT)));
  assert.ok(near(withRock[14], 0));
  assert.ok(near(withRock[15], 0.8));
  // No orbs on the ground: nearest orb is (1, 0, 0).
  for (let i = 0; i < sim.state.orbs.count; i++) sim.state.orbs.status[i] = ORB_DEPOSITED;
  assert.deepEqual(sim.observation().slice(10, 13), [1, 0, 0]);
});

test('same seed and same actions give identical observations over 2000 steps, resets included', () => {
  const a = new RoverSim({ seed: 42, stage: 3, maxSteps: 300 });
  const b = new RoverSim({ seed: 42, stage: 3, maxSteps: 300 });
  assert.deepEqual(a.reset(), b.reset());
  const actionsA = randomActions(7);
  const actionsB = randomActions(7);
  let episodes = 0;
  for (let i = 0; i < 2000; i++) {
    const ra = a.step(actionsA());
    const rb = b.step(actionsB());
    assert.deepEqual(ra, rb, `step ${i}`);
    if (ra.done) {
      episodes++;
      assert.deepEqual(a.reset(), b.reset(), `reset after step ${i}`);
    }
  }
  assert.ok(episodes >= 6, `episodes: ${episodes}`);
  const other = new RoverSim({ seed: 43 });
  assert.notDeepEqual(other.reset().observation, new RoverSim({ seed: 42 }).reset().observation);
});

test('episodes differ within a run, and setSeed restarts the episode sequence at the next reset', () => {
  const a = new RoverSim({ seed: 5 });
  const first = a.reset().observation;
  const second = a.reset().observation;
  assert.notDeepEqual(first, second);
  const b = new RoverSim({ seed: 9 });
  b.reset();
  b.setSeed(5);
  assert.deepEqual(b.reset().observation, first);
  assert.deepEqual(b.reset().observation, second);
});

test('every observation value is finite and within [-1, 1] over many random steps in every stage', () => {
  for (const stage of STAGE_LIST) {
    const sim = new RoverSim({ seed: stage * 100, stage, maxSteps: 3000 });
    assertObservationValid(sim.reset().observation, `stage ${stage} reset`);
    const next = randomActions(stage);
    for (let i = 0; i < 20000; i++) {
      // Mostly forward with some turning, so the rover also reaches the far zones.
      const [s, t, d] = next();
      const result = sim.step([i % 3 === 0 ? s : Math.abs(s), t * 0.5, d]);
      assertObservationValid(result.observation, `stage ${stage} step ${i}`);
      assert.ok(Number.isFinite(result.reward));
      if (result.done) assertObservationValid(sim.reset().observation, `stage ${stage} reset at ${i}`);
    }
  }
  // Poses all over the arena, including holding all 15 orbs and extreme speeds.
  const sim = new RoverSim({ seed: 3 });
  sim.reset();
  const rng = randomActions(11);
  for (let i = 0; i < 5000; i++) {
    const [u, v, w] = rng();
    sim.teleport((u + 1) / 2 * ARENA_WIDTH, (v + 1) / 2 * ARENA_HEIGHT, w * 7 - 3.5, u * ROVER.topSpeed);
    sim.state.heldCount = i % 16;
    assertObservationValid(sim.observation(), `pose ${i}`);
  }
});

test('driving backward is penalised in every stage', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    sim.teleport(1.25, 2.5, TOWARD_CONSTRUCTION); // reversing moves away from the target
    const results = drive(sim, [-1, 0, 0], 20);
    const last = results[results.length - 1];
    assert.ok(sim.state.rover.speed < 0);
    assert.ok(last.reward < 0);
    assert.ok(last.reward <= w.step + w.backward + 1e-9, `stage ${stage}: ${last.reward}`);
  }
});

test('standing still is penalised by the idle term in every stage', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    sim.teleport(1.25, 2.5, 0);
    const results = drive(sim, [0, 0, 0], 5);
    for (const r of results) assert.ok(near(r.reward, w.step + w.idle), `stage ${stage}: ${r.reward}`);
    assert.ok(w.idle < 0);
  }
});

test('driving forward smoothly pays in stages 1-3; stage 4 has no forward or smoothness bonus', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    sim.teleport(1.25, 2.5, TOWARD_CONSTRUCTION, ROVER.topSpeed);
    sim.state.prevSpeedCmd = 1;
    const r = sim.step([1, 0, 0]);
    if (stage === 4) {
      assert.equal(w.forward, 0);
      assert.ok(near(r.reward, w.step), `stage 4: ${r.reward}`);
    } else {
      const expectedMin = w.step + w.forward + w.smoothThrottle + w.smoothSteering;
      assert.ok(r.reward >= expectedMin - 1e-9 && r.reward > 0, `stage ${stage}: ${r.reward}`);
    }
  }
});

test('progress toward the construction zone is shaped only in the stages that say so', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    sim.teleport(1.25, 2.5, TOWARD_CONSTRUCTION, ROVER.topSpeed);
    sim.state.prevSpeedCmd = 1;
    const r = sim.step([1, 0, 0]);
    const moved = ROVER.topSpeed * (sim.timescale / 60);
    const base = w.step + w.forward + w.smoothThrottle + w.smoothSteering;
    const expected = base + w.progressScale * moved;
    assert.ok(near(r.reward, expected, 1e-6), `stage ${stage}: ${r.reward} vs ${expected}`);
  }
  assert.deepEqual(STAGE_LIST.map((k) => STAGES[k].progressScale > 0), [false, true, false, false]);
  assert.deepEqual(STAGE_LIST.map((k) => STAGES[k].loadProgressScale > 0), [false, false, true, false]);
});

test('progress toward the nearest orb is shaped while empty in stage 3 only, with no jump when an orb is grabbed', () => {
  const moved = ROVER.topSpeed * (2 / 60);
  const toConstruction = (x, y) => Math.hypot(x - CONSTRUCTION_CENTRE_X, y - CONSTRUCTION_CENTRE_Y);
  const gained = toConstruction(1.0, 2.5) - toConstruction(1.0 + moved, 2.5);
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const sim = clearedSim({ stage });
    sim.teleport(1.0, 2.5, 0, ROVER.topSpeed);
    placeOrb(sim, 0, 2.5, 2.5); // straight ahead, out of reach
    sim.state.prevSpeedCmd = 1;
    const r = sim.step([1, 0, 0]);
    const construction = w.progressScale * gained;
    const expected = w.step + w.forward + w.smoothThrottle + w.smoothSteering + construction + w.orbProgressScale * moved;
    assert.ok(near(r.reward, expected, 1e-6), `stage ${stage}: ${r.reward} vs ${expected}`);
  }
  assert.ok(STAGES[3].orbProgressScale > 0);
  const w = STAGES[3];
  // The grab removes the nearest orbs: the next one is farther, and that costs nothing.
  const sim = simWithOrbsAhead(3);
  placeOrb(sim, 3, 0.3, 4.5);
  const grab = sim.step([0, 0, 1]);
  assert.ok(near(grab.reward, w.step + w.idle + 3 * w.grab), `${grab.reward}`);
  // Holding a load, driving toward an orb earns no orb progress (only the trip with the load counts).
  sim.teleport(1.0, 4.5, Math.PI, ROVER.topSpeed);
  sim.state.prevSpeedCmd = 1;
  const carrying = sim.step([1, 0, 0]);
  const away = toConstruction(1.0, 4.5) - toConstruction(1.0 - moved, 4.5);
  const expected = w.step + w.forward + w.smoothThrottle + w.smoothSteering + w.progressScale * away;
  assert.ok(near(carrying.reward, expected, 1e-6), `${carrying.reward} vs ${expected}`);
});

test('no stage makes ending the episode in a collision a way to stop paying per-step penalties', () => {
  // PPO looks about 1 / (1 - gamma) = 100 steps ahead (gamma 0.99). If the worst per-step
  // penalties summed over that horizon came near the collision penalty, crashing early would be
  // the cheapest policy: the reward gaming the original weights taught (docs/rover-sim.md).
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    // An empty dig press needs dig low on the step before: at most every other step.
    const worstStep = -w.step + Math.max(-w.idle, -w.backward) - w.oscillation - w.emptyGrab / 2;
    assert.ok(100 * worstStep <= -w.collision / 2, `stage ${stage}: ${100 * worstStep} vs ${w.collision}`);
  }
});

test('a dig press with no orb in the scoop costs emptyGrab; one with an orb costs nothing of it', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    assert.ok(w.emptyGrab < 0 && w.emptyGrab > -w.grab - 1, `stage ${stage}`);
    const sim = new RoverSim({ seed: 3, stage, maxSteps: 1000 });
    sim.reset();
    for (let i = 0; i < sim.state.orbs.count; i++) sim.state.orbs.status[i] = ORB_DEPOSITED;
    sim.teleport(1.0, 2.5, 0, 0);
    sim.step([0, 0, 0]); // pays leaving the start zone once
    const idle = sim.step([0, 0, 0]).reward;
    const pressed = sim.step([0, 0, 1]).reward;
    assert.ok(near(pressed - idle, w.emptyGrab, 1e-9), `stage ${stage}: ${pressed - idle}`);
    const held = sim.step([0, 0, 1]).reward; // no rising edge: no press
    assert.ok(near(held, idle, 1e-9), `stage ${stage}: held ${held}`);
  }
});

test('reversing never pays: the backward penalty outweighs any progress shaping at top speed', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const perStep = ROVER.topSpeed * (2 / 60);
    const bestShaping = Math.max(w.progressScale, w.orbProgressScale, w.loadProgressScale) * perStep;
    assert.ok(w.backward + bestShaping < 0, `stage ${stage}`);
  }
});

test('reversing the speed command sharply costs the oscillation penalty', () => {
  for (const stage of STAGE_LIST) {
    const w = STAGES[stage];
    const make = () => {
      const sim = clearedSim({ stage });
      sim.teleport(1.25, 2.5, TOWARD_CONSTRUCTION, ROVER.topSpeed);
      sim.state.prevSpeedCmd = 1;
      return sim;
    };
    // Rate limiting makes both commands slow the rover equally; only the reversal differs.
    const reversed = make().step([-1, 0, 0]).reward;
    const released = make().step([0, 0, 0]).reward;
    assert.ok(near(reversed - released, w.oscillation, 1e-9), `stage ${stage}`);
  }
});

test('leaving the starting zone pays once per episode', () => {
  const w = STAGES[1];
  const sim = clearedSim({ stage: 1 });
  sim.teleport(START_ZONE.x1 - 0.005, 1.0, 0, ROVER.topSpeed);
  sim.state.prevSpeedCmd = 1;
  const out = sim.step([1, 0, 0]);
  assert.ok(near(out.reward, w.step + w.forward + w.smoothThrottle + w.smoothSteering + w.leaveStart));
  sim.teleport(START_ZONE.x1 - 0.005, 1.0, 0, ROVER.topSpeed);
  const again = sim.step([1, 0, 0]);
  assert.ok(near(again.reward, w.step + w.forward + w.smoothThrottle + w.smoothSteering));
});

test('speed changes are rate-limited', () => {
  const sim = clearedSim();
  sim.teleport(1.25, 2.5, 0);
  sim.step([1, 0, 0]);
  const dt = sim.timescale / 60;
  assert.ok(near(sim.state.rover.speed, ROVER.maxAccel * dt));
  drive(sim, [1, 0, 0], 30);
  assert.ok(near(sim.state.rover.speed, ROVER.topSpeed));
});

test('maxSteps ends the episode', () => {
  const sim = clearedSim({ maxSteps: 50 });
  sim.teleport(1.25, 2.5, 0);
  const results = drive(sim, [0, 0.3, 0], 50);
  assert.ok(results.slice(0, 49).every((r) => !r.done));
  assert.equal(results[49].done, true);
  assert.equal(results[49].info.episode_length, 50);
  assert.equal(results[49].info.collision_occurred, false);
  // setMaxSteps applies to the running episode, and the default is 10000.
  const other = clearedSim();
  assert.equal(other.maxSteps, 10000);
  other.teleport(1.25, 2.5, 0);
  drive(other, [0, 0, 0], 10);
  other.setMaxSteps(11);
  assert.equal(other.step([0, 0, 0]).done, true);
});

test('timescale changes the distance moved per step', () => {
  const distancePer10Steps = (timescale) => {
    const sim = clearedSim({ timescale });
    sim.teleport(1.25, 1.5, Math.PI / 2, ROVER.topSpeed);
    drive(sim, [1, 0, 0], 10);
    return sim.state.rover.y - 1.5;
  };
  const d2 = distancePer10Steps(2);
  assert.ok(near(d2, 10 * ROVER.topSpeed * (2 / 60)));
  assert.ok(near(distancePer10Steps(4), 2 * d2));
  assert.ok(near(distancePer10Steps(1), d2 / 2));
  const sim = clearedSim();
  assert.equal(sim.timescale, 2);
  sim.setTimescale(6);
  assert.equal(sim.timescale, 6);
  assert.equal(sim.setTimescale(-1), false);
  assert.equal(sim.timescale, 6);
});

test('every layout is valid: obstacles spaced in the obstacle zone leaving a way through, orbs in the excavation zone, rover inside the start zone', () => {
  for (let seed = 0; seed < 300; seed++) {
    const sim = new RoverSim({ seed });
    sim.reset();
    const { obstacles: ob, orbs, rover } = sim.state;
    assert.equal(ob.count, 11);
    assert.equal([...ob.kind].filter((k) => k === OBSTACLE_KIND_ROCK).length, 7);
    for (let i = 0; i < ob.count; i++) {
      const [lo, hi] = ob.kind[i] === OBSTACLE_KIND_ROCK ? [0.15, 0.2] : [0.15, 0.25];
      assert.ok(ob.r[i] >= lo && ob.r[i] <= hi);
      assert.ok(ob.x[i] - ob.r[i] >= 2.5 && ob.x[i] + ob.r[i] <= ARENA_WIDTH);
      assert.ok(ob.y[i] - ob.r[i] >= 0 && ob.y[i] + ob.r[i] <= ARENA_HEIGHT);
      assert.ok(!inConstruction(ob.x[i], ob.y[i]));
      for (let j = 0; j < i; j++) {
        assert.ok(Math.hypot(ob.x[i] - ob.x[j], ob.y[i] - ob.y[j]) >= OBSTACLE_SPACING);
      }
    }
    assert.ok(hasClearPath(ob), 'a way from the start zone to the berm');
    assert.equal(orbs.count, 15);
    for (let i = 0; i < orbs.count; i++) assert.ok(inExcavation(orbs.x[i], orbs.y[i]) && orbs.y[i] > 0);
    const [ex, ey] = roverHalfExtents(rover.heading);
    assert.ok(inZone(START_ZONE, rover.x - ex, rover.y - ey) && inZone(START_ZONE, rover.x + ex, rover.y + ey));
    assert.ok(rover.x - ex > 0 && rover.y - ey > 0, 'body off the walls');
    assert.equal(sim._collidesAt(Math.cos(rover.heading), Math.sin(rover.heading)), false);
  }
});

test('a thinner field places the first obstacles of the usual order, spaced, with a way through', () => {
  for (const count of [0, 4, 8]) {
    for (let seed = 0; seed < 50; seed++) {
      const sim = new RoverSim({ seed, obstacles: count });
      sim.reset();
      const ob = sim.state.obstacles;
      assert.equal(ob.count, count);
      assert.equal([...ob.kind.subarray(0, count)].filter((k) => k === OBSTACLE_KIND_ROCK).length, Math.min(count, 7));
      for (let i = 0; i < count; i++) {
        assert.ok(ob.x[i] - ob.r[i] >= 2.5 && !inConstruction(ob.x[i], ob.y[i]));
        for (let j = 0; j < i; j++) assert.ok(Math.hypot(ob.x[i] - ob.x[j], ob.y[i] - ob.y[j]) >= OBSTACLE_SPACING);
      }
      assert.ok(hasClearPath(ob));
    }
  }
  const sim = new RoverSim({ seed: 3 });
  assert.equal(sim.setObstacles(12), false, 'more than the spec world holds');
  assert.equal(sim.setObstacles(2.5), false);
  assert.equal(sim.setObstacles(4), true);
  sim.reset();
  assert.equal(sim.state.obstacles.count, 4, 'effective at the next reset');
});

test('malformed actions are treated as zeros, and step before reset throws', () => {
  const sim = new RoverSim();
  assert.throws(() => sim.step([0, 0, 0]));
  sim.reset();
  for (const action of [null, [], [NaN, 'x', undefined], [Infinity, -Infinity, 2]]) {
    const r = sim.step(action);
    assert.ok(r.observation.every(Number.isFinite));
  }
});

test('the path check sees a wall of obstacles', () => {
  const sim = new RoverSim({ seed: 1 });
  sim.reset();
  const ob = sim.state.obstacles;
  // A column of rocks 0.67 m apart across the whole arena height at x = 3.0.
  ob.count = 8;
  for (let i = 0; i < 8; i++) {
    ob.x[i] = 3.0;
    ob.y[i] = 0.2 + i * 0.67;
    ob.r[i] = 0.2;
  }
  assert.equal(hasClearPath(ob), false);
  ob.count = 0;
  assert.equal(hasClearPath(ob), true);
});

test('each metre of an orb\'s way to the construction zone pays once per episode', () => {
  // Otherwise carrying a load back and forth, or dropping it and carrying it again, would farm
  // the trip shaping; and nothing is taken back at a drop (docs/rover-sim.md).
  const w = STAGES[3];
  const sim = clearedSim({ stage: 3 });
  const c = Math.cos(TOWARD_CONSTRUCTION);
  const s = Math.sin(TOWARD_CONSTRUCTION);
  const at = (d) => [1.25 + d * c, 2.5 + d * s]; // d metres from (1.25, 2.5) toward the zone
  sim.teleport(...at(0), TOWARD_CONSTRUCTION);
  placeOrb(sim, 0, ...at(0.85));
  assert.ok(sim.step([0, 0, 1]).reward > 0, 'grabbed');
  sim.step([0, 0, 0]);
  const moved = ROVER.topSpeed * (sim.timescale / 60);
  const base = w.step + w.forward + w.smoothThrottle + w.smoothSteering;
  const stepToward = (d) => {
    sim.teleport(...at(d), TOWARD_CONSTRUCTION, ROVER.topSpeed);
    sim.state.prevSpeedCmd = 1;
    return sim.step([1, 0, 0]).reward;
  };
  // Past the orb's own start: each metre gained pays loadProgressScale.
  assert.ok(near(stepToward(1.5), base + w.loadProgressScale * moved, 1e-6));
  // Back over ground it has already gained: nothing.
  assert.ok(near(stepToward(1.0), base, 1e-9));
  // Dropped there: the drop penalty, nothing taken back.
  sim.teleport(...at(1.0), TOWARD_CONSTRUCTION, 0);
  const drop = sim.step([0, 0, 1]);
  assert.ok(near(drop.reward, w.step + w.idle + w.dropOutsideMin), `${drop.reward}`);
  // Grabbed again and carried over the same metres: nothing again.
  sim.teleport(...at(0.15), TOWARD_CONSTRUCTION);
  sim.step([0, 0, 0]);
  sim.step([0, 0, 1]);
  assert.equal(sim.state.heldCount, 1);
  assert.ok(near(stepToward(1.2), base, 1e-9));
  assert.ok(near(stepToward(1.5 + moved), base + w.loadProgressScale * moved, 1e-6), 'new ground pays again');
});
