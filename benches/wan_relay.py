#!/usr/bin/env python3
"""A WAN link emulator for benches and tests: a TCP relay with delay, set-up delay and a rate cap.

    wan_relay.py --target HOST:PORT [--listen 127.0.0.1:0] [--port-file F]
                 [--rtt-ms 50] [--rate-mibps 25] [--netns /run/netns/NAME]
    wan_relay.py --self-test

Every connection accepted on --listen is forwarded to --target, as if over a long-haul link:

  * set-up: the connection to the target is opened one RTT after the accept (the client's
    request waits in the kernel meanwhile), as a TCP handshake over the link would cost;
  * delay line: each direction delays every chunk by RTT/2. Chunks are time-stamped when they
    are read and written out when due, so bytes keep flowing (a full window in flight, not
    stop-and-wait). Data in flight per direction is bounded by --window (the receive window a
    tuned long-haul TCP flow gets), so an uncapped link carries at most window/RTT;
  * rate cap: each direction of each connection is serialized through a token bucket of
    --rate-mibps (0 = none), the throughput loss or a bottleneck allows one TCP flow. The
    Mathis bound for loss p is MSS/RTT * 1.22/sqrt(p): at 0.1% loss and 50 ms about 1.1 MiB/s.

--netns: after binding the listening socket, the relay enters that network namespace, so it
connects to the target from inside it (an aggregate cap by `tc tbf` on a veth there then
applies to all connections together) while clients reach it on this namespace's loopback.

--self-test runs a target and the relay in this process and checks the emulator: a 1 MiB
transfer with RTT 100 ms takes >= 150 ms (set-up + both half-RTTs, really ~200 ms), and a
capped 8 MiB transfer runs within 20% of the cap. Exit status 0 when both hold.
"""

import argparse
import asyncio
import ctypes
import os
import socket
import sys
import time

MIB = 1024 * 1024


def mathis_mibps(rtt_ms: float, loss: float = 0.001, mss: int = 1448) -> float:
    """The Mathis et al. bound on one TCP flow's throughput, MiB/s."""
    return mss / (rtt_ms / 1000.0) * 1.22 / loss**0.5 / MIB


class Link:
    def __init__(self, rtt_ms: float, rate_mibps: float, window: int):
        self.rtt = rtt_ms / 1000.0
        self.rate = rate_mibps * MIB  # bytes per second; 0 = no cap
        self.window = window
        # Read size: about 2 ms worth at the cap (the bucket's burst), between 4 and 64 KiB.
        self.chunk = 65536 if not self.rate else int(max(4096, min(65536, self.rate / 500)))


