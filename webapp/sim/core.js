// The rover simulation core: pure arithmetic, no DOM, no WebSocket, no timers, so it runs the
// same in a browser tab and under Node's test runner. One step() advances simulated time by
// timescale / 60 s whatever the wall clock does.

import { episodeSeed, mulberry32, toSeed32 } from './random.js';
import {
  ARENA_DIAGONAL,
  ARENA_HEIGHT,
  ARENA_WIDTH,
  CONSTRUCTION_CENTRE_X,
  CONSTRUCTION_CENTRE_Y,
  GRAB_ZONE,
  OBSTACLE_COUNT,
  ORB_COUNT,
  ORB_DEPOSITED,
  ORB_HELD,
  ORB_ON_GROUND,
  ORB_RADIUS,
  ROVER,
  createLayout,
  generateLayout,
  inBerm,
  inConstruction,
  inExcavation,
  inObstacleZone,
  inStart,
  zoneName,
} from './world.js';
import {
  IDLE_SPEED,
  OSCILLATION_DELTA,
  SMOOTH_DELTA,
  STAGES,
  dropOutsidePenalty,
  parseStage,
} from './stages.js';

export * from './world.js';
export * from './stages.js';
export { episodeSeed, mixSeeds, mulberry32, simSeed, toSeed32 } from './random.js';

export const OBSERVATION_SIZE = 30;
export const ACTION_SIZE = 3;
export const NEAREST_OBSTACLES = 5;
export const OBSTACLE_RADIUS_SCALE = 0.25; // observation: radius / 0.25
export const DEFAULT_MAX_STEPS = 10000;
export const DEFAULT_TIMESCALE = 2.0;
export const MAX_TIMESCALE = 100;
export const DIG_THRESHOLD = 0.5;
// Physics sub-step cap: keeps one integration step at or under 2 cm of travel, so a high
// timescale cannot tunnel the rover through a rock.
const MAX_SUBSTEP_SECONDS = 1 / 30;
const DROP_SPREAD = 0.15; // dropped orbs land in a small ring around the rover centre

const PI = Math.PI;
const TWO_PI = 2 * Math.PI;
const HALF_LENGTH = ROVER.length / 2;
const HALF_WIDTH = ROVER.width / 2;
const HALF_DIAGONAL = Math.hypot(HALF_LENGTH, HALF_WIDTH);

function clampUnit(v) {
  if (v > 1) return 1;
  if (v < -1) return -1;
  return v === v ? v : 0; // NaN -> 0
}
function finiteOr(v, fallback) {
  const n = +v;
  return n === n && n !== Infinity && n !== -Infinity ? n : fallback;
}
function clamp(v, lo, hi) {
  return v < lo ? lo : v > hi ? hi : v;
}
/** Angle into (-pi, pi]. */
export function wrapAngle(a) {
  while (a > PI) a -= TWO_PI;
  while (a <= -PI) a += TWO_PI;
  return a;
}
/** Bearing of (dx, dy) seen from a rover heading, divided by pi: in (-1, 1]. */
function relativeAngle(dx, dy, heading) {
  return wrapAngle(Math.atan2(dy, dx) - heading) / PI;
}

