// Canvas view of one simulation. Drawing never sits in the step path: a throttled
// animation-frame loop paints the current state a few times a second, and only when
// someone looks (not under automation unless watch=1).

import {
  ARENA_HEIGHT,
  ARENA_WIDTH,
  BERM,
  CONSTRUCTION_ZONE,
  EXCAVATION_ZONE,
  GRAB_ZONE,
  OBSTACLE_KIND_CRATER,
  OBSTACLE_ZONE,
  ORB_DEPOSITED,
  ORB_ON_GROUND,
  ORB_RADIUS,
  ROVER,
  START_ZONE,
} from './sim/core.js';

export const DRAW_INTERVAL_MS = 200; // at most ~5 frames a second

const COLOURS = {
  ground: '#3b3d45',
  excavation: '#6b5a45',
  obstacleZone: '#4a4d57',
  construction: '#2f6b4f',
  berm: '#c9a23a',
  start: '#7fb2ff',
  wall: '#15161a',
  rock: '#9a9ca3',
  rockEdge: '#5c5e66',
  crater: '#1c1d22',
  craterRim: '#777a84',
  orb: '#e8f4ff',
  orbEdge: '#7aa6d6',
  deposited: '#ffd65c',
  heldOrb: '#3d7fd1',
  rover: '#e6e6e6',
  roverEdge: '#222',
  roverFront: '#ff5a36',
  grabZone: 'rgba(255, 214, 92, 0.8)',
  label: 'rgba(255, 255, 255, 0.75)',
};

/** Should this page draw at all? People yes; automation only when asked (watch=1). */
export function shouldDraw({ watch }, nav = globalThis.navigator) {
  return watch || !(nav && nav.webdriver);
}

/** Paints `getSim()` on the canvas at most every DRAW_INTERVAL_MS; returns a stop function. */
export function startDrawing(canvas, getSim) {
  const ctx = canvas.getContext('2d');
  let last = -Infinity;
  let handle = 0;
  const frame = (now) => {
    if (now - last >= DRAW_INTERVAL_MS) {
      last = now;
      drawSim(ctx, getSim());
    }
    handle = requestAnimationFrame(frame);
  };
  handle = requestAnimationFrame(frame);
  return () => cancelAnimationFrame(handle);
}

/** Draws the arena, zones, obstacles, orbs and rover of a simulation (or the bare arena). */
export function drawSim(ctx, sim) {
  const { width, height } = ctx.canvas;
  const scale = Math.min(width / ARENA_WIDTH, height / ARENA_HEIGHT);
  const toWorld = () => ctx.setTransform(scale, 0, 0, -scale, 0, ARENA_HEIGHT * scale); // metres, y up
  const toPixels = () => ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.save();
  toPixels();
  ctx.clearRect(0, 0, width, height);
  toWorld();
  drawZones(ctx, scale);
  toPixels();
  drawLabels(ctx, scale); // under the objects, so the rover covers them rather than the reverse
  if (sim && sim.started) {
    const st = sim.state;
    toWorld();
    drawObstacles(ctx, st.obstacles, scale);
    drawOrbs(ctx, st.orbs, scale);
    drawRover(ctx, st, scale);
    toPixels();
    drawHud(ctx, sim);
  }
  ctx.restore();
}

function fillZone(ctx, zone, colour) {
  ctx.fillStyle = colour;
  ctx.fillRect(zone.x0, zone.y0, zone.x1 - zone.x0, zone.y1 - zone.y0);
}

function drawZones(ctx, scale) {
  fillZone(ctx, { x0: 0, y0: 0, x1: ARENA_WIDTH, y1: ARENA_HEIGHT }, COLOURS.ground);
  fillZone(ctx, EXCAVATION_ZONE, COLOURS.excavation);
  fillZone(ctx, OBSTACLE_ZONE, COLOURS.obstacleZone);
  fillZone(ctx, CONSTRUCTION_ZONE, COLOURS.construction);
  fillZone(ctx, BERM, COLOURS.berm);
  ctx.lineWidth = 2 / scale;
  ctx.setLineDash([8 / scale, 6 / scale]);
  ctx.strokeStyle = COLOURS.start;
  ctx.strokeRect(START_ZONE.x0, START_ZONE.y0, START_ZONE.x1 - START_ZONE.x0, START_ZONE.y1 - START_ZONE.y0);
  ctx.setLineDash([]);
  ctx.lineWidth = 6 / scale;
  ctx.strokeStyle = COLOURS.wall;
  ctx.strokeRect(0, 0, ARENA_WIDTH, ARENA_HEIGHT);
}

