// The SharedWorker of `socket=worker` (socket_link.js): holds one page's WebSocket, reconnecting
// forever as the page would (reconnecting_socket.js). With `answer=sim` (the rover page, lock-step)
// or `answer=echo` (the echo page) it answers the steps itself and passes every frame on to the
// page in batches (worker_answers.js); without, it relays text frames both ways.
// To the page: {link: 'open'} / {link: 'close'} about the socket, {mirror: [frames]}, and relayed
// frames as strings. From the page: strings to send, {link: 'close'} (window.lunarfleet.disconnect()),
// {link: 'relay', on} (the page answers while it records), {link: 'hang'} (the chaos fault).

import { EchoSession } from './echo_session.js';
import { parseParams, socketUrl } from './params.js';
import { SimSession } from './protocol.js';
import { keepOpen } from './reconnecting_socket.js';
import { workerAnswers } from './worker_answers.js';

const query = new URLSearchParams(self.location.search);

function session() {
  const answer = query.get('answer');
  if (answer === 'sim') return new SimSession(parseParams(query.get('page') || ''));
  if (answer === 'echo') return new EchoSession();
  return null;
}

self.onconnect = (event) => {
  const page = event.ports[0];
  let link = null;
  const answers = workerAnswers({
    session: session(),
    sendSocket: (text) => link.send(text),
    postPage: (data) => page.postMessage(data),
    later: (fn, ms) => setTimeout(fn, ms),
  });
  link = keepOpen(socketUrl(query.get('wsPort'), query.get('token')), {
    onOpen: () => answers.opened(),
    onMessage: (data) => answers.fromSocket(data),
    onClose: () => answers.closed(),
  });
  page.onmessage = (message) => {
    const data = message.data;
    if (typeof data === 'string') link.send(data);
    else if (data && data.link === 'close') link.close();
    else if (data && data.link === 'relay') answers.relay(data.on);
    else if (data && data.link === 'hang') setTimeout(() => { for (;;); }, 0);
  };
  page.start();
};