export class RoverSim {
  /**
   * @param {{seed?: number, stage?: number, obstacles?: number, maxSteps?: number, timescale?: number}} options
   * Call reset() before the first step().
   */
  constructor({
    seed = 0,
    stage = 1,
    obstacles = OBSTACLE_COUNT,
    maxSteps = DEFAULT_MAX_STEPS,
    timescale = DEFAULT_TIMESCALE,
  } = {}) {
    this.seed = toSeed32(seed);
    this.obstacleCount = OBSTACLE_COUNT;
    this.setObstacles(obstacles);
    this.episodeIndex = 0; // index k of the next episode; its seed is episodeSeed(seed, k)
    this.stage = parseStage(stage) ?? 1;
    this.weights = STAGES[this.stage];
    this.maxSteps = DEFAULT_MAX_STEPS;
    this.timescale = DEFAULT_TIMESCALE;
    this.setMaxSteps(maxSteps);
    this.setTimescale(timescale);
    this.started = false;
    /** Whole simulation state; tests and the drawing read it, tests may pose it directly. */
    this.state = {
      ...createLayout(),
      episodeSeed: 0,
      heldCount: 0,
      stepCount: 0,
      totalReward: 0,
      leftStart: false,
      collided: false,
      done: false,
      prevDig: 0,
      prevSpeedCmd: 0,
      prevTurnCmd: 0,
      prevDistance: 0, // rover centre to construction zone centre, for progress shaping
      prevOrb: -1, // nearest orb on the ground after the last step, for orb progress shaping
      prevOrbDistance: 0,
      wasInConstruction: false,
      reachedConstruction: false, // "reach the construction zone" is paid once per episode
      orbsCollected: 0,
      depositedConstruction: 0,
      depositedBerm: 0,
    };
    // Scratch space for the nearest-obstacle search (no allocation per step).
    this._obstacleDist = new Float64Array(this.state.obstacles.x.length);
    this._obstaclePicked = new Uint8Array(this.state.obstacles.x.length);
    this._nearestOrbDistance = 0;
  }

  setStage(stage) {
    const n = parseStage(stage);
    if (n === null) return false;
    this.stage = n;
    this.weights = STAGES[n]; // applies from the next step on
    return true;
  }

  /**
   * How many obstacles the next episodes place (0 to OBSTACLE_COUNT, the world of the spec);
   * effective at the next reset(). The curriculum's thinner fields, for this page only.
   */
  setObstacles(count) {
    const n = Number(count);
    if (!Number.isInteger(n) || n < 0 || n > OBSTACLE_COUNT) return false;
    this.obstacleCount = n;
    return true;
  }

  /** New seed; episode numbering restarts, effective at the next reset(). */
  setSeed(seed) {
    this.seed = toSeed32(seed);
    this.episodeIndex = 0;
  }

  setTimescale(timescale) {
    const t = finiteOr(timescale, NaN);
    if (!(t > 0)) return false;
    this.timescale = Math.min(t, MAX_TIMESCALE);
    return true;
  }

  setMaxSteps(maxSteps) {
    const n = Math.floor(finiteOr(maxSteps, NaN));
    if (!(n >= 1)) return false;
    this.maxSteps = n;
    return true;
  }

  /** Starts the next episode: new layout from episodeSeed(seed, k), counters cleared. */
  reset() {
    const st = this.state;
    st.episodeSeed = episodeSeed(this.seed, this.episodeIndex);
    this.episodeIndex++;
    generateLayout(mulberry32(st.episodeSeed), st, this.obstacleCount);
    st.heldCount = 0;
    st.stepCount = 0;
    st.totalReward = 0;
    st.leftStart = false;
    st.collided = false;
    st.done = false;
    st.prevDig = 0;
    st.prevSpeedCmd = 0;
    st.prevTurnCmd = 0;
    st.reachedConstruction = false;
    st.orbsCollected = 0;
    st.depositedConstruction = 0;
    st.depositedBerm = 0;
    this._syncTrackers();
    this.started = true;
    return { observation: this.observation(), info: this.info() };
  }

  /**
   * Puts the rover at a pose (for tests and tools). Keeps the shaping trackers consistent so
   * the move itself earns no progress or zone-entry reward.
   */
  teleport(x, y, heading = 0, speed = 0) {
    const r = this.state.rover;
    r.x = x;
    r.y = y;
    r.heading = wrapAngle(heading);
    r.speed = speed;
    this._syncTrackers();
  }

