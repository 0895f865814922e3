"""One of two processes that take turns on device 0 with genv.sdk.lock():
each writes `start PID` and `end PID` into a shared record file while it
holds the lock. Arguments: RECORDS ROUNDS BARRIER_FOLDER."""

import os
import sys
import time
from pathlib import Path

import genv

records, rounds, barrier = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
pid = os.getpid()


def record(line: str) -> None:
    fd = os.open(records, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line} {pid}\n".encode())
    finally:
        os.close(fd)


with genv.sdk.activate(eid=f"contender-{pid}"):
    genv.sdk.attach(index=0, allow_over_subscription=True)
    # Start together, so the two really contend.
    (barrier / str(pid)).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(rounds):
        with genv.sdk.lock():
            record("start")
            time.sleep(0.03)
            record("end")
