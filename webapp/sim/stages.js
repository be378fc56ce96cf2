// Reward weights of the four training stages (rover-sim.md, "Rewards"). Every stage weighs
// the same terms; a zero switches a term off. Units: reward per step unless noted.

const STAGE_TABLE = {
  1: {
    name: 'driving',
    step: -0.01,
    collision: -200, // once, ends the episode
    leaveStart: 20, // once per episode
    idle: -1, // |speed| < IDLE_SPEED of top speed
    backward: -3,
    forward: 0.1, // scaled by speed / top speed
    smoothThrottle: 0.5, // while driving forward, speed command changed < SMOOTH_DELTA
    smoothSteering: 0.5, // while driving forward, turn command changed < SMOOTH_DELTA
    oscillation: -2, // speed command reversed by more than OSCILLATION_DELTA
    progressScale: 0, // reward per metre closer to the construction zone centre
    progressOnlyWhenHolding: false,
    grab: 0, // per orb, first pick-up of that orb in the episode
    enterConstructionHolding: 0, // once per load
    depositConstruction: 0, // per orb
    depositBerm: 0, // per orb
    dropOutsideMin: 0, // one orb dropped outside the construction zone
    dropOutsideMax: 0, // all orbs dropped outside at once
  },
  2: {
    name: 'navigation',
    step: -0.05,
    collision: -200,
    leaveStart: 50,
    idle: -1,
    backward: -3,
    forward: 0.5,
    smoothThrottle: 0.5,
    smoothSteering: 0.5,
    oscillation: -2,
    progressScale: 10,
    progressOnlyWhenHolding: false,
    grab: 0,
    enterConstructionHolding: 0,
    depositConstruction: 0,
    depositBerm: 0,
    dropOutsideMin: 0,
    dropOutsideMax: 0,
  },
  3: {
    name: 'orbs',
    step: -0.05,
    collision: -300,
    leaveStart: 30,
    idle: -1,
    backward: -3,
    forward: 0.3,
    smoothThrottle: 0.4,
    smoothSteering: 0.4,
    oscillation: -1.5,
    progressScale: 3,
    // Orbs lie in the excavation strip: pulling an empty rover toward the construction zone
    // would fight the grab reward, so this stage shapes only the trip with a load.
    progressOnlyWhenHolding: true,
    grab: 20,
    enterConstructionHolding: 150,
    depositConstruction: 400,
    depositBerm: 500,
    dropOutsideMin: -50,
    dropOutsideMax: -150,
  },
  4: {
    name: 'full task',
    step: -0.2,
    collision: -1000,
    leaveStart: 0,
    idle: -3,
    backward: -8,
    forward: 0,
    smoothThrottle: 0,
    smoothSteering: 0,
    oscillation: -5,
    progressScale: 0,
    progressOnlyWhenHolding: false,
    grab: 15,
    enterConstructionHolding: 100,
    depositConstruction: 1000,
    depositBerm: 2000,
    dropOutsideMin: -150,
    dropOutsideMax: -500,
  },
};

/** Thresholds shared by all stages (fractions of top speed / action units). */
export const IDLE_SPEED = 0.05;
export const SMOOTH_DELTA = 0.1;
export const OSCILLATION_DELTA = 0.5;

export const STAGES = Object.freeze(
  Object.fromEntries(Object.entries(STAGE_TABLE).map(([k, w]) => [k, Object.freeze(w)])),
);
export const STAGE_NUMBERS = Object.freeze([1, 2, 3, 4]);

/** Stage number from any input, or null when it is not 1-4. */
export function parseStage(value) {
  const n = Number(value);
  return Number.isInteger(n) && n >= 1 && n <= 4 ? n : null;
}

/** Drop-outside penalty for n orbs: dropOutsideMin for one orb, dropOutsideMax for all 15. */
export function dropOutsidePenalty(weights, n, orbCount) {
  if (n <= 0) return 0;
  const f = orbCount > 1 ? Math.min(1, (n - 1) / (orbCount - 1)) : 1;
  return weights.dropOutsideMin + (weights.dropOutsideMax - weights.dropOutsideMin) * f;
}
