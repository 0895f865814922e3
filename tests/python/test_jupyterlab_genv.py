"""The JupyterLab extension (jupyterlab-genv 0.4, from PyPI) against our
genv: its server handlers in a real jupyter_server, and its kernel
provisioner giving a kernel the devices of the environment it is in.

The kernel is a stand-in (a Python process that says which devices it was
given through a FIFO, then waits): the provisioner only sets its
variables."""

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from genv import _command
from conftest import genv_cmd

pytest.importorskip("jupyter_server", reason="scripts/test installs jupyter_server")
pytest.importorskip("jupyterlab_genv", reason="scripts/test installs jupyterlab-genv")

TOKEN = "genv-test-token"
KERNEL = "standin-genv"

# Says CUDA_VISIBLE_DEVICES through the FIFO, then waits to be stopped.
STANDIN = """
import os, sys, time
with open(sys.argv[1], "w") as fifo:
    fifo.write(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
time.sleep(600)
"""


class Server:
    def __init__(self, process: "subprocess.Popen[str]", port: int, log: List[str]) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.log = log

    def request(self, method: str, path: str, body: Optional[Any] = None, timeout: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"token {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode()
        except OSError as e:
            raise AssertionError(f"{method} {path}: {e}; the server said:\n" + "".join(self.log)) from e
        return json.loads(text) if text else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "devices.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def server(tmp_path: Path, fifo: Path) -> Iterator[Server]:
    # A kernel spec of the stand-in, with the extension's provisioner (what
    # `python -m jupyterlab_genv install` writes into a copied spec).
    spec = Path.home() / ".local" / "share" / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", STANDIN, str(fifo), "{connection_file}"],
                "display_name": "stand-in (genv)",
                "language": "python",
                "metadata": {"kernel_provisioner": {"provisioner_name": "genv-provisioner"}},
            }
        )
    )
    env = dict(os.environ)
    # The handlers run `genv …` through the shell: ours, first on PATH.
    env["PATH"] = str(Path(_command.binary()).parent) + os.pathsep + env.get("PATH", "")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={tmp_path}",
            f"--IdentityProvider.token={TOKEN}",
            "--ServerApp.jpserver_extensions={'jupyterlab_genv': True}",
            # The stand-in ignores the shutdown request of a restart.
            "--KernelManager.shutdown_wait_time=1",
            "--ServerApp.allow_root=True",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    log: List[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=120)
            assert line is not None, "jupyter_server ended:\n" + "".join(log)
            if "is running at" in line:
                break
        # The next line is the address.
        address = lines.get(timeout=120)
        assert address is not None and f"127.0.0.1:{port}/" in address, "".join(log)
        # jupyter_server says where it runs before its loop binds the port:
        # the server is ready once a connection is accepted (it says
        # nothing then), tried until it is or the server ends.
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "".join(log)
            try:
                code = process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"jupyter_server ended ({code}):\n" + "".join(log))
        yield Server(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=30)
        process.stderr.close()


def said(fifo: Path, timeout: float = 60) -> str:
    """What the next stand-in kernel says (it opens the FIFO as it starts)."""

    answer: List[str] = []
    reader = threading.Thread(target=lambda: answer.append(fifo.read_text()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not answer:
        # Let the reader go, then fail.
        with open(fifo, "w"):
            pass
        raise AssertionError("no kernel started")
    return answer[0]


def test_the_package_requirement_is_met():
    requirements = metadata.requires("jupyterlab_genv") or []
    assert any(r.split(";")[0].strip() == "genv" for r in requirements)
    assert metadata.version("genv") == "1.4.3.1"


def test_handlers_and_provisioner(server, fifo):
    assert any("Registered jupyterlab_genv server extension" in line for line in server.log)
    assert server.request("GET", "/jupyterlab-genv/envs") == []
    assert server.request("GET", "/jupyterlab-genv/devices") == [
        {"eid": "", "env": ""},
        {"eid": "", "env": ""},
    ]

    # A kernel outside any environment: no devices.
    kernel = server.request("POST", "/api/kernels", {"name": KERNEL})
    kernel_id = kernel["id"]
    assert said(fifo) == ""

    # The extension's "activate" puts the kernel in an environment.
    server.request("POST", "/jupyterlab-genv/activate", {"eid": "notebook", "kernel_id": kernel_id})
    assert server.request("GET", f"/jupyterlab-genv/find?kernel_id={kernel_id}") == "notebook"
    (env,) = server.request("GET", "/jupyterlab-genv/envs")
    assert env["eid"] == "notebook" and env["pids"] == []
    (record,) = json.loads(genv_cmd("envs", "ps", "--format", "json").stdout)["envs"]
    assert record["kernel_ids"] == [kernel_id]

    # Devices attached to it (as `genv attach` in the kernel's terminal
    # would), then the kernel restarted: the provisioner gives it them.
    assert genv_cmd("devices", "attach", "--eid", "notebook", "--index", "1").stdout.strip() == "1"
    devices = server.request("GET", "/jupyterlab-genv/devices")
    assert [d["eid"] for d in devices] == ["", "notebook"]
    # The stand-in never answers kernel_info, so the restart's reply waits;
    # what matters is the kernel it starts.
    threading.Thread(
        target=lambda: _ignore(server.request, "POST", f"/api/kernels/{kernel_id}/restart"),
        daemon=True,
    ).start()
    assert said(fifo) == "1"


def _ignore(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # noqa: BLE001 (the server is stopped under it)
        pass
