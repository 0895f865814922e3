"""A sandbox for every test: its own state folder, two simulated GPUs,
and no environment inherited from the shell that runs pytest."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import genv
from genv import _command

CLEARED = [
    "GENV_ENVIRONMENT_ID",
    "GENV_ENVIRONMENT_NAME",
    "GENV_GPU_MEMORY",
    "GENV_GPUS",
    "GENV_PYTHON",
    "GENV_SHELL",
    "GENV_CONTAINER",
    "GENV_SDK_BINARY",
    "GENV_MOCK_DEVICE_TOTAL_MEMORY",
    "CUDA_VISIBLE_DEVICES",
]


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "state"
    monkeypatch.setenv("GENV_TMPDIR", str(folder))
    monkeypatch.setenv("GENV_MOCK_DEVICE_COUNT", "2")
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield folder


def genv_cmd(*args: str, env_id: str = "", check: bool = True) -> "subprocess.CompletedProcess[str]":
    """Runs the installed genv binary, as another process would; `env_id`
    runs it inside that environment."""

    env = dict(os.environ)
    for name in CLEARED:
        env.pop(name, None)
    if env_id:
        env["GENV_ENVIRONMENT_ID"] = env_id
    result = subprocess.run(
        [_command.binary(), *args], env=env, capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"genv {' '.join(args)} failed: {result.stderr}")
    return result


def envs() -> List[Any]:
    return json.loads(genv_cmd("envs", "ps", "--format", "json").stdout)["envs"]


def devices() -> List[Any]:
    return json.loads(genv_cmd("devices", "ps", "--format", "json").stdout)["devices"]


def attachments(index: int) -> List[Any]:
    return [d for d in devices() if d["index"] == index][0]["attachments"]


class OtherEnv:
    """An environment of another process (a `sleep`), for contention."""

    def __init__(self, eid: str) -> None:
        self.eid = eid
        self.process = subprocess.Popen(["sleep", "600"])
        genv_cmd(
            "envs", "activate", "--eid", eid, "--uid", str(os.getuid()), "--pid", str(self.process.pid)
        )

    def attach(self, *args: str) -> str:
        return genv_cmd("devices", "attach", "--eid", self.eid, *args).stdout.strip()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def other() -> Iterator[OtherEnv]:
    env = OtherEnv("other")
    yield env
    env.close()


@pytest.fixture
def python() -> str:
    return sys.executable


__all__ = ["genv", "genv_cmd", "envs", "devices", "attachments", "OtherEnv"]