async def pipe(link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """One direction: read, serialize at the cap, delay by RTT/2, write when due."""
    queue: asyncio.Queue = asyncio.Queue()
    room = asyncio.Semaphore(max(1, link.window // link.chunk))
    half = link.rtt / 2
    loop = asyncio.get_running_loop()

    async def read_side():
        free_at = loop.time()  # when the emulated bottleneck has sent what it holds
        try:
            while True:
                await room.acquire()
                data = await reader.read(link.chunk)
                if not data:
                    break
                now = loop.time()
                if link.rate:
                    # Token bucket with one chunk of depth: a late wake-up is not lost time.
                    free_at = max(free_at, now - link.chunk / link.rate) + len(data) / link.rate
                    sent = free_at
                else:
                    sent = now
                queue.put_nowait((sent + half, data))
                if link.rate and free_at - loop.time() > 0.002:
                    # Do not read ahead of the bottleneck: the sender sees the link's pace.
                    await asyncio.sleep(free_at - loop.time())
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((max(free_at, loop.time()) + half, None))

    async def write_side():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                room.release()
        except (ConnectionError, OSError):
            pass

    rt = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        rt.cancel()
        try:
            await rt
        except asyncio.CancelledError:
            pass


async def handle(link: Link, target: tuple, creader, cwriter):
    try:
        if link.rtt:
            await asyncio.sleep(link.rtt)  # the handshake over the link
        try:
            treader, twriter = await asyncio.open_connection(*target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, twriter):
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = asyncio.ensure_future(pipe(link, creader, twriter))
        down = asyncio.ensure_future(pipe(link, treader, cwriter))
        # A reset on either side ends both; a clean half-close lets the other direction finish.
        await asyncio.gather(up, down, return_exceptions=True)
        twriter.close()
    finally:
        cwriter.close()


def enter_netns(path: str):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns " + path)
    os.close(fd)


async def serve(link: Link, listen: tuple, target: tuple, port_file=None, netns=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)
    sock.listen(1024)
    if netns:
        enter_netns(netns)
    server = await asyncio.start_server(lambda r, w: handle(link, target, r, w), sock=sock)
    port = sock.getsockname()[1]
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.rename(tmp, port_file)
    return server, port


def hostport(s: str) -> tuple:
    host, _, port = s.rpartition(":")
    return host, int(port)


# ------------------------------------------------------------------------------------------
# Self-test
# ------------------------------------------------------------------------------------------
async def self_test() -> bool:
    async def source(reader, writer):
        # "GET n\n" -> n bytes, then close.
        line = await reader.readline()
        n = int(line.split()[1])
        block = b"x" * 65536
        while n > 0:
            writer.write(block[: min(n, len(block))])
            n -= min(n, len(block))
            await writer.drain()
        writer.close()

    target = await asyncio.start_server(source, "127.0.0.1", 0)
    tport = target.sockets[0].getsockname()[1]

    async def fetch(port: int, n: int) -> float:
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {n}\n".encode())
        await w.drain()
        got = 0
        while True:
            d = await r.read(1 << 20)
            if not d:
                break
            got += len(d)
        w.close()
        if got != n:
            raise AssertionError(f"got {got} of {n} bytes")
        return time.monotonic() - t0

    ok = True
    # Delay: 1 MiB over RTT 100 ms, no cap: set-up (100) + request (50) + answer (50) ms.
    srv, port = await serve(Link(100, 0, 16 * MIB), ("127.0.0.1", 0), ("127.0.0.1", tport))
    t = await fetch(port, MIB)
    good = 0.150 <= t < 0.600
    ok &= good
    print(f"self-test delay: 1 MiB, RTT 100 ms: {t * 1000:.0f} ms (expect >= 150, about 200): {'ok' if good else 'FAILED'}")
    srv.close()
    # Cap: 8 MiB at 16 MiB/s, RTT 10 ms: 0.5 s of transfer plus ~20 ms of latency.
    srv, port = await serve(Link(10, 16, 16 * MIB), ("127.0.0.1", 0), ("127.0.0.1", tport))
    t = await fetch(port, 8 * MIB)
    rate = 8 / max(t - 0.020, 1e-6)
    good = abs(rate - 16) <= 0.2 * 16
    ok &= good
    print(f"self-test cap: 8 MiB at 16 MiB/s: {t:.3f} s, {rate:.1f} MiB/s (expect 16 +- 20%): {'ok' if good else 'FAILED'}")
    # Two connections at once each get the cap (it is per connection).
    ts = await asyncio.gather(fetch(port, 4 * MIB), fetch(port, 4 * MIB))
    rate = 4 / max(max(ts) - 0.020, 1e-6)
    good = abs(rate - 16) <= 0.2 * 16
    ok &= good
    print(f"self-test cap per connection: 2 x 4 MiB: {max(ts):.3f} s, {rate:.1f} MiB/s each: {'ok' if good else 'FAILED'}")
    srv.close()
    target.close()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--target")
    ap.add_argument("--port-file")
    ap.add_argument("--rtt-ms", type=float, default=50.0)
    ap.add_argument("--rate-mibps", type=float, default=25.0, help="per connection and direction; 0 = no cap")
    ap.add_argument("--lossy", action="store_true", help="cap at the Mathis bound for 0.1%% loss at --rtt-ms")
    ap.add_argument("--window", type=int, default=16 * MIB, help="bytes in flight per direction")
    ap.add_argument("--netns", help="/run/netns/NAME to connect to the target from")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--print-mathis", action="store_true", help="print the 0.1%% loss cap for --rtt-ms")
    a = ap.parse_args()
    if a.print_mathis:
        print(f"{mathis_mibps(a.rtt_ms):.2f}")
        return 0
    if a.self_test:
        return 0 if asyncio.run(self_test()) else 1
    if not a.target:
        ap.error("--target is required")
    rate = mathis_mibps(a.rtt_ms) if a.lossy else a.rate_mibps
    link = Link(a.rtt_ms, rate, a.window)

    async def run():
        server, port = await serve(link, hostport(a.listen), hostport(a.target), a.port_file, a.netns)
        cap = f"cap {rate:.2f} MiB/s per connection" if rate else "no cap"
        print(f"wan_relay: {a.listen.rpartition(':')[0]}:{port} -> {a.target}, RTT {a.rtt_ms:g} ms, {cap}",
              file=sys.stderr, flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
