// Seeded randomness. Everything random in the simulation flows from one 32-bit seed
// per episode, so a run is reproducible from (sim seed, episode index) alone.

/** mulberry32: a tiny, fast 32-bit PRNG; returns a function giving floats in [0, 1). */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Any number (negative, fractional, > 2^32) to an unsigned 32-bit seed. */
export function toSeed32(value) {
  const n = Number(value);
  return Number.isFinite(n) ? Math.trunc(n) >>> 0 : 0;
}

/** Hash two 32-bit integers into one (murmur3 finaliser), so nearby inputs give unrelated seeds. */
export function mixSeeds(a, b) {
  let h = (a >>> 0) ^ Math.imul((b >>> 0) + 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Seed of the episode with index k of a simulation seeded `seed`. */
export function episodeSeed(seed, k) {
  return mixSeeds(toSeed32(seed), k);
}

/**
 * Seed of simulation i of a tab seeded `seed`. Simulation 0 keeps the tab's seed, so a tab
 * with sims=1 and the first simulation of a batched tab play the same episodes.
 */
export function simSeed(seed, i) {
  return i === 0 ? toSeed32(seed) : mixSeeds(toSeed32(seed) ^ 0x5bd1e995, i);
}