function drawObstacles(ctx, obstacles, scale) {
  for (let i = 0; i < obstacles.count; i++) {
    const x = obstacles.x[i];
    const y = obstacles.y[i];
    const r = obstacles.r[i];
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    if (obstacles.kind[i] === OBSTACLE_KIND_CRATER) {
      // A crater: a dark pit with a light rim.
      ctx.fillStyle = COLOURS.crater;
      ctx.fill();
      ctx.lineWidth = 3 / scale;
      ctx.strokeStyle = COLOURS.craterRim;
    } else {
      ctx.fillStyle = COLOURS.rock;
      ctx.fill();
      ctx.lineWidth = 2 / scale;
      ctx.strokeStyle = COLOURS.rockEdge;
    }
    ctx.stroke();
  }
}

function drawOrbs(ctx, orbs, scale) {
  ctx.lineWidth = 1 / scale;
  for (let i = 0; i < orbs.count; i++) {
    const status = orbs.status[i];
    if (status !== ORB_ON_GROUND && status !== ORB_DEPOSITED) continue; // held ones ride the rover
    ctx.beginPath();
    ctx.arc(orbs.x[i], orbs.y[i], ORB_RADIUS, 0, 2 * Math.PI);
    ctx.fillStyle = status === ORB_DEPOSITED ? COLOURS.deposited : COLOURS.orb;
    ctx.fill();
    ctx.strokeStyle = COLOURS.orbEdge;
    ctx.stroke();
  }
}

function drawRover(ctx, st, scale) {
  const r = st.rover;
  const hl = ROVER.length / 2;
  const hw = ROVER.width / 2;
  ctx.save();
  ctx.translate(r.x, r.y);
  ctx.rotate(r.heading);
  // Grab zone (dashed) ahead of the front.
  ctx.setLineDash([5 / scale, 4 / scale]);
  ctx.lineWidth = 1.5 / scale;
  ctx.strokeStyle = COLOURS.grabZone;
  ctx.strokeRect(GRAB_ZONE.near, -GRAB_ZONE.halfWidth, GRAB_ZONE.far - GRAB_ZONE.near, 2 * GRAB_ZONE.halfWidth);
  ctx.setLineDash([]);
  // Body, with a red bar and arrow at the front.
  ctx.fillStyle = st.collided ? '#ff8a8a' : COLOURS.rover;
  ctx.fillRect(-hl, -hw, 2 * hl, 2 * hw);
  ctx.lineWidth = 2 / scale;
  ctx.strokeStyle = COLOURS.roverEdge;
  ctx.strokeRect(-hl, -hw, 2 * hl, 2 * hw);
  ctx.fillStyle = COLOURS.roverFront;
  ctx.fillRect(hl - 0.12, -hw, 0.12, 2 * hw);
  ctx.beginPath();
  ctx.moveTo(hl - 0.45, 0.18);
  ctx.lineTo(hl - 0.45, -0.18);
  ctx.lineTo(hl - 0.18, 0);
  ctx.closePath();
  ctx.fill();
  // Held orbs: a grid of dots in the bed of the rover (darker, to stand out on the body).
  ctx.fillStyle = COLOURS.heldOrb;
  for (let k = 0; k < st.heldCount; k++) {
    const col = k % 5;
    const row = Math.floor(k / 5);
    ctx.beginPath();
    ctx.arc(-0.55 + col * 0.2, 0.25 - row * 0.25, ORB_RADIUS, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.restore();
}

function drawLabels(ctx, scale) {
  const px = (x) => x * scale;
  const py = (y) => (ARENA_HEIGHT - y) * scale;
  ctx.font = '12px sans-serif';
  ctx.fillStyle = COLOURS.label;
  // Top labels sit below the HUD line.
  ctx.fillText('excavation', px(0.1), py(ARENA_HEIGHT - 0.45));
  ctx.fillText('start', px(0.1), py(START_ZONE.y1 - 0.2));
  ctx.fillText('obstacles', px(OBSTACLE_ZONE.x0 + 0.1), py(ARENA_HEIGHT - 0.45));
  ctx.fillText('construction', px(CONSTRUCTION_ZONE.x0 + 0.1), py(CONSTRUCTION_ZONE.y1 - 0.2));
  ctx.fillText('berm', px(BERM.x0 + 0.05), py(BERM.y0 + 0.08));
}

function drawHud(ctx, sim) {
  const st = sim.state;
  const text =
    `step ${st.stepCount}  reward ${st.totalReward.toFixed(1)}  stage ${sim.stage}  ` +
    `held ${st.heldCount}  deposited ${st.depositedConstruction}+${st.depositedBerm}` +
    (st.collided ? '  COLLISION' : '');
  ctx.font = '12px monospace';
  ctx.fillStyle = 'rgba(0, 0, 0, 0.5)';
  ctx.fillRect(4, 4, ctx.measureText(text).width + 10, 17);
  ctx.fillStyle = '#fff';
  ctx.fillText(text, 9, 16);
}
