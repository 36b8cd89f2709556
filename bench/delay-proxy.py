#!/usr/bin/env python3
"""delay-proxy: a TCP proxy that adds a fixed delay to each request, for bench/mount.sh.

usage: delay-proxy.py LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS

Bytes from the client are held DELAY_MS before they are forwarded, once per burst (a burst
ends when the client has sent everything it had): an HTTP request, however many packets it
takes, costs one extra DELAY_MS, as a longer round trip would. Bytes from the target are
forwarded at once. Each connection is proxied until either side closes.
"""
import asyncio
import sys


async def pipe(reader, writer, delay):
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
                # What arrived meanwhile belongs to the same burst.
                while True:
                    try:
                        more = await asyncio.wait_for(reader.read(1 << 16), 0)
                    except asyncio.TimeoutError:
                        break
                    if not more:
                        break
                    data += more
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    listen, target, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def handle(creader, cwriter):
        try:
            treader, twriter = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, twriter, delay_ms / 1000),
                             pipe(treader, cwriter, 0))

    server = await asyncio.start_server(handle, lhost, int(lport))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main())
