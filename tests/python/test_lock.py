"""genv.sdk.lock(): the devices' access locks, shared with `genv lock`."""

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import genv
from conftest import OtherEnv, genv_cmd

Config = genv.sdk.Env.Config
HERE = Path(__file__).parent


def other_try_lock(other: OtherEnv) -> "subprocess.CompletedProcess[str]":
    """`genv lock -n true` in the other environment."""

    return genv_cmd("lock", "-n", "true", env_id=other.eid, check=False)


def holders(index: int):
    locks = json.loads(genv_cmd("devices", "locks", "--format", "json").stdout)["locks"]
    return [(lock["eid"], lock["state"]) for lock in locks if lock["index"] == index]


def test_lock_outside_an_environment_does_nothing(state):
    with genv.sdk.lock():
        with genv.sdk.lock(wait=False):
            pass
    assert not (state / "devices").exists() or list((state / "devices").iterdir()) == []


def test_lock_arguments_are_checked():
    with pytest.raises(ValueError, match="wait=True"):
        with genv.sdk.lock(wait=False, timeout=1):
            pass
    with pytest.raises(ValueError, match="0 or more"):
        with genv.sdk.lock(timeout=-1):
            pass


def test_lock_holds_the_devices_locks(state):
    with genv.sdk.activate(config=Config(gpus=2)):
        eid = genv.sdk.eid()
        with genv.sdk.lock():
            assert holders(0) == [(eid, "holding")]
            assert holders(1) == [(eid, "holding")]
            assert (state / "devices" / "0.lock").is_file()
        assert holders(0) == [] and holders(1) == []


def test_lock_timeout_without_limit():
    with genv.sdk.activate(config=Config(gpus=1)):
        with genv.sdk.lock(timeout=float("inf")):
            assert holders(0) == [(genv.sdk.eid(), "holding")]


def test_lock_without_devices_holds_nothing():
    with genv.sdk.activate():
        with genv.sdk.lock(wait=False):
            assert holders(0) == [] and holders(1) == []


def test_sdk_lock_keeps_genv_lock_out(other: OtherEnv):
    with genv.sdk.activate(config=Config(gpus=1)):
        other.attach("--index", "0", "--allow-over-subscription")
        with genv.sdk.lock():
            busy = other_try_lock(other)
            assert busy.returncode == 1
            assert "cannot lock GPU 0" in busy.stderr
            assert f"environment {genv.sdk.eid()}" in busy.stderr
        assert other_try_lock(other).returncode == 0


