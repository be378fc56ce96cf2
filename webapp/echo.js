// The floor of `lunarfleet bench`: a page that runs no simulation and answers each message with
// a fixed reply of the rover page's shape (echo_session.js). What a step costs through it is the
// cost of the transport alone: the sockets, the JSON on both sides and the trainer's plumbing
// (orchestrator/bench_floor.py). Same URL parameters as index.html (wsPort, token, socket) and the
// same socket_link.js: with socket=worker its worker answers, as the rover page's does.

import { EchoSession } from './echo_session.js';
import { parseParams } from './params.js';
import { openLink } from './socket_link.js';

const params = parseParams(location.search);
const session = new EchoSession();

function onMessage(data) {
  const reply = session.handle(JSON.parse(data));
  if (reply !== null) link.send(JSON.stringify(reply));
}

function onMirror(messages) {
  for (const message of messages) session.handle(message); // answered by the worker: count them
}

function onOpen() {
  if (link.answersInWorker) {
    session.resetAll();
    return;
  }
  link.send(JSON.stringify(session.hello()));
  link.send(JSON.stringify(session.resetAll()));
}

const link =
  params.wsPort === null
    ? null
    : openLink({
        port: params.wsPort,
        token: params.token,
        viaWorker: params.socket === 'worker',
        answer: 'echo',
        onOpen,
        onMessage,
        onMirror,
        onClose() {},
      });

window.lunarfleet = {
  get steps() {
    return session.stepsAnswered;
  },
};
