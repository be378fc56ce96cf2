// The page side of the wire protocol (docs/wire-protocol.md) over K simulations, without any
// socket: handle() takes one parsed message and returns the reply object (or null). The
// bridge owns the socket; this stays testable under Node.

import { ACTION_SIZE, OBSERVATION_SIZE, OBSTACLE_COUNT, RoverSim, simSeed } from './sim/core.js';

export const PROTOCOL_VERSION = 1;
const OBSERVATION_DECIMALS = 1e6; // 6 decimals: float32 precision, half the JSON of full doubles

/** Rounds an observation in place for the wire; values stay within [-1, 1]. */
function roundForWire(observation) {
  for (let i = 0; i < observation.length; i++) {
    observation[i] = Math.round(observation[i] * OBSERVATION_DECIMALS) / OBSERVATION_DECIMALS;
  }
  return observation;
}

export class SimSession {
  /** @param {{sims?: number, seed?: number, stage?: number, timescale?: number, maxSteps?: number}} options */
  constructor({ sims = 1, seed = 0, stage = 1, timescale = 2.0, maxSteps = 10000 } = {}) {
    this.sims = [];
    for (let i = 0; i < Math.max(1, sims | 0); i++) {
      this.sims.push(new RoverSim({ seed: simSeed(seed, i), stage, timescale, maxSteps }));
    }
    this.stepsAnswered = 0; // simulation steps answered (a step_batch counts K)
    this.parallel = null; // {env_count, env_id} from parallel_training_info
    this.checkpoint = null; // {checkpoint_name, checkpoint_steps} from checkpoint_info
  }

  get size() {
    return this.sims.length;
  }

  /** First message after every connect. */
  hello({ lockstep = true } = {}) {
    return {
      type: 'lunarfleet_hello',
      protocol: PROTOCOL_VERSION,
      lockstep,
      observation_size: OBSERVATION_SIZE,
      action_size: ACTION_SIZE,
      sims: this.size,
    };
  }

  /** Resets every simulation: reset_complete for one, reset_batch for several. */
  resetAll() {
    if (this.size === 1) {
      const { observation, info } = this.sims[0].reset();
      return { type: 'reset_complete', observation: roundForWire(observation), reward: 0, done: false, info };
    }
    const observations = [];
    const infos = [];
    for (const sim of this.sims) {
      const { observation, info } = sim.reset();
      observations.push(roundForWire(observation));
      infos.push(info);
    }
    return { type: 'reset_batch', observations, infos };
  }

  /** Answers one message from Python; unknown or malformed messages give null (ignored). */
  handle(message) {
    if (message === null || typeof message !== 'object') return null;
    switch (message.type) {
      case 'action':
        return this._stepOne(message.action);
      case 'step_batch':
        return this._stepBatch(message.actions);
      case 'reset_request':
      case 'ready_to_resume':
        return this.resetAll();
      case 'set_timescale':
        for (const sim of this.sims) sim.setTimescale(message.timescale);
        return null;
      case 'set_config':
        for (const sim of this.sims) sim.setMaxSteps(message.max_episode_steps);
        return null;
      case 'set_stage':
        // `obstacles` is this page's own field (the curriculum's thinner obstacle fields);
        // without it, the full field of the spec's world.
        for (const sim of this.sims) {
          if (sim.setStage(message.stage)) sim.setObstacles(message.obstacles ?? OBSTACLE_COUNT);
        }
        return null;
      case 'set_seed':
        if (!Number.isFinite(message.seed)) return null; // a missing seed must not become 0
        this.sims.forEach((sim, i) => sim.setSeed(simSeed(message.seed, i)));
        return null;
      case 'parallel_training_info':
        this.parallel = { env_count: message.env_count, env_id: message.env_id };
        return null;
      case 'checkpoint_info':
        this.checkpoint = { checkpoint_name: message.checkpoint_name, checkpoint_steps: message.checkpoint_steps };
        return null;
      default:
        return null;
    }
  }

  /** Original protocol: one action steps simulation 0 (the only one when sims=1). */
  _stepOne(action) {
    const { observation, reward, done, info } = this.sims[0].step(action);
    this.stepsAnswered++;
    return { type: 'state', observation: roundForWire(observation), reward, done, info };
  }

  /** Batched stepping: K actions in, K results out; finished episodes restart at once. */
  _stepBatch(actions) {
    const k = this.size;
    if (!Array.isArray(actions) || actions.length !== k) return null; // malformed: ignore
    const observations = new Array(k);
    const rewards = new Array(k);
    const dones = new Array(k);
    const infos = new Array(k);
    const resetObservations = new Array(k);
    for (let i = 0; i < k; i++) {
      const sim = this.sims[i];
      const result = sim.step(actions[i]);
      observations[i] = roundForWire(result.observation);
      rewards[i] = result.reward;
      dones[i] = result.done;
      infos[i] = result.info;
      resetObservations[i] = result.done ? roundForWire(sim.reset().observation) : null;
    }
    this.stepsAnswered += k;
    return {
      type: 'state_batch',
      observations,
      rewards,
      dones,
      infos,
      reset_observations: resetObservations,
    };
  }
}
