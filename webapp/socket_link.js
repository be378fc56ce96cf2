// The page's one WebSocket to the Python side, reconnecting forever (reconnecting_socket.js), held in
// one of two places (URL parameter `socket`, docs/wire-protocol.md):
// - `page` (default): in the page itself;
// - `worker`: in a SharedWorker of this page alone (socket_worker.js), which relays frames to
//   and from the page. Playwright instruments every WebSocket of a page it drives: each frame
//   crosses Chromium's DevTools protocol, the Playwright driver and the trainer's Python as an
//   event. It does not instrument shared workers, and `lunarfleet bench` measured a step at about
//   half the CPU this way, on both sides. `lunarfleet tabs` watches the page's sockets through
//   those very events, so it keeps `page`. Given `answer` (a lock-step page), the worker answers
//   the steps itself and hands the page every frame in batches to replay (`onMirror`;
//   worker_answers.js): the hop to the page's thread and back is then out of the step.

import { socketUrl } from './params.js';
import { keepOpen } from './reconnecting_socket.js';

/**
 * @param {{port: number, token: string|null, viaWorker: boolean, answer?: 'sim'|'echo'|null,
 *   pageSearch?: string, onOpen: () => void, onMessage: (data: string) => void,
 *   onMirror?: (messages: object[]) => void, onClose: () => void}} options
 * @returns {{send: (text: string) => boolean, close: () => boolean, readonly connected: boolean,
 *   answersInWorker: boolean, relay: (on: boolean) => void, hang: () => void}}
 */
export function openLink(options) {
  const viaWorker = options.viaWorker && typeof SharedWorker === 'function';
  return viaWorker ? workerLink(options) : pageLink(options);
}

function pageLink({ port, token, onOpen, onMessage, onClose }) {
  const link = keepOpen(socketUrl(port, token), { onOpen, onMessage, onClose });
  return Object.assign(link, { answersInWorker: false, relay() {}, hang() {} });
}

function workerLink({ port, token, answer = null, pageSearch = '', onOpen, onMessage, onMirror = () => {}, onClose }) {
  // A name of its own: a shared worker is shared by name, and each tab needs its own socket.
  const name = `lunarfleet-${port}-${Math.random().toString(36).slice(2)}`;
  const query = new URLSearchParams({ wsPort: String(port), ...(token ? { token } : {}), ...(answer ? { answer, page: pageSearch } : {}) });
  const worker = new SharedWorker(`socket_worker.js?${query}`, { name, type: 'module' });
  const channel = worker.port;
  let connected = false;
  // From the worker: a frame is a string; {mirror: '[...]'} the messages it answered; {link: 'open'} and
  // {link: 'close'} are the socket's.
  channel.onmessage = (event) => {
    const data = event.data;
    if (typeof data === 'string') {
      onMessage(data);
    } else if (data && typeof data.mirror === 'string') {
      onMirror(JSON.parse(data.mirror));
    } else if (data && data.link === 'open') {
      connected = true;
      onOpen();
    } else if (data && data.link === 'close') {
      connected = false;
      onClose();
    }
  };
  channel.start();
  return {
    send(text) {
      if (!connected) return false;
      channel.postMessage(text);
      return true;
    },
    close() {
      if (!connected) return false;
      channel.postMessage({ link: 'close' }); // the worker reconnects, as the page would
      return true;
    },
    get connected() {
      return connected;
    },
    answersInWorker: Boolean(answer),
    /** While on, the page answers the frames (it records them); the worker answers otherwise. */
    relay(on) {
      channel.postMessage({ link: 'relay', on: Boolean(on) });
    },
    hang() {
      channel.postMessage({ link: 'hang' });
    },
  };
}