  _syncTrackers() {
    const st = this.state;
    const r = st.rover;
    st.prevDistance = Math.hypot(r.x - CONSTRUCTION_CENTRE_X, r.y - CONSTRUCTION_CENTRE_Y);
    st.wasInConstruction = inConstruction(r.x, r.y);
    if (st.wasInConstruction) st.reachedConstruction = true;
    if (!inStart(r.x, r.y)) st.leftStart = true;
    this._loadProgress(st.prevDistance);
    this._trackNearestOrb();
  }

  /** Remembers the nearest ground orb and its distance, for the next step's orb progress. */
  _trackNearestOrb() {
    const st = this.state;
    st.prevOrb = this._nearestOrb();
    st.prevOrbDistance = this._nearestOrbDistance;
  }

  /**
   * Index of the nearest orb on the ground (-1: none left); its distance in
   * this._nearestOrbDistance (no allocation per step).
   */
  _nearestOrb() {
    const st = this.state;
    const r = st.rover;
    const orbs = st.orbs;
    let best = -1;
    let bestD2 = Infinity;
    for (let i = 0; i < orbs.count; i++) {
      if (orbs.status[i] !== ORB_ON_GROUND) continue;
      const dx = orbs.x[i] - r.x;
      const dy = orbs.y[i] - r.y;
      const d2 = dx * dx + dy * dy;
      if (d2 < bestD2) {
        bestD2 = d2;
        best = i;
      }
    }
    this._nearestOrbDistance = best < 0 ? 0 : Math.sqrt(bestD2);
    return best;
  }

  /** One lock-step: action [speed -1..1, turn -1..1, dig 0..1]. */
  step(action) {
    if (!this.started) throw new Error('RoverSim.step() before reset()');
    const st = this.state;
    if (st.done) {
      // Finished episodes stay finished until reset(): answer again, earn nothing.
      return { observation: this.observation(), reward: 0, done: true, info: this.info() };
    }
    const a = action || [];
    const speedCmd = clamp(finiteOr(a[0], 0), -1, 1);
    const turnCmd = clamp(finiteOr(a[1], 0), -1, 1);
    const dig = clamp(finiteOr(a[2], 0), 0, 1);
    const w = this.weights;
    const r = st.rover;

    const collided = this._move(speedCmd, turnCmd);
    let reward = w.step;

    // Driving style: idle, backward, forward (scaled by speed), smoothness while driving forward.
    const speedFraction = r.speed / ROVER.topSpeed;
    if (speedFraction > -IDLE_SPEED && speedFraction < IDLE_SPEED) {
      reward += w.idle;
    } else if (speedFraction < 0) {
      reward += w.backward;
    } else {
      reward += w.forward * speedFraction;
      if (Math.abs(speedCmd - st.prevSpeedCmd) < SMOOTH_DELTA) reward += w.smoothThrottle;
      if (Math.abs(turnCmd - st.prevTurnCmd) < SMOOTH_DELTA) reward += w.smoothSteering;
    }
    if (speedCmd * st.prevSpeedCmd < 0 && Math.abs(speedCmd - st.prevSpeedCmd) > OSCILLATION_DELTA) {
      reward += w.oscillation;
    }

    if (!st.leftStart && !inStart(r.x, r.y)) {
      st.leftStart = true;
      reward += w.leaveStart;
    }

    const distance = Math.hypot(r.x - CONSTRUCTION_CENTRE_X, r.y - CONSTRUCTION_CENTRE_Y);
    if (w.progressScale !== 0) reward += w.progressScale * (st.prevDistance - distance);
    st.prevDistance = distance;
    if (w.loadProgressScale !== 0 && st.heldCount > 0) reward += w.loadProgressScale * this._loadProgress(distance);
    // Toward the nearest orb while empty; only while it stays the same orb, so a grab (the
    // nearest orb is gone) or a drop (a nearer one appears) is no jump in the shaping.
    if (w.orbProgressScale !== 0 && st.heldCount === 0 && st.prevOrb >= 0 && this._nearestOrb() === st.prevOrb) {
      reward += w.orbProgressScale * (st.prevOrbDistance - this._nearestOrbDistance);
    }

    const nowInConstruction = inConstruction(r.x, r.y);
    if (nowInConstruction && !st.reachedConstruction) {
      st.reachedConstruction = true;
      reward += w.reachConstruction;
    }
    if (nowInConstruction && !st.wasInConstruction && st.heldCount > 0 && this._firstEntry()) {
      reward += w.enterConstructionHolding;
    }
    st.wasInConstruction = nowInConstruction;

    if (collided) {
      st.collided = true;
      st.done = true;
      reward += w.collision;
    } else if (dig > DIG_THRESHOLD && st.prevDig <= DIG_THRESHOLD) {
      // Rising edge of dig toggles: release a load, or try to grab when empty.
      reward += st.heldCount > 0 ? this._release() : this._grab();
    }
    this._trackNearestOrb();
    st.prevDig = dig;
    st.prevSpeedCmd = speedCmd;
    st.prevTurnCmd = turnCmd;

    st.stepCount++;
    if (st.stepCount >= this.maxSteps) st.done = true;
    st.totalReward += reward;
    return { observation: this.observation(), reward, done: st.done, info: this.info() };
  }

