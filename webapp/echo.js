// The floor of `lunarfleet bench`: a page that runs no simulation and answers each message with
// a fixed reply of the same shape as the rover page's (30 floats of 6 decimals, reward, done,
// the seven info keys). What a step costs through it is the cost of the transport alone: the
// sockets, the JSON on both sides and the trainer's plumbing (orchestrator/bench_floor.py).
// Same URL parameters as index.html (wsPort, token, socket) and the same socket_link.js; it
// never ends an episode.

import { parseParams } from './params.js';
import { openLink } from './socket_link.js';

const params = parseParams(location.search);
const OBSERVATION = Array.from({ length: 30 }, (_, i) => Math.round(Math.sin(i + 1) * 1e6) / 1e6);
const INFO = {
  episode_length: 0,
  orbs_collected: 0,
  orbs_deposited_construction: 0,
  orbs_deposited_berm: 0,
  collision_occurred: false,
  zone: 'excavation',
  total_reward: 0,
};
let steps = 0;

function reply(type) {
  INFO.episode_length = steps;
  return { type, observation: OBSERVATION, reward: 0.012345, done: false, info: INFO };
}

function onMessage(data) {
  const message = JSON.parse(data);
  if (message.type === 'action') {
    steps++;
    link.send(JSON.stringify(reply('state')));
  } else if (message.type === 'reset_request' || message.type === 'ready_to_resume') {
    steps = 0;
    link.send(JSON.stringify(reply('reset_complete')));
  }
}

function onOpen() {
  link.send(JSON.stringify({ type: 'lunarfleet_hello', protocol: 1, lockstep: true, observation_size: 30, action_size: 3, sims: 1 }));
  link.send(JSON.stringify(reply('reset_complete')));
}

const link =
  params.wsPort === null
    ? null
    : openLink({ port: params.wsPort, token: params.token, viaWorker: params.socket === 'worker', onOpen, onMessage, onClose() {} });

window.lunarfleet = {
  get steps() {
    return steps;
  },
};
