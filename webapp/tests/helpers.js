// Shared set-ups for the tests: known poses in a cleared arena.
import {
  CONSTRUCTION_CENTRE_X,
  CONSTRUCTION_CENTRE_Y,
  ORB_DEPOSITED,
  ORB_ON_GROUND,
  RoverSim,
  STAGES,
  mulberry32,
} from '../sim/core.js';

/**
 * A reset sim with no obstacles and every orb out of play (parked in the top-left corner as
 * deposited), so no orb shaping colours a driving test; placeOrb puts orbs back on the ground.
 */
export function clearedSim(options = {}) {
  const sim = new RoverSim({ seed: 1, ...options });
  sim.reset();
  const st = sim.state;
  st.obstacles.count = 0;
  for (let i = 0; i < st.orbs.count; i++) {
    st.orbs.x[i] = 0.15;
    st.orbs.y[i] = 4.85;
    st.orbs.status[i] = ORB_DEPOSITED;
  }
  resyncShaping(sim);
  return sim;
}

/** Puts orb i on the ground at (x, y). */
export function placeOrb(sim, i, x, y) {
  const orbs = sim.state.orbs;
  orbs.x[i] = x;
  orbs.y[i] = y;
  orbs.status[i] = ORB_ON_GROUND;
  orbs.bestDistance[i] = Math.hypot(x - CONSTRUCTION_CENTRE_X, y - CONSTRUCTION_CENTRE_Y);
  resyncShaping(sim);
}

/** Moving things by hand is no progress: teleport in place keeps the shaping trackers in step. */
function resyncShaping(sim) {
  const r = sim.state.rover;
  sim.teleport(r.x, r.y, r.heading, r.speed);
}

/** Steps n times with one action; returns the results. */
export function drive(sim, action, n) {
  const results = [];
  for (let i = 0; i < n; i++) results.push(sim.step(action));
  return results;
}

/** A deterministic random action source. */
export function randomActions(seed) {
  const rng = mulberry32(seed);
  return () => [rng() * 2 - 1, rng() * 2 - 1, rng()];
}

export { STAGES };
export const STAGE_LIST = [1, 2, 3, 4];
export const near = (a, b, eps = 1e-9) => Math.abs(a - b) <= eps;
