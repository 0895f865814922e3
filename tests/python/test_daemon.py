"""genv.sdk through root's `genv daemon`: the SDK speaks to its socket
itself, with no `genv` process per call, and is refused what the daemon
refuses the binary."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import genv
from genv import _command, _daemon
from conftest import CLEARED, genv_cmd

Config = genv.sdk.Env.Config

# The test users of tests/it/common/users.rs: real uids through setpriv.
ALICE = 47101
MALLORY = 47102


def require_root() -> None:
    assert os.geteuid() == 0, (
        "genv daemon runs as root, and these tests switch uids with setpriv: "
        "run them as root (scripts/test does)"
    )


@pytest.fixture
def open_top() -> Iterator[Path]:
    """A folder every user can reach (pytest's own is root's, 0700)."""

    top = Path(tempfile.mkdtemp(prefix="genv-daemon-test-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def daemon(open_top: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Root's daemon serving a new state folder on two simulated GPUs; the
    state folder's path. Ready once it says so on stderr."""

    require_root()
    state = open_top / "state"
    monkeypatch.setenv("GENV_TMPDIR", str(state))
    env = {name: value for name, value in os.environ.items() if name not in CLEARED}
    env["GENV_MOCK_DEVICE_COUNT"] = "2"
    process = subprocess.Popen(
        [_command.binary(), "daemon"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    ready = process.stderr.readline()
    assert ready.startswith("genv: daemon serving"), ready + process.stderr.read()
    assert _daemon.socket_path() == str(state / "genv.sock")
    yield state
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any process started from now on fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


def state_file(state: Path, name: str) -> Dict[str, Any]:
    try:
        with open(state / name) as f:
            loaded: Dict[str, Any] = json.load(f)
            return loaded
    except FileNotFoundError:
        return {}


def attached_to(state: Path) -> Dict[int, List[str]]:
    """Device index → the environments attached to it, from devices.json."""

    return {
        d["index"]: [a["eid"] for a in d["attachments"]]
        for d in state_file(state, "devices.json").get("devices", [])
    }


def env_entries(state: Path) -> Dict[str, Any]:
    return {e["eid"]: e for e in state_file(state, "envs.json").get("envs", [])}


# --- the SDK through the daemon ----------------------------------------------


def test_sdk_calls_go_to_the_daemon_without_a_process(daemon: Path, no_subprocess: None) -> None:
    pid = os.getpid()
    with genv.sdk.activate(eid="sdk-env", config=Config(name="train", gpus=1)):
        entry = env_entries(daemon)["sdk-env"]
        assert entry["pids"] == [pid] and entry["uid"] == 0
        assert entry["config"] == {"name": "train", "gpu_memory": None, "gpus": 1}
        assert genv.sdk.attached() == [0]
        assert attached_to(daemon) == {0: ["sdk-env"], 1: []}

        assert genv.sdk.detach() == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"
        assert attached_to(daemon) == {0: [], 1: []}

        assert genv.sdk.attach(index=1) == [1]
        assert attached_to(daemon) == {0: [], 1: ["sdk-env"]}
        assert genv.sdk.attach(gpus=2) == [0, 1]
        assert attached_to(daemon) == {0: ["sdk-env"], 1: ["sdk-env"]}
        assert genv.sdk.detach(index=0) == [1]
        assert genv.sdk.refresh_attached() == [1]

        genv.sdk.configure(Config(name="tuned", gpu_memory="1g"))
        assert env_entries(daemon)["sdk-env"]["config"] == {
            "name": "tuned",
            "gpu_memory": "1g",
            "gpus": None,
        }
        assert os.environ["GENV_GPU_MEMORY"] == "1g"
        assert genv.sdk.refresh_configuration() == Config(name="tuned", gpu_memory="1g")

        # genv's message, as the binary would give it.
        with pytest.raises(RuntimeError, match=r"^Device 7 does not exist \(devices: 0,1\)$"):
            genv.sdk.attach(index=7)
    assert env_entries(daemon) == {}


def test_one_connection_is_kept_and_made_again_after_fork(daemon: Path) -> None:
    with genv.sdk.activate(eid="forked"):
        genv.sdk.attach(index=0)
        kept = _daemon._idle
        assert kept is not None
        genv.sdk.refresh_attached()
        assert _daemon._idle is kept

        child = os.fork()
        if child == 0:
            # The child's own connection: the parent's is left alone.
            ok = _daemon._idle is None and genv.sdk.refresh_attached() == [0]
            ok = ok and _daemon._idle is not None and _daemon._idle is not kept
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert genv.sdk.refresh_attached() == [0]
        assert _daemon._idle is kept


def test_the_binary_and_the_sdk_see_the_same_state(daemon: Path) -> None:
    with genv.sdk.activate(eid="shared"):
        genv.sdk.attach(index=1)
        found = genv_cmd("devices", "find", "--eid", "shared").stdout.strip()
        assert found == "1"
        genv_cmd("devices", "detach", "--eid", "shared")
        assert genv.sdk.refresh_attached() == []


# --- another user ------------------------------------------------------------

CHILD = """
import subprocess, sys
import genv

def refuse(*args, **kwargs):
    raise AssertionError("a process was started")

subprocess.Popen = subprocess.run = refuse
try:
    genv.sdk.attach(index=0)
except RuntimeError as e:
    print(e)
    sys.exit(3)
sys.exit(0)
"""


def test_another_user_is_refused_an_environment_not_theirs(
    daemon: Path, open_top: Path
) -> None:
    # Alice's environment, made by root for one of her processes.
    home = open_top / "home"
    home.mkdir()
    alice = subprocess.Popen(
        ["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", "--clear-groups", "--", "sleep", "600"]
    )
    try:
        genv_cmd(
            "envs", "activate", "--eid", "alice-env", "--uid", str(ALICE), "--pid", str(alice.pid)
        )
        env = {name: value for name, value in os.environ.items() if name not in CLEARED}
        env.update(
            GENV_ENVIRONMENT_ID="alice-env",
            HOME=str(home),
            PYTHONPATH=str(Path(genv.__file__).parent.parent),
        )
        result = subprocess.run(
            ["setpriv", f"--reuid={MALLORY}", f"--regid={MALLORY}", "--clear-groups", "--"]
            + [sys.executable, "-c", CHILD],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 3, result.stdout + result.stderr
        first, hint = result.stdout.splitlines()
        assert first.startswith("environment 'alice-env' belongs to ")
        assert first.endswith("; only its owner or root may attach or detach its devices")
        assert hint.startswith("hint: genv daemon keeps the state on this machine")
        assert not any(attached_to(daemon).values())
        assert env_entries(daemon)["alice-env"]["uid"] == ALICE
    finally:
        alice.kill()
        alice.wait()


# --- a socket that does not answer ------------------------------------------


def test_a_socket_without_a_daemon_fails_as_the_binary_does(
    open_top: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root()
    state = open_top / "state"
    state.mkdir(mode=0o755)
    path = state / "genv.sock"
    # A socket left by a daemon that died: nobody listens on it.
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()
    monkeypatch.setenv("GENV_TMPDIR", str(state))
    assert _daemon.socket_path() == str(path)

    binary = genv_cmd("devices", "attach", "--eid", "e", "--index", "0", check=False)
    assert binary.returncode == 1
    expected = str(_command.failure([], 1, binary.stderr))
    assert expected.startswith(f"genv daemon does not answer on {path} (Connection refused")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the SDK ran the binary")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setenv("GENV_ENVIRONMENT_ID", "e")
    with pytest.raises(RuntimeError) as raised:
        genv.sdk.attach(index=0)
    assert str(raised.value) == expected
    assert sorted(p.name for p in state.iterdir()) == ["genv.sock"]


def test_a_socket_that_is_not_roots_is_not_believed(
    open_top: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root()
    state = open_top / "state"
    state.mkdir(mode=0o755)
    monkeypatch.setenv("GENV_TMPDIR", str(state))
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(state / "genv.sock"))
    left.close()
    os.chown(state / "genv.sock", MALLORY, MALLORY)
    assert _daemon.socket_path() is None
    os.chown(state / "genv.sock", 0, 0)
    state.chmod(0o775)
    assert _daemon.socket_path() is None
    state.chmod(0o755)
    assert _daemon.socket_path() is not None
    # A link to a good folder is not the folder.
    (open_top / "link").symlink_to(state)
    monkeypatch.setenv("GENV_TMPDIR", str(open_top / "link"))
    assert _daemon.socket_path() is None


# --- connections the daemon closes --------------------------------------------


class FakeDaemon:
    """Root's listener on a socket in a root folder, answering each
    request as `script` says: the frames to send (a list), or None to
    close the connection instead; "close" after an answer closes the
    connection then (`closed` is set once it is)."""

    def __init__(self, state: Path, script: List[Any]) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.connections = 0
        self.closed = threading.Event()
        self.script = script
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(state / "genv.sock"))
        self.listener.listen()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.script:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                while self.script:
                    head = connection.recv(4, socket.MSG_WAITALL)
                    if len(head) < 4:
                        break
                    (length,) = struct.unpack(">I", head)
                    self.requests.append(json.loads(connection.recv(length, socket.MSG_WAITALL)))
                    frames = self.script.pop(0)
                    if frames is None:
                        break
                    for frame in frames:
                        body = json.dumps(frame).encode()
                        connection.sendall(struct.pack(">I", len(body)) + body)
                    if self.script and self.script[0] == "close":
                        self.script.pop(0)
                        break
            self.closed.set()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_state(open_top: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    require_root()
    state = open_top / "state"
    state.mkdir(mode=0o755)
    monkeypatch.setenv("GENV_TMPDIR", str(state))
    monkeypatch.setenv("GENV_ENVIRONMENT_ID", "e")
    return state


def test_a_connection_closed_while_idle_is_made_again(fake_state: Path) -> None:
    fake = FakeDaemon(
        fake_state, [[{"code": 0, "stdout": "0\n"}], "close", [{"code": 0, "stdout": "1\n"}]]
    )
    try:
        assert genv.sdk.refresh_attached() == [0]
        assert fake.closed.wait(timeout=10)
        # The daemon closed the connection after answering (as after 60 s
        # idle): the next call connects again instead of failing.
        assert genv.sdk.refresh_attached() == [1]
        assert fake.connections == 2
        assert [r["argv"] for r in fake.requests] == [["devices", "find", "--eid", "e"]] * 2
        env = fake.requests[0]["env"]
        assert env["GENV_ENVIRONMENT_ID"] == "e"
        assert "GENV_TMPDIR" not in env and "GENV_MOCK_DEVICE_COUNT" not in env
        assert "dotgenv" not in fake.requests[0]
    finally:
        fake.close()


def test_a_request_is_never_sent_twice(fake_state: Path) -> None:
    fake = FakeDaemon(fake_state, [None])
    try:
        with pytest.raises(RuntimeError, match="may or may not have been done"):
            genv.sdk.detach()
        assert len(fake.requests) == 1
    finally:
        fake.close()


def test_progress_goes_to_logging_and_errors_read_as_the_binarys(
    fake_state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDaemon(
        fake_state,
        [
            [
                {"stderr": "genv: waiting for GPU 1 (1st in line)\n"},
                {"code": 0, "stdout": "1\n", "stderr": "genv: warning: a warning\n"},
            ],
            [
                {"stderr": "genv: waiting for GPU 1 (1st in line)\n"},
                {"code": 1, "stderr": "genv: error: it failed\nhint: do this\n"},
            ],
        ],
    )
    try:
        caplog.set_level("INFO", logger="genv")
        assert genv.sdk.refresh_attached() == [1]
        assert [r.getMessage() for r in caplog.records] == [
            "genv: waiting for GPU 1 (1st in line)",
            "genv: warning: a warning",
        ]
        with pytest.raises(RuntimeError) as raised:
            genv.sdk.refresh_attached()
        assert str(raised.value) == "it failed\nhint: do this"
    finally:
        fake.close()


def test_a_long_answer_is_read_whole(fake_state: Path) -> None:
    many = ",".join(["1"] * 200_000)
    fake = FakeDaemon(fake_state, [[{"code": 0, "stdout": many + "\n"}], [{"code": 0}]])
    try:
        assert genv.sdk.refresh_attached() == [1] * 200_000
        # The connection is in step for the next answer.
        assert genv.sdk.refresh_attached() == []
        assert fake.connections == 1
    finally:
        fake.close()


def test_a_thread_waiting_in_line_holds_up_no_other(
    daemon: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="genv")
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        genv_cmd("envs", "activate", "--eid", "other", "--uid", "0", "--pid", str(sleeper.pid))
        genv_cmd("devices", "attach", "--eid", "other", "--index", "0")
        with genv.sdk.activate(eid="waiter"):
            waited: List[Any] = []
            waiting = threading.Thread(
                target=lambda: waited.append(genv.sdk.attach(index=0, wait=True, timeout=60))
            )
            waiting.start()
            # While the waiter is in line (queue.json names it), this
            # thread's own calls are answered at once, on a connection of
            # its own.
            while "waiter" not in str(state_file(daemon, "queue.json")):
                assert waiting.is_alive(), waited
                assert genv.sdk.refresh_attached() == []
            assert genv.sdk.refresh_attached() == []
            genv_cmd("devices", "detach", "--eid", "other")
            waiting.join(timeout=60)
            assert waited == [[0]]
            # The daemon's line about waiting, to logging.
            assert any(
                r.getMessage().startswith("genv: waiting for device 0") for r in caplog.records
            )
    finally:
        sleeper.kill()
        sleeper.wait()


LISTENER = """
import socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen()
print("listening", flush=True)
sys.stdin.read()
"""


def test_a_socket_answered_by_another_user_is_not_believed(
    fake_state: Path, open_top: Path
) -> None:
    # Mallory listens on a socket of hers, which then stands in the root
    # folder as root's: only SO_PEERCRED tells.
    hers = open_top / "mallory"
    hers.mkdir()
    os.chown(hers, MALLORY, MALLORY)
    listener = subprocess.Popen(
        ["setpriv", f"--reuid={MALLORY}", f"--regid={MALLORY}", "--clear-groups", "--"]
        + [sys.executable, "-c", LISTENER, str(hers / "genv.sock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "listening\n"
        os.rename(hers / "genv.sock", fake_state / "genv.sock")
        os.chown(fake_state / "genv.sock", 0, 0)
        assert _daemon.socket_path() is not None

        binary = genv_cmd("devices", "find", "--eid", "e", check=False)
        assert binary.returncode == 1
        expected = str(_command.failure([], 1, binary.stderr))
        assert expected == (
            f"the process answering on {fake_state / 'genv.sock'} is not root's; "
            "genv does not believe it"
        )
        with pytest.raises(RuntimeError) as raised:
            genv.sdk.refresh_attached()
        assert str(raised.value) == expected
    finally:
        listener.kill()
        listener.wait()
