"""A plain trainer-like WebSocket server for tests of `lunarfleet tabs`: no LunarFleet code at all.

It stands in for a user's own trainer script (the original app's train_ppo_parallel.py): it listens on
N ports on localhost and drives whatever page connects, the original way: an `action` after each
`reset_complete` or `state` (paced, to spare the CPU), a `reset_request` after `done`, everything
else ignored. Each event goes to --log as one JSON line: listening, connected, closed.

    python tests/plain_ws_server.py --base-port 23500 --count 2 --log events.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class PlainServer:
    def __init__(self, log: Path, rate: float) -> None:
        self.log = log
        self.pause = 1.0 / rate
        self.connections: dict[int, int] = {}

    def note(self, event: str, **fields: object) -> None:
        with self.log.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n")

    def handler(self, port: int):  # noqa: ANN201 - a websockets handler
        async def handle(ws: ServerConnection) -> None:
            self.connections[port] = self.connections.get(port, 0) + 1
            self.note("connected", port=port, connection=self.connections[port])
            steps = 0
            try:
                async for frame in ws:
                    try:
                        message = json.loads(frame)
                    except ValueError:
                        continue
                    kind = message.get("type") if isinstance(message, dict) else None
                    if kind == "reset_complete" or (kind == "state" and not message.get("done")):
                        await asyncio.sleep(self.pause)
                        action = [random.uniform(-1, 1), random.uniform(-1, 1), random.uniform(0, 1)]
                        await ws.send(json.dumps({"type": "action", "action": action}))
                        steps += kind == "state"
                    elif kind == "state":
                        await ws.send(json.dumps({"type": "reset_request"}))
                    # restart_request, lunarfleet_hello, anything else: ignored, as a plain trainer would
            except ConnectionClosed:
                pass
            self.note("closed", port=port, connection=self.connections[port], steps=steps)

        return handle


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=10.0, help="actions per second per connection")
    args = parser.parse_args()
    server = PlainServer(args.log, args.rate)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    servers = []
    for port in range(args.base_port, args.base_port + args.count):
        servers.append(await serve(server.handler(port), ["127.0.0.1", "::1"], port, ping_interval=None))
    server.note("listening", ports=list(range(args.base_port, args.base_port + args.count)))
    await stop
    for s in servers:
        s.close()
        await s.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
