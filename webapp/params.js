// Page URL parameters (docs/wire-protocol.md, "Addresses"). Pure: takes location.search.

import { DEFAULT_MAX_STEPS, DEFAULT_TIMESCALE, MAX_TIMESCALE, parseStage, toSeed32 } from './sim/core.js';

export const DEFAULT_PORT = 8765; // used by the "Connect to Python" button
export const MAX_SIMS = 64;

function integer(text, fallback, min, max) {
  if (text === null || text.trim() === '') return fallback;
  const n = Number(text);
  return Number.isInteger(n) && n >= min && n <= max ? n : fallback;
}

function flag(text) {
  return text !== null && ['1', 'true', 'yes', 'on'].includes(text.toLowerCase());
}

/**
 * @param {string} search e.g. "?wsPort=8766&maxSteps=5000"
 * @returns {{wsPort: number|null, maxSteps: number, seed: number, stage: number,
 *   timescale: number, token: string|null, sims: number, watch: boolean, realtime: boolean,
 *   socket: 'page'|'worker'}}
 */
export function parseParams(search) {
  const q = new URLSearchParams(search);
  const timescale = Number(q.get('timescale'));
  const seedText = q.get('seed');
  return {
    wsPort: integer(q.get('wsPort'), null, 1, 65535),
    maxSteps: integer(q.get('maxSteps'), DEFAULT_MAX_STEPS, 1, Number.MAX_SAFE_INTEGER),
    seed: seedText === null || seedText.trim() === '' ? 0 : toSeed32(seedText),
    stage: parseStage(q.get('stage')) ?? 1,
    timescale: q.get('timescale') !== null && timescale > 0 ? Math.min(timescale, MAX_TIMESCALE) : DEFAULT_TIMESCALE,
    token: q.get('token') || null,
    sims: integer(q.get('sims'), 1, 1, MAX_SIMS),
    watch: flag(q.get('watch')),
    realtime: flag(q.get('realtime')),
    socket: q.get('socket') === 'worker' ? 'worker' : 'page', // where the WebSocket lives (socket_link.js)
  };
}

/** WebSocket address of the Python side for a port, with the run token when there is one. */
export function socketUrl(port, token) {
  const query = token ? `?token=${encodeURIComponent(token)}` : '';
  return `ws://localhost:${port}/${query}`;
}