  /** Tank kinematics with a rate-limited speed; returns true on a collision. */
  _move(speedCmd, turnCmd) {
    const r = this.state.rover;
    const dt = this.timescale / 60;
    const substeps = Math.max(1, Math.ceil(dt / MAX_SUBSTEP_SECONDS - 1e-9));
    const h = dt / substeps;
    const targetSpeed = speedCmd * ROVER.topSpeed;
    const maxDv = ROVER.maxAccel * h;
    const dHeading = turnCmd * ROVER.topTurnRate * h;
    for (let i = 0; i < substeps; i++) {
      const dv = targetSpeed - r.speed;
      r.speed += dv > maxDv ? maxDv : dv < -maxDv ? -maxDv : dv;
      r.heading = wrapAngle(r.heading + dHeading);
      const c = Math.cos(r.heading);
      const s = Math.sin(r.heading);
      r.x += r.speed * c * h;
      r.y += r.speed * s * h;
      if (this._collidesAt(c, s)) return true;
    }
    return false;
  }

  /** Rover footprint (oriented rectangle) against the walls and every obstacle disc. */
  _collidesAt(c, s) {
    const st = this.state;
    const r = st.rover;
    const ac = c < 0 ? -c : c;
    const as = s < 0 ? -s : s;
    const ex = HALF_LENGTH * ac + HALF_WIDTH * as;
    const ey = HALF_LENGTH * as + HALF_WIDTH * ac;
    if (r.x - ex < 0 || r.x + ex > ARENA_WIDTH || r.y - ey < 0 || r.y + ey > ARENA_HEIGHT) return true;
    const ob = st.obstacles;
    for (let i = 0; i < ob.count; i++) {
      const dx = ob.x[i] - r.x;
      const dy = ob.y[i] - r.y;
      const rad = ob.r[i];
      const reach = rad + HALF_DIAGONAL;
      if (dx * dx + dy * dy > reach * reach) continue;
      const lx = dx * c + dy * s; // obstacle centre in the rover frame
      const ly = -dx * s + dy * c;
      const qx = lx > HALF_LENGTH ? lx - HALF_LENGTH : lx < -HALF_LENGTH ? lx + HALF_LENGTH : 0;
      const qy = ly > HALF_WIDTH ? ly - HALF_WIDTH : ly < -HALF_WIDTH ? ly + HALF_WIDTH : 0;
      if (qx * qx + qy * qy < rad * rad) return true;
    }
    return false;
  }

