"""Ctrl-C while genv.sdk waits: the wait is abandoned cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import genv

from conftest import OtherEnv, envs, genv_cmd

WAITER = """
import sys, genv
with genv.sdk.activate(eid="waiter"):
    print("in", flush=True)
    try:
        if sys.argv[1] == "attach":
            genv.sdk.attach(gpus=1, wait=True)
        else:
            genv.sdk.attach(index=0, allow_over_subscription=True)
            with genv.sdk.lock():
                pass
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def wait_until(check, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def lock_waiters():
    locks = json.loads(genv_cmd("devices", "locks", "--format", "json").stdout)["locks"]
    return [lock for lock in locks if lock["eid"] == "waiter"]


@pytest.mark.parametrize("what", ["attach", "lock"])
def test_ctrl_c_while_waiting(other: OtherEnv, what):
    other.attach("--count", "2")
    if what == "lock":
        holder = subprocess.Popen(
            [genv._command.binary(), "lock", "sleep", "600"],
            env={**os.environ, "GENV_ENVIRONMENT_ID": other.eid},
        )
    # Ctrl-C must reach Python even when the suite runs where SIGINT is
    # ignored (a background job): Python installs its handler only when
    # SIGINT is not ignored at its start.
    child = subprocess.Popen(
        [sys.executable, "-c", WAITER, what],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert child.stdout.readline() == "in\n"
        if what == "attach":
            assert wait_until(lambda: "waiter" in genv_cmd("devices", "queue").stdout)
        else:
            assert wait_until(lambda: [w["state"] for w in lock_waiters()] == ["waiting"])
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline() == "interrupted\n"
        assert child.wait(timeout=30) == 0
        assert "waiter" not in genv_cmd("devices", "queue").stdout
        assert lock_waiters() == []
        assert [env["eid"] for env in envs()] == ["other"]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if what == "lock":
            holder.kill()
            holder.wait()
