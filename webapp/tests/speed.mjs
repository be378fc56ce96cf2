// Prints the steps per second of the simulation core (not a test): node webapp/tests/speed.mjs
import { RoverSim, mulberry32 } from '../sim/core.js';

function measure(stage, steps) {
  const sim = new RoverSim({ seed: 7, stage });
  sim.reset();
  const rng = mulberry32(99);
  // Pre-draw actions so the loop times the simulation, not the action generator.
  const actions = Array.from({ length: 4096 }, () => [rng() * 2 - 1, rng() * 2 - 1, rng()]);
  let episodes = 0;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    if (sim.step(actions[i & 4095]).done) {
      sim.reset();
      episodes++;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return { stepsPerSecond: steps / seconds, episodes };
}

measure(1, 50_000); // warm-up (JIT)
for (const stage of [1, 2, 3, 4]) {
  const { stepsPerSecond, episodes } = measure(stage, 500_000);
  console.log(`stage ${stage}: ${Math.round(stepsPerSecond).toLocaleString('en')} steps/s (random actions, ${episodes} episodes)`);
}
