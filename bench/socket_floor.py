#!/usr/bin/env python3
"""The floor of a request and its answer between two Python processes on
a Unix stream socket, the way the SDK speaks to genv daemon:

    python3 bench/socket_floor.py [--requests 20000]

A child process answers each request (210 bytes, about an attach's) with
a final answer's frame (29 bytes); the parent times request + answer in a
loop, four ways: both ends sleeping on the socket until data arrives, the
client watching for its answer (non-blocking reads for up to 200 µs
before sleeping), the server watching for the next request, and both
watching. What a sleep and its wake-up cost on this machine is the
difference.
"""

import argparse
import os
import socket
import tempfile
import time

REQUEST = b"x" * 210
ANSWER = b"\0\0\0\x19" + b'{"code":0,"stdout":"0\\n"}'
WATCH = 0.0002


def receive(sock: socket.socket, watch: bool) -> bytes:
    if watch:
        until = time.perf_counter() + WATCH
        while time.perf_counter() < until:
            try:
                return sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
    return sock.recv(65536)


def serve(listener: socket.socket, watch: bool) -> None:
    conn, _ = listener.accept()
    while receive(conn, watch):
        conn.sendall(ANSWER)
    os._exit(0)


def round_trip(requests: int, client_watches: bool, server_watches: bool) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "floor.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        child = os.fork()
        if child == 0:
            serve(listener, server_watches)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        started = time.perf_counter()
        for _ in range(requests):
            client.sendall(REQUEST)
            receive(client, client_watches)
        took = time.perf_counter() - started
        client.close()
        os.waitpid(child, 0)
        return took / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    print(f"request + answer over a Unix socket, {args.requests} in a loop, {os.cpu_count()} CPUs:")
    for client_watches, server_watches, name in [
        (False, False, "both sleep"),
        (True, False, "the client watches"),
        (False, True, "the server watches"),
        (True, True, "both watch"),
    ]:
        took = round_trip(args.requests, client_watches, server_watches)
        print(f"  {name:<20} {took * 1e6:6.1f} us a request ({1 / took / 2:,.0f} pairs/s at most)")


if __name__ == "__main__":
    main()
