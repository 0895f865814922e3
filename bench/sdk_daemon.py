#!/usr/bin/env python3
"""genv.sdk attach + detach pairs a second from one Python process, through
root's genv daemon (the SDK on its socket) beside the binary-per-call path:

    sudo python3 bench/sdk_daemon.py [--genv target/release/genv] [--pairs 5000]

Starts `genv daemon` on a new state folder with two simulated GPUs and
times, in one environment of this process, `attach(index=0)` then
`detach()` (two requests a pair), in rounds taken in turn so that the
changing load of a shared machine falls on every path alike:

- socket: the SDK speaking to the daemon's socket (python/genv/_daemon.py);
- binary+daemon: the SDK running the genv binary per call, which speaks
  to the daemon (the SDK before it spoke to the socket itself);
- binary, files: the binary per call on a state folder without a daemon.

Also, through the socket, requests a second of a request that touches no
state (the daemon refuses `genv version`) and of one that only reads it
(`refresh_attached()`, `genv devices find`: the lock taken, the files
read), to tell the protocol's cost from the transaction's and a read's
from a write's.
Imports genv from python/ in this repository; needs root (the daemon).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

import genv  # noqa: E402
from genv import _command, _daemon  # noqa: E402


def default_binary() -> Path:
    for profile in ("release", "debug"):
        candidate = REPO / "target" / profile / "genv"
        if candidate.is_file():
            return candidate
    sys.exit("bench/sdk_daemon.py: build genv first (cargo build --release), or pass --genv")


def start_daemon(binary: Path, state: Path) -> "subprocess.Popen[str]":
    env = dict(os.environ, GENV_TMPDIR=str(state), GENV_MOCK_DEVICE_COUNT="2")
    process = subprocess.Popen(
        [str(binary), "daemon"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    ready = process.stderr.readline()
    if not ready.startswith("genv: daemon serving"):
        sys.exit(f"bench/sdk_daemon.py: genv daemon did not start: {ready}{process.stderr.read()}")
    return process


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time, from /proc (its threads included)."""

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pairs_per_second(pairs: int) -> float:
    started = time.perf_counter()
    for _ in range(pairs):
        genv.sdk.attach(index=0)
        genv.sdk.detach()
    return pairs / (time.perf_counter() - started)


def refused_per_second(requests: int) -> float:
    socket = _daemon.socket_path()
    assert socket is not None
    started = time.perf_counter()
    for _ in range(requests):
        _daemon.run(socket, ["version"], lambda _: None)
    return requests / (time.perf_counter() - started)


def reads_per_second(requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        genv.sdk.refresh_attached()
    return requests / (time.perf_counter() - started)


class Row:
    """One path's rounds: the rate, and for the socket's paths the CPU
    time a request took in this process and in the daemon."""

    def __init__(self, name: str, per: int, unit: str) -> None:
        self.name = name
        self.per = per  # requests a unit
        self.unit = unit
        self.rates: List[float] = []
        self.cpu: List[Tuple[float, float]] = []

    def show(self) -> str:
        median = statistics.median(self.rates)
        line = (
            f"  {self.name:<40} {median:>7.0f} {self.unit:<11}"
            f" ({min(self.rates):.0f}-{max(self.rates):.0f}; {1e6 / median / self.per:.0f} us a request"
        )
        if self.cpu:
            client = statistics.median(c for c, _ in self.cpu)
            daemon = statistics.median(d for _, d in self.cpu)
            line += f"; CPU a request: client {client:.0f} us, daemon {daemon:.0f} us"
        return line + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genv", type=Path, default=None, help="the genv binary (default: target/release/genv)")
    parser.add_argument("--pairs", type=int, default=5000, help="pairs a round through the socket")
    parser.add_argument("--binary-pairs", type=int, default=100, help="pairs a round per binary path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tmp", type=Path, default=None, help="where the state folders go (default: the system's temporary folder)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/sdk_daemon.py: genv daemon runs as root: run it with sudo")
    binary = (args.genv or default_binary()).resolve()
    os.environ["GENV_SDK_BINARY"] = str(binary)
    for name in ("GENV_ENVIRONMENT_ID", "GENV_PYTHON", "GENV_SHELL", "CUDA_VISIBLE_DEVICES"):
        os.environ.pop(name, None)
    os.environ["GENV_MOCK_DEVICE_COUNT"] = "2"

    with tempfile.TemporaryDirectory(prefix="genv-bench-", dir=args.tmp) as top:
        served = Path(top) / "served"
        files = Path(top) / "files"
        daemon = start_daemon(binary, served)
        try:
            rows = run_rounds(args, daemon.pid, served, files)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    where = subprocess.run(
        ["df", "--output=fstype", str(args.tmp or tempfile.gettempdir())], capture_output=True, text=True
    ).stdout.split()[-1:]
    print(f"genv: {binary}; state on {' '.join(where) or '?'}; {os.cpu_count()} CPUs, load average {load}")
    print(f"attach(index=0) + detach(), median of {args.rounds} round(s) (min-max):")
    for row in rows:
        print(row.show())


def run_rounds(args: argparse.Namespace, daemon: int, served: Path, files: Path) -> List[Row]:
    def in_folder(folder: Path, row: Row, count: int, measure: Callable[[int], float]) -> None:
        os.environ["GENV_TMPDIR"] = str(folder)
        with genv.sdk.activate():
            genv.sdk.attach(index=0)  # warm: connection, files in place
            genv.sdk.detach()
            client, server = time.process_time(), cpu_seconds(daemon)
            row.rates.append(measure(count))
            if folder == served and not binary_only:
                requests = count * row.per
                row.cpu.append(
                    (
                        (time.process_time() - client) / requests * 1e6,
                        (cpu_seconds(daemon) - server) / requests * 1e6,
                    )
                )

    binary_only = False

    def through_binary(action: Callable[[], None]) -> None:
        # The SDK as it was: every call a run of the binary.
        nonlocal binary_only
        forwards = _daemon.forwards
        _daemon.forwards = lambda _: False  # type: ignore[assignment]
        binary_only = True
        try:
            action()
        finally:
            _daemon.forwards = forwards
            binary_only = False

    socket = Row("socket (SDK -> daemon)", 2, "pairs/s")
    relayed = Row("binary+daemon (SDK -> genv -> daemon)", 2, "pairs/s")
    alone = Row("binary, files (no daemon)", 2, "pairs/s")
    refused = Row("socket, a request without state", 1, "requests/s")
    reads = Row("socket, a read (devices find)", 1, "requests/s")
    for _ in range(args.rounds):
        in_folder(served, socket, args.pairs, pairs_per_second)
        through_binary(lambda: in_folder(served, relayed, args.binary_pairs, pairs_per_second))
        through_binary(lambda: in_folder(files, alone, args.binary_pairs, pairs_per_second))
        in_folder(served, refused, args.pairs, refused_per_second)
        in_folder(served, reads, args.pairs, reads_per_second)
    assert _command.binary() == os.environ["GENV_SDK_BINARY"]
    return [socket, relayed, alone, refused, reads]


if __name__ == "__main__":
    main()
