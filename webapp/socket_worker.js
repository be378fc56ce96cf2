// The SharedWorker of `socket=worker` (socket_link.js): holds one page's WebSocket and relays
// its text frames both ways, reconnecting forever as the page would (reconnecting_socket.js).
// Strings are frames; {link: 'open'} / {link: 'close'} tell the page about the socket, and the
// page's {link: 'close'} closes it (window.lunarfleet.disconnect()).

import { socketUrl } from './params.js';
import { keepOpen } from './reconnecting_socket.js';

const query = new URLSearchParams(self.location.search);

self.onconnect = (event) => {
  const page = event.ports[0];
  const link = keepOpen(socketUrl(query.get('wsPort'), query.get('token')), {
    onOpen: () => page.postMessage({ link: 'open' }),
    onMessage: (data) => page.postMessage(data),
    onClose: () => page.postMessage({ link: 'close' }),
  });
  page.onmessage = (message) => {
    const data = message.data;
    if (typeof data === 'string') link.send(data);
    else if (data && data.link === 'close') link.close();
  };
  page.start();
};
