// The SharedWorker of `socket=worker` (socket_link.js): holds one page's WebSocket and relays
// its text frames both ways, reconnecting forever (every 0.25-1 s) as the page would. Strings
// are frames; {link: 'open'} / {link: 'close'} tell the page about the socket, and the page's
// {link: 'close'} closes it (window.lunarfleet.disconnect()).

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 1000;
const query = new URLSearchParams(self.location.search);
const token = query.get('token');
const url = `ws://localhost:${query.get('wsPort')}/${token ? `?token=${encodeURIComponent(token)}` : ''}`;

self.onconnect = (event) => {
  const page = event.ports[0];
  let socket = null;
  let retryMs = RETRY_MIN_MS;
  const reconnectLater = () => {
    setTimeout(connect, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  };
  function connect() {
    let created;
    try {
      created = new WebSocket(url);
    } catch {
      reconnectLater();
      return;
    }
    socket = created;
    created.onopen = () => {
      retryMs = RETRY_MIN_MS;
      page.postMessage({ link: 'open' });
    };
    created.onmessage = (message) => {
      if (typeof message.data === 'string') page.postMessage(message.data);
    };
    created.onclose = () => {
      if (socket !== created) return;
      socket = null;
      page.postMessage({ link: 'close' });
      reconnectLater();
    };
  }
  page.onmessage = (message) => {
    const data = message.data;
    if (typeof data === 'string') {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
    } else if (data && data.link === 'close' && socket) {
      socket.close();
    }
  };
  page.start();
  connect();
};
