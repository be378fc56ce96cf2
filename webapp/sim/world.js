// The arena: fixed geometry (metres, origin bottom-left, y up) and the random layout of one
// episode (obstacles, orbs, rover start pose). No DOM, no timers.

export const ARENA_WIDTH = 6.8;
export const ARENA_HEIGHT = 5.0;
export const ARENA_DIAGONAL = Math.hypot(ARENA_WIDTH, ARENA_HEIGHT);

/** Axis-aligned zones as {x0, y0, x1, y1}. */
export const START_ZONE = Object.freeze({ x0: 0, y0: 0, x1: 2.0, y1: 2.0 });
export const EXCAVATION_ZONE = Object.freeze({ x0: 0, y0: 0, x1: 2.5, y1: ARENA_HEIGHT });
export const OBSTACLE_ZONE = Object.freeze({ x0: 2.5, y0: 0, x1: ARENA_WIDTH, y1: ARENA_HEIGHT });
export const CONSTRUCTION_ZONE = Object.freeze({ x0: ARENA_WIDTH - 3.0, y0: 0, x1: ARENA_WIDTH, y1: 1.5 });
// The berm sits centred in the construction zone, so the rover can stand on it without
// its body touching the bottom or right wall.
export const BERM = Object.freeze({
  x0: (CONSTRUCTION_ZONE.x0 + CONSTRUCTION_ZONE.x1) / 2 - 0.85,
  y0: (CONSTRUCTION_ZONE.y0 + CONSTRUCTION_ZONE.y1) / 2 - 0.4,
  x1: (CONSTRUCTION_ZONE.x0 + CONSTRUCTION_ZONE.x1) / 2 + 0.85,
  y1: (CONSTRUCTION_ZONE.y0 + CONSTRUCTION_ZONE.y1) / 2 + 0.4,
});
export const CONSTRUCTION_CENTRE_X = (CONSTRUCTION_ZONE.x0 + CONSTRUCTION_ZONE.x1) / 2;
export const CONSTRUCTION_CENTRE_Y = (CONSTRUCTION_ZONE.y0 + CONSTRUCTION_ZONE.y1) / 2;

export const ROVER = Object.freeze({
  length: 1.5,
  width: 1.0,
  topSpeed: 0.5, // m/s at action speed 1
  topTurnRate: 1.0, // rad/s at action turn 1
  maxAccel: 1.0, // m/s^2: speed changes are rate-limited
});
/** Grab zone in the rover frame (x forward): a scoop just ahead of the front edge. */
export const GRAB_ZONE = Object.freeze({ near: 0.6, far: 1.15, halfWidth: 0.45 });

export const ORB_COUNT = 15;
export const ORB_RADIUS = 0.075;
export const ORB_ON_GROUND = 0; // orb status values
export const ORB_HELD = 1;
export const ORB_DEPOSITED = 2;
export const ROCK_COUNT = 7;
export const CRATER_COUNT = 4;
export const OBSTACLE_COUNT = ROCK_COUNT + CRATER_COUNT;
export const ROCK_RADIUS = Object.freeze([0.15, 0.2]);
export const CRATER_RADIUS = Object.freeze([0.15, 0.25]);
export const OBSTACLE_SPACING = 0.67; // minimum centre-to-centre distance
export const OBSTACLE_KIND_ROCK = 0;
export const OBSTACLE_KIND_CRATER = 1;
const WALL_MARGIN = 0.05; // keeps obstacles and the start pose off the walls
const CONSTRUCTION_MARGIN = 0.1; // keeps obstacles off the construction zone

export function inZone(zone, x, y) {
  return x >= zone.x0 && x <= zone.x1 && y >= zone.y0 && y <= zone.y1;
}
export function inExcavation(x, y) {
  return x < EXCAVATION_ZONE.x1;
}
export function inConstruction(x, y) {
  return x >= CONSTRUCTION_ZONE.x0 && y <= CONSTRUCTION_ZONE.y1;
}
export function inBerm(x, y) {
  return inZone(BERM, x, y);
}
/** Obstacle zone: right of the excavation strip, except where the construction zone is. */
export function inObstacleZone(x, y) {
  return x >= OBSTACLE_ZONE.x0 && !inConstruction(x, y);
}
export function inStart(x, y) {
  return x <= START_ZONE.x1 && y <= START_ZONE.y1;
}

