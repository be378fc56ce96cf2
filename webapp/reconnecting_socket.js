// One WebSocket that reconnects forever (every 0.25-1 s): the rule the page's socket and the
// shared worker's socket (socket_link.js, socket_worker.js) both follow.

const RETRY_MIN_MS = 250; // reconnect delay doubles from here ...
const RETRY_MAX_MS = 1000; // ... up to here, forever

/**
 * @param {string} url
 * @param {{onOpen: () => void, onMessage: (data: string) => void, onClose: () => void}} handlers
 * @returns {{send: (text: string) => boolean, close: () => boolean, readonly connected: boolean}}
 */
export function keepOpen(url, { onOpen, onMessage, onClose }) {
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
      created = new WebSocket(url);
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