  /** Is the point inside the scoop in front of the rover? (c, s: cos and sin of the heading) */
  _inGrabZone(x, y, c, s) {
    const r = this.state.rover;
    const dx = x - r.x;
    const dy = y - r.y;
    const lx = dx * c + dy * s;
    const ly = -dx * s + dy * c;
    return lx >= GRAB_ZONE.near && lx <= GRAB_ZONE.far && ly >= -GRAB_ZONE.halfWidth && ly <= GRAB_ZONE.halfWidth;
  }

  /** Picks up every ground orb in the grab zone; returns the reward. */
  _grab() {
    const st = this.state;
    const orbs = st.orbs;
    const c = Math.cos(st.rover.heading);
    const s = Math.sin(st.rover.heading);
    let reward = 0;
    let n = 0;
    for (let i = 0; i < orbs.count; i++) {
      if (orbs.status[i] !== ORB_ON_GROUND || !this._inGrabZone(orbs.x[i], orbs.y[i], c, s)) continue;
      orbs.status[i] = ORB_HELD;
      n++;
      if (!orbs.everGrabbed[i]) {
        // Paid once per orb per episode, so grab/drop cycles earn nothing.
        orbs.everGrabbed[i] = 1;
        st.orbsCollected++;
        reward += this.weights.grab;
      }
    }
    st.heldCount = n;
    return n === 0 ? this.weights.emptyGrab : reward;
  }

  /** Drops the load where the rover stands; scores a deposit or a drop outside. */
  _release() {
    const st = this.state;
    const r = st.rover;
    const orbs = st.orbs;
    const w = this.weights;
    const n = st.heldCount;
    const berm = inBerm(r.x, r.y);
    const deposit = berm || inConstruction(r.x, r.y);
    let k = 0;
    for (let i = 0; i < orbs.count; i++) {
      if (orbs.status[i] !== ORB_HELD) continue;
      const angle = r.heading + (k * TWO_PI) / n;
      const spread = n > 1 ? DROP_SPREAD : 0;
      orbs.x[i] = clamp(r.x + spread * Math.cos(angle), ORB_RADIUS, ARENA_WIDTH - ORB_RADIUS);
      orbs.y[i] = clamp(r.y + spread * Math.sin(angle), ORB_RADIUS, ARENA_HEIGHT - ORB_RADIUS);
      orbs.status[i] = deposit ? ORB_DEPOSITED : ORB_ON_GROUND;
      k++;
    }
    st.heldCount = 0;
    if (berm) {
      st.depositedBerm += n;
      return n * w.depositBerm;
    }
    if (deposit) {
      st.depositedConstruction += n;
      return n * w.depositConstruction;
    }
    // Nothing earned is taken back: each part of a delivery pays once per orb (grab, each metre
    // of the trip, the zone entry), so grab/drop cycles cannot farm it and a load lost to dig
    // noise keeps what it taught.
    return dropOutsidePenalty(w, n, ORB_COUNT);
  }

  /**
   * Metres the held orbs gained on their best distance to the construction centre (the rover's
   * centre stands for the load). Each metre of an orb's way pays once per episode: carrying it
   * back and forth, or dropping and carrying it again, earns nothing twice.
   */
  _loadProgress(distance) {
    const orbs = this.state.orbs;
    let gained = 0;
    for (let i = 0; i < orbs.count; i++) {
      if (orbs.status[i] !== ORB_HELD || distance >= orbs.bestDistance[i]) continue;
      gained += orbs.bestDistance[i] - distance;
      orbs.bestDistance[i] = distance;
    }
    return gained;
  }

  /** Marks the held orbs as carried into the construction zone; true if one never was before. */
  _firstEntry() {
    const orbs = this.state.orbs;
    let first = false;
    for (let i = 0; i < orbs.count; i++) {
      if (orbs.status[i] !== ORB_HELD || orbs.everEntered[i]) continue;
      orbs.everEntered[i] = 1;
      first = true;
    }
    return first;
  }

