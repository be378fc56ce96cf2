// The page's one WebSocket to the Python side, reconnecting forever (every 0.25-1 s), held in
// one of two places (URL parameter `socket`, docs/wire-protocol.md):
// - `page` (default): in the page itself;
// - `worker`: in a SharedWorker of this page alone (socket_worker.js), which relays frames to
//   and from the page. Playwright instruments every WebSocket of a page it drives: each frame
//   crosses Chromium's DevTools protocol, the Playwright driver and the trainer's Python as an
//   event. It does not instrument shared workers, and `lunarfleet bench` measured a step at about
//   half the CPU this way, on both sides. `lunarfleet tabs` watches the page's sockets through
//   those very events, so it keeps `page`.

import { socketUrl } from './params.js';

const RETRY_MIN_MS = 250; // reconnect delay doubles from here ...
const RETRY_MAX_MS = 1000; // ... up to here, forever

/**
 * @param {{port: number, token: string|null, viaWorker: boolean,
 *   onOpen: () => void, onMessage: (data: string) => void, onClose: () => void}} options
 * @returns {{send: (text: string) => boolean, close: () => boolean, readonly connected: boolean}}
 */
export function openLink(options) {
  const viaWorker = options.viaWorker && typeof SharedWorker === 'function';
  return viaWorker ? workerLink(options) : pageLink(options);
}

function pageLink({ port, token, onOpen, onMessage, onClose }) {
  let socket = null;
  let connected = false;
  let retryMs = RETRY_MIN_MS;
  const reconnectLater = () => {
    setTimeout(connect, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  };
  function connect() {
    let created;
    try {
      created = new WebSocket(socketUrl(port, token));
    } catch (error) {
      console.warn('lunarfleet: cannot open socket', error);
      reconnectLater();
      return;
    }
    socket = created;
    created.onopen = () => {
      connected = true;
      retryMs = RETRY_MIN_MS;
      onOpen();
    };
    created.onmessage = (event) => {
      if (typeof event.data === 'string') onMessage(event.data);
    };
    // onerror is always followed by onclose; reconnecting from onclose alone avoids doubling up.
    created.onclose = () => {
      if (socket !== created) return;
      socket = null;
      connected = false;
      onClose();
      reconnectLater();
    };
  }
  connect();
  return {
    send(text) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(text);
      return true;
    },
    close() {
      if (!socket) return false;
      socket.close(); // onclose reconnects
      return true;
    },
    get connected() {
      return connected;
    },
  };
}

function workerLink({ port, token, onOpen, onMessage, onClose }) {
  // A name of its own: a shared worker is shared by name, and each tab needs its own socket.
  const name = `lunarfleet-${port}-${Math.random().toString(36).slice(2)}`;
  const query = new URLSearchParams({ wsPort: String(port), ...(token ? { token } : {}) });
  const worker = new SharedWorker(`socket_worker.js?${query}`, { name });
  const channel = worker.port;
  let connected = false;
  // From the worker: a frame is a string; {link: 'open'} and {link: 'close'} are the socket's.
  channel.onmessage = (event) => {
    const data = event.data;
    if (typeof data === 'string') {
      onMessage(data);
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
  };
}
