// Reward weights of the four training stages (rover-sim.md, "Rewards"). Every stage weighs
// the same terms; a zero switches a term off. Units: reward per step unless noted.

const STAGE_TABLE = {
  1: {
    name: 'driving',
    step: 0,
    collision: -10, // once, ends the episode
    leaveStart: 0.5, // once per episode
    idle: -0.01, // |speed| < IDLE_SPEED of top speed
    backward: -0.01,
    forward: 0.01, // scaled by speed / top speed
    smoothThrottle: 0.005, // while driving forward, speed command changed < SMOOTH_DELTA
    smoothSteering: 0.005, // while driving forward, turn command changed < SMOOTH_DELTA
    oscillation: -0.01, // speed command reversed by more than OSCILLATION_DELTA
    progressScale: 0, // reward per metre the rover gets closer to the construction zone centre
    reachConstruction: 0, // once per episode, the first time the rover is in the construction zone
    loadProgressScale: 0, // reward per metre a held orb beats its best distance to that centre
    orbProgressScale: 0, // reward per metre closer to the nearest orb on the ground, while empty
    grab: 0, // per orb, first pick-up of that orb in the episode
    emptyGrab: -0.01, // a dig press while empty with no orb in the scoop (teaches dig to stay low)
    enterConstructionHolding: 0, // once per load that holds an orb never carried in before
    depositConstruction: 0, // per orb
    depositBerm: 0, // per orb
    dropOutsideMin: 0, // one orb dropped outside the construction zone
    dropOutsideMax: 0, // all orbs dropped outside at once
  },
  2: {
    name: 'navigation',
    step: -0.0005,
    collision: -10,
    leaveStart: 1,
    idle: -0.01,
    backward: -0.04, // outweighs any progress shaping a reversing rover could earn
    // Driving style is stage 1's lesson: kept small here, so that driving safely in circles for
    // a whole episode pays less than the way to the construction zone.
    forward: 0.002,
    smoothThrottle: 0.001,
    smoothSteering: 0.001,
    oscillation: -0.004,
    progressScale: 2,
    reachConstruction: 5,
    loadProgressScale: 0,
    orbProgressScale: 0,
    grab: 0,
    emptyGrab: -0.01, // a dig press while empty with no orb in the scoop (teaches dig to stay low)
    enterConstructionHolding: 0,
    depositConstruction: 0,
    depositBerm: 0,
    dropOutsideMin: 0,
    dropOutsideMax: 0,
  },
  3: {
    name: 'orbs',
    step: -0.001,
    collision: -10,
    leaveStart: 0.3,
    idle: -0.01,
    backward: -0.04,
    forward: 0.001,
    smoothThrottle: 0.0005,
    smoothSteering: 0.0005,
    oscillation: -0.003,
    // Orbs lie in the excavation strip: pulling an empty rover toward the construction zone
    // would fight the grab reward, so this stage shapes only the trip with a load (each metre
    // of an orb's way once), and the trip to an orb without one.
    progressScale: 0,
    reachConstruction: 0,
    loadProgressScale: 2,
    orbProgressScale: 0.5,
    grab: 0.5,
    emptyGrab: -0.01, // a dig press while empty with no orb in the scoop (teaches dig to stay low)
    enterConstructionHolding: 2,
    depositConstruction: 4,
    depositBerm: 5,
    dropOutsideMin: -0.5,
    dropOutsideMax: -1.5,
  },
  4: {
    name: 'full task',
    step: -0.002,
    collision: -10,
    leaveStart: 0,
    idle: -0.01,
    backward: -0.02,
    forward: 0,
    smoothThrottle: 0,
    smoothSteering: 0,
    oscillation: -0.02,
    progressScale: 0,
    reachConstruction: 0,
    loadProgressScale: 0,
    orbProgressScale: 0,
    grab: 2, // per orb, once an episode: collecting pays in the stage that scores it (change 10)
    emptyGrab: -0.01, // a dig press while empty with no orb in the scoop (teaches dig to stay low)
    enterConstructionHolding: 3,
    // A delivery must outweigh the collision it risks on the way (docs/rover-sim.md, change 9).
    depositConstruction: 30,
    depositBerm: 40,
    dropOutsideMin: -1,
    dropOutsideMax: -3,
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
