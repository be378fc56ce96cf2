// The echo page's answers (echo.html, the floor of `lunarfleet bench`): no simulation, a fixed
// reply of the rover page's shape (30 floats of 6 decimals, reward, done, the seven info keys) to
// each action; never ends an episode. The same interface as SimSession, so the shared worker can
// answer for it as it does for the rover page (worker_answers.js).

import { PROTOCOL_VERSION } from './protocol.js';
import { ACTION_SIZE, OBSERVATION_SIZE } from './sim/core.js';

const OBSERVATION = Array.from({ length: OBSERVATION_SIZE }, (_, i) => Math.round(Math.sin(i + 1) * 1e6) / 1e6);

export class EchoSession {
  constructor() {
    this.stepsAnswered = 0;
    this.info = {
      episode_length: 0,
      orbs_collected: 0,
      orbs_deposited_construction: 0,
      orbs_deposited_berm: 0,
      collision_occurred: false,
      zone: 'excavation',
      total_reward: 0,
    };
  }

  hello({ lockstep = true } = {}) {
    return { type: 'lunarfleet_hello', protocol: PROTOCOL_VERSION, lockstep, observation_size: OBSERVATION_SIZE, action_size: ACTION_SIZE, sims: 1 };
  }

  resetAll() {
    this.stepsAnswered = 0;
    return this._reply('reset_complete');
  }

  handle(message) {
    if (message === null || typeof message !== 'object') return null;
    if (message.type === 'action') {
      this.stepsAnswered++;
      return this._reply('state');
    }
    if (message.type === 'reset_request' || message.type === 'ready_to_resume') return this.resetAll();
    return null;
  }

  _reply(type) {
    this.info.episode_length = this.stepsAnswered;
    return { type, observation: OBSERVATION, reward: 0.012345, done: false, info: this.info };
  }
}