/** Name of the most specific zone at a point (the rover's centre). */
export function zoneName(x, y) {
  if (inBerm(x, y)) return 'berm';
  if (inConstruction(x, y)) return 'construction';
  if (inStart(x, y)) return 'start';
  if (inExcavation(x, y)) return 'excavation';
  return 'obstacle';
}

/** Half extents of the rover's axis-aligned bounding box at a heading. */
export function roverHalfExtents(heading) {
  const c = Math.abs(Math.cos(heading));
  const s = Math.abs(Math.sin(heading));
  const hl = ROVER.length / 2;
  const hw = ROVER.width / 2;
  return [hl * c + hw * s, hl * s + hw * c];
}

function uniform(rng, lo, hi) {
  return lo + (hi - lo) * rng();
}

/** Distance from a point to an axis-aligned rectangle (0 inside). */
function distanceToRect(zone, x, y) {
  const dx = Math.max(zone.x0 - x, 0, x - zone.x1);
  const dy = Math.max(zone.y0 - y, 0, y - zone.y1);
  return Math.hypot(dx, dy);
}

/**
 * Places the obstacles: wholly inside the obstacle zone, clear of the construction zone
 * and the walls, centres at least OBSTACLE_SPACING apart, leaving the rover a way from the
 * start zone to the berm. Rejection sampling; a dead end or a blocked layout restarts the
 * whole placement (still deterministic for the rng).
 */
function placeObstacles(rng, obstacles, count) {
  for (;;) {
    let placed = 0;
    let tries = 0;
    while (placed < count && tries < 5000) {
      tries++;
      const crater = placed >= ROCK_COUNT;
      const [rMin, rMax] = crater ? CRATER_RADIUS : ROCK_RADIUS;
      const r = uniform(rng, rMin, rMax);
      const x = uniform(rng, OBSTACLE_ZONE.x0 + r, ARENA_WIDTH - r - WALL_MARGIN);
      const y = uniform(rng, r + WALL_MARGIN, ARENA_HEIGHT - r - WALL_MARGIN);
      if (distanceToRect(CONSTRUCTION_ZONE, x, y) < r + CONSTRUCTION_MARGIN) continue;
      let clear = true;
      for (let j = 0; j < placed; j++) {
        const dx = obstacles.x[j] - x;
        const dy = obstacles.y[j] - y;
        if (dx * dx + dy * dy < OBSTACLE_SPACING * OBSTACLE_SPACING) {
          clear = false;
          break;
        }
      }
      if (!clear) continue;
      obstacles.x[placed] = x;
      obstacles.y[placed] = y;
      obstacles.r[placed] = r;
      obstacles.kind[placed] = crater ? OBSTACLE_KIND_CRATER : OBSTACLE_KIND_ROCK;
      placed++;
    }
    obstacles.count = placed;
    if (placed === count && hasClearPath(obstacles)) return;
  }
}

// Path check on a grid of rover-centre positions: a cell is free when a disc of
// PATH_CLEARANCE (half the rover width plus a margin) around it touches no wall or
// obstacle. Without this check, 11 obstacles 0.67 m apart wall off the construction zone
// from a 1 m wide rover in over a third of random layouts.
const PATH_CELL = 0.1;
const PATH_CLEARANCE = ROVER.width / 2 + 0.15;
const GRID_X = Math.round(ARENA_WIDTH / PATH_CELL);
const GRID_Y = Math.round(ARENA_HEIGHT / PATH_CELL);
const gridState = new Uint8Array(GRID_X * GRID_Y); // 0 unknown, 1 blocked, 2 visited
const gridQueue = new Int32Array(GRID_X * GRID_Y);

function cellIndex(x, y) {
  return Math.floor(y / PATH_CELL) * GRID_X + Math.floor(x / PATH_CELL);
}

function cellBlocked(index, obstacles) {
  const x = ((index % GRID_X) + 0.5) * PATH_CELL;
  const y = (Math.floor(index / GRID_X) + 0.5) * PATH_CELL;
  const c = PATH_CLEARANCE;
  if (x < c || y < c || x > ARENA_WIDTH - c || y > ARENA_HEIGHT - c) return true;
  for (let i = 0; i < obstacles.count; i++) {
    const dx = obstacles.x[i] - x;
    const dy = obstacles.y[i] - y;
    const reach = obstacles.r[i] + c;
    if (dx * dx + dy * dy < reach * reach) return true;
  }
  return false;
}

