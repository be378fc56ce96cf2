// What the shared worker of `socket=worker` does with the frames of its socket (socket_worker.js
// holds the socket; this module holds no worker and no socket, so Node can test it).
//
// In lock-step the worker answers the steps itself, with a session of its own (SimSession, or the
// echo page's EchoSession): the hop between the worker and the page's thread cost about 100 us of
// renderer CPU a step and a fifth of the round-trip rate (lunarfleet bench, docs/wire-protocol.md).
// Every frame it could read still reaches the page, a batch every MIRROR_INTERVAL_MS as one JSON
// array (one parse there), where the page's own session replays it (its replies dropped) for the
// status line, drawing, snapshots and the hooks.
// While the page records video it answers the frames itself, one by one as they come (`relay`),
// and the worker only replays them. Both sessions see every frame in the same order, so they stay
// equal whichever side answers. Without a session (realtime=1) the worker only relays.

export const MIRROR_INTERVAL_MS = 100;

/**
 * @param {{session: {hello: Function, resetAll: Function, handle: Function} | null,
 *   sendSocket: (text: string) => void, postPage: (data: any) => void,
 *   later: (fn: () => void, ms: number) => void}} parts
 */
export function workerAnswers({ session, sendSocket, postPage, later }) {
  let relaying = session === null;
  let pending = []; // frames the page has not had yet; a flush is due while there are any
  const flush = () => {
    if (pending.length > 0) {
      postPage({ mirror: `[${pending.join(',')}]` });
      pending = [];
    }
  };
  return {
    /** The socket opened: the worker's session says hello and resets; the page replays the reset. */
    opened() {
      if (session !== null) {
        sendSocket(JSON.stringify(session.hello({ lockstep: true })));
        sendSocket(JSON.stringify(session.resetAll()));
      }
      flush();
      postPage({ link: 'open' });
    },
    closed() {
      flush();
      postPage({ link: 'close' });
    },
    /** One text frame from Python. */
    fromSocket(data) {
      if (session === null) {
        postPage(data);
        return;
      }
      if (relaying) {
        session.handle(parseOrNull(data)); // the page answers it; this session keeps up
        postPage(data);
        return;
      }
      const message = parseOrNull(data);
      if (message === null) return; // malformed: ignored, as the page ignores it
      const reply = session.handle(message);
      if (reply !== null) sendSocket(JSON.stringify(reply));
      if (pending.length === 0) later(flush, MIRROR_INTERVAL_MS);
      pending.push(data);
    },
    /** From the page: answer there (true, while recording) or here (false). */
    relay(on) {
      flush();
      relaying = session === null || Boolean(on);
    },
  };
}

function parseOrNull(data) {
  try {
    return JSON.parse(data);
  } catch {
    console.warn('lunarfleet: ignoring a malformed frame');
    return null;
  }
}