  /** The 30-float observation of docs/wire-protocol.md, each value finite in [-1, 1]. */
  observation() {
    const st = this.state;
    const r = st.rover;
    const o = new Array(OBSERVATION_SIZE);
    const c = Math.cos(r.heading);
    const s = Math.sin(r.heading);
    o[0] = clampUnit((r.x / ARENA_WIDTH) * 2 - 1);
    o[1] = clampUnit((r.y / ARENA_HEIGHT) * 2 - 1);
    o[2] = clampUnit(r.heading / PI);
    o[3] = clampUnit(r.speed / ROVER.topSpeed);
    o[4] = st.heldCount > 0 ? 1 : 0;
    o[5] = clampUnit(st.heldCount / ORB_COUNT);
    o[6] = inExcavation(r.x, r.y) ? 1 : 0;
    o[7] = inConstruction(r.x, r.y) ? 1 : 0;
    o[8] = inBerm(r.x, r.y) ? 1 : 0;
    o[9] = inObstacleZone(r.x, r.y) ? 1 : 0;

    // Nearest orb on the ground; the flag says whether a grab now would pick anything up.
    const orbs = st.orbs;
    const best = this._nearestOrb();
    let grabbable = 0;
    for (let i = 0; i < orbs.count && grabbable === 0; i++) {
      if (orbs.status[i] === ORB_ON_GROUND && this._inGrabZone(orbs.x[i], orbs.y[i], c, s)) grabbable = 1;
    }
    if (best < 0) {
      o[10] = 1;
      o[11] = 0;
      o[12] = 0;
    } else {
      o[10] = clampUnit(this._nearestOrbDistance / ARENA_DIAGONAL);
      o[11] = clampUnit(relativeAngle(orbs.x[best] - r.x, orbs.y[best] - r.y, r.heading));
      o[12] = grabbable;
    }

    // Five nearest obstacles by centre distance (selection over 11: cheaper than a sort).
    const ob = st.obstacles;
    const dist = this._obstacleDist;
    const picked = this._obstaclePicked;
    for (let i = 0; i < ob.count; i++) {
      const dx = ob.x[i] - r.x;
      const dy = ob.y[i] - r.y;
      dist[i] = dx * dx + dy * dy;
      picked[i] = 0;
    }
    for (let k = 0; k < NEAREST_OBSTACLES; k++) {
      let pick = -1;
      let pickD2 = Infinity;
      for (let i = 0; i < ob.count; i++) {
        if (!picked[i] && dist[i] < pickD2) {
          pickD2 = dist[i];
          pick = i;
        }
      }
      const base = 13 + 3 * k;
      if (pick < 0) {
        o[base] = 1;
        o[base + 1] = 0;
        o[base + 2] = 0;
        continue;
      }
      picked[pick] = 1;
      o[base] = clampUnit(Math.sqrt(pickD2) / ARENA_DIAGONAL);
      o[base + 1] = clampUnit(relativeAngle(ob.x[pick] - r.x, ob.y[pick] - r.y, r.heading));
      o[base + 2] = clampUnit(ob.r[pick] / OBSTACLE_RADIUS_SCALE);
    }

    const cdx = CONSTRUCTION_CENTRE_X - r.x;
    const cdy = CONSTRUCTION_CENTRE_Y - r.y;
    o[28] = clampUnit(Math.sqrt(cdx * cdx + cdy * cdy) / ARENA_DIAGONAL);
    o[29] = clampUnit(relativeAngle(cdx, cdy, r.heading));
    return o;
  }

  /** The info object of the protocol. */
  info() {
    const st = this.state;
    return {
      episode_length: st.stepCount,
      orbs_collected: st.orbsCollected,
      orbs_deposited_construction: st.depositedConstruction,
      orbs_deposited_berm: st.depositedBerm,
      collision_occurred: st.collided,
      zone: zoneName(st.rover.x, st.rover.y),
      total_reward: st.totalReward,
    };
  }
}