/** Can the rover get from the start zone centre to the berm centre? (breadth-first search) */
export function hasClearPath(obstacles) {
  gridState.fill(0);
  const start = cellIndex((START_ZONE.x0 + START_ZONE.x1) / 2, (START_ZONE.y0 + START_ZONE.y1) / 2);
  const goal = cellIndex((BERM.x0 + BERM.x1) / 2, (BERM.y0 + BERM.y1) / 2);
  let head = 0;
  let tail = 0;
  gridQueue[tail++] = start;
  gridState[start] = 2;
  while (head < tail) {
    const cell = gridQueue[head++];
    if (cell === goal) return true;
    const cx = cell % GRID_X;
    for (let k = 0; k < 4; k++) {
      const nx = cx + (k === 0 ? 1 : k === 1 ? -1 : 0);
      const next = cell + (k === 0 ? 1 : k === 1 ? -1 : k === 2 ? GRID_X : -GRID_X);
      if (nx < 0 || nx >= GRID_X || next < 0 || next >= gridState.length || gridState[next] !== 0) continue;
      if (cellBlocked(next, obstacles)) {
        gridState[next] = 1;
        continue;
      }
      gridState[next] = 2;
      gridQueue[tail++] = next;
    }
  }
  return false;
}

/** Scatters the orbs over the excavation strip, a little apart so they read as separate. */
function placeOrbs(rng, orbs) {
  const minGap = 2 * ORB_RADIUS + 0.05;
  for (let i = 0; i < ORB_COUNT; i++) {
    let x = 0;
    let y = 0;
    for (let tries = 0; tries < 50; tries++) {
      x = uniform(rng, ORB_RADIUS + WALL_MARGIN, EXCAVATION_ZONE.x1 - ORB_RADIUS);
      y = uniform(rng, ORB_RADIUS + WALL_MARGIN, ARENA_HEIGHT - ORB_RADIUS - WALL_MARGIN);
      let clear = true;
      for (let j = 0; j < i; j++) {
        const dx = orbs.x[j] - x;
        const dy = orbs.y[j] - y;
        if (dx * dx + dy * dy < minGap * minGap) {
          clear = false;
          break;
        }
      }
      if (clear) break;
    }
    orbs.x[i] = x;
    orbs.y[i] = y;
    orbs.status[i] = ORB_ON_GROUND;
    orbs.everGrabbed[i] = 0;
    orbs.everEntered[i] = 0;
    orbs.bestDistance[i] = Math.hypot(x - CONSTRUCTION_CENTRE_X, y - CONSTRUCTION_CENTRE_Y);
  }
  orbs.count = ORB_COUNT;
}

/** Random start pose with the whole rover body inside the starting zone, off the walls. */
function placeRover(rng, rover) {
  const heading = uniform(rng, -Math.PI, Math.PI);
  const [ex, ey] = roverHalfExtents(heading);
  rover.heading = heading;
  rover.x = uniform(rng, ex + WALL_MARGIN, START_ZONE.x1 - ex);
  rover.y = uniform(rng, ey + WALL_MARGIN, START_ZONE.y1 - ey);
  rover.speed = 0;
}

/** Fresh, typed storage for one episode's layout (reused across episodes: no allocation). */
export function createLayout() {
  return {
    rover: { x: 0, y: 0, heading: 0, speed: 0 },
    obstacles: {
      count: 0,
      x: new Float64Array(OBSTACLE_COUNT),
      y: new Float64Array(OBSTACLE_COUNT),
      r: new Float64Array(OBSTACLE_COUNT),
      kind: new Uint8Array(OBSTACLE_COUNT),
    },
    orbs: {
      count: 0,
      x: new Float64Array(ORB_COUNT),
      y: new Float64Array(ORB_COUNT),
      status: new Uint8Array(ORB_COUNT),
      everGrabbed: new Uint8Array(ORB_COUNT),
      everEntered: new Uint8Array(ORB_COUNT), // carried into the construction zone this episode
      bestDistance: new Float64Array(ORB_COUNT), // nearest it has been to the construction centre
    },
  };
}

/**
 * Fills a layout for one episode from its rng. Order is fixed: obstacles, orbs, rover.
 * `obstacleCount` below OBSTACLE_COUNT places the first ones of the usual order (rocks, then
 * craters): the curriculum's thinner fields (docs/rover-sim.md, change 8).
 */
export function generateLayout(rng, layout, obstacleCount = OBSTACLE_COUNT) {
  placeObstacles(rng, layout.obstacles, obstacleCount);
  placeOrbs(rng, layout.orbs);
  placeRover(rng, layout.rover);
}