def test_genv_lock_keeps_sdk_lock_out(other: OtherEnv, caplog):
    caplog.set_level("INFO", logger="genv")
    other.attach("--index", "0")
    env = dict(os.environ, GENV_ENVIRONMENT_ID=other.eid)
    holder = subprocess.Popen(
        [genv._command.binary(), "lock", "--", sys.executable, "-c",
         "import sys; print('held', flush=True); sys.stdin.read()"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with genv.sdk.activate():
            genv.sdk.attach(index=0, allow_over_subscription=True)
            with pytest.raises(RuntimeError, match=r"cannot lock GPU 0 without waiting \(held by environment other"):
                with genv.sdk.lock(wait=False):
                    pytest.fail("took a held lock")
            start = time.monotonic()
            with pytest.raises(RuntimeError, match="timed out"):
                with genv.sdk.lock(timeout=0.5):
                    pytest.fail("took a held lock")
            assert time.monotonic() - start < 10
            # Given back a second from now: the waiting lock gets it.
            threading.Timer(1.0, holder.stdin.close).start()
            with genv.sdk.lock(timeout=60):
                assert holder.wait(timeout=10) == 0
                assert holders(0) == [(genv.sdk.eid(), "holding")]
            assert "genv: waiting for GPU 0 (held by environment other" in caplog.text
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_lock_is_given_back_when_the_block_raises(other: OtherEnv):
    with genv.sdk.activate(config=Config(gpus=1)):
        other.attach("--index", "0", "--allow-over-subscription")
        with pytest.raises(KeyError):
            with genv.sdk.lock():
                assert other_try_lock(other).returncode == 1
                raise KeyError("boom")
        assert other_try_lock(other).returncode == 0
        assert holders(0) == []


def test_lock_is_given_back_while_a_forked_child_lives(other: OtherEnv):
    with genv.sdk.activate(config=Config(gpus=1)):
        other.attach("--index", "0", "--allow-over-subscription")
        with genv.sdk.lock():
            child = os.fork()
            if child == 0:
                time.sleep(600)
                os._exit(0)
        try:
            assert other_try_lock(other).returncode == 0
            assert holders(0) == []
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)


def test_lock_is_given_back_when_the_process_dies(other: OtherEnv):
    script = (
        "import time, genv\n"
        "with genv.sdk.activate(config=genv.sdk.Env.Config(gpus=1)):\n"
        "    with genv.sdk.lock():\n"
        "        print('held', flush=True)\n"
        "        time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        other.attach("--index", "0", "--allow-over-subscription")
        assert other_try_lock(other).returncode == 1
        child.send_signal(signal.SIGKILL)
        child.wait()
        taken = genv_cmd("lock", "-w", "20", "true", env_id=other.eid, check=False)
        assert taken.returncode == 0, taken.stderr
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_capacities_that_fit_share_the_lock(other: OtherEnv):
    with genv.sdk.activate(config=Config(gpus=1, gpu_memory="4g")):
        genv_cmd("envs", "config", "--eid", other.eid, "gpu-memory", "--gpu-memory", "4g")
        assert other.attach("--index", "0") == "0"
        with genv.sdk.lock():
            assert other_try_lock(other).returncode == 0
            # Asked for the whole device, the other waits.
            whole = genv_cmd("lock", "-n", "-x", "true", env_id=other.eid, check=False)
            assert whole.returncode == 1


def test_two_processes_take_turns(tmp_path):
    records = tmp_path / "records"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    rounds = 8
    processes = [
        subprocess.Popen([sys.executable, str(HERE / "contender.py"), str(records), str(rounds), str(barrier)])
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0
    lines = records.read_text().splitlines()
    assert len(lines) == 2 * 2 * rounds
    pids = {line.split()[1] for line in lines}
    assert len(pids) == 2
    # Never overlapping: every start is followed by the end of the same process.
    for start, end in zip(lines[0::2], lines[1::2]):
        kind, pid = start.split()
        assert (kind, end) == ("start", f"end {pid}"), lines


REFERENCE = HERE.parent.parent / "target" / "genv-ref" / "bin" / "python"


@pytest.mark.skipif(not REFERENCE.exists(), reason="genv 1.4.3 is installed by scripts/test")
def test_genv_1_4_3_sdk_lock_and_ours_exclude_each_other():
    script = (
        "import sys, genv\n"
        "with genv.sdk.activate(eid='reference'):\n"
        "    genv.sdk.attach(index=0, allow_over_subscription=True)\n"
        "    with genv.sdk.lock():\n"
        "        print('held', flush=True)\n"
        "        sys.stdin.read()\n"
    )
    outside = {k: v for k, v in os.environ.items() if not k.startswith("GENV_") or k in ("GENV_TMPDIR", "GENV_MOCK_DEVICE_COUNT")}
    outside.pop("CUDA_VISIBLE_DEVICES", None)

    def reference() -> "subprocess.Popen[str]":
        return subprocess.Popen(
            [str(REFERENCE), "-c", script], env=outside, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    with genv.sdk.activate(config=Config(gpus=1)):
        # genv 1.4.3 holds device 0's lock: ours cannot take it.
        first = reference()
        try:
            assert first.stdout.readline() == "held\n"
            with pytest.raises(RuntimeError, match="cannot lock GPU 0"):
                with genv.sdk.lock(wait=False):
                    pytest.fail("took a lock genv 1.4.3 holds")
            first.stdin.close()
            assert first.wait(timeout=60) == 0
        finally:
            if first.poll() is None:
                first.kill()
            first.wait()
        # Ours holds it: genv 1.4.3 waits until we let go.
        second = None
        try:
            with genv.sdk.lock():
                second = reference()
                ready, _, _ = select.select([second.stdout], [], [], 2.0)
                assert not ready and second.poll() is None
            ready, _, _ = select.select([second.stdout], [], [], 60)
            assert ready and second.stdout.readline() == "held\n"
            second.stdin.close()
            assert second.wait(timeout=60) == 0
        finally:
            if second is not None:
                if second.poll() is None:
                    second.kill()
                second.wait()
