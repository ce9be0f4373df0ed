#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A TCP proxy that delays every byte by a fixed time in each direction (a long link without netem), stdlib only.

usage: delayproxy.py LISTEN_HOST:PORT TARGET_HOST:PORT --delay-ms MS
Each direction keeps its own order: a chunk read at time t is written at t + delay, so the round trip grows by
2 × delay while the throughput stays that of the link behind. Prints "listening on PORT" when ready.
"""
import argparse, asyncio, os, signal, time

signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

ap = argparse.ArgumentParser()
ap.add_argument("listen")
ap.add_argument("target")
ap.add_argument("--delay-ms", type=float, default=10.0)
args = ap.parse_args()
delay = args.delay_ms / 1000.0


async def pipe(reader, writer):
    queue = asyncio.Queue()

    async def pump():
        while True:
            data = await reader.read(1 << 16)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def drain():
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    producer = asyncio.ensure_future(pump())
    try:
        await drain()
    finally:
        producer.cancel()


async def handle(client_reader, client_writer):
    host, port = args.target.rsplit(":", 1)
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer),
                             return_exceptions=True)
    finally:
        upstream_writer.close()
        client_writer.close()


async def main():
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print("listening on", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
