"""Speaking to ``genv daemon`` over its socket, without a process per call.

When root's daemon serves the state folder (``<GENV_TMPDIR>/genv.sock``),
the SDK sends it the command line the ``genv`` binary would send, on one
connection kept for the process, and handles the answer as the binary's
exit code, stdout and stderr. The protocol (src/daemon/protocol.rs): frames
of a 4-byte big-endian length and that many bytes of JSON; a request
``{"argv": [...], "env": {...}}``; answers: progress frames ``{"stderr":
"..."}``, then the final one with ``code``, ``stdout`` and ``stderr`` (a
long stdout follows as the next frame's bytes: ``"stdout_frame": true``)
(empty strings left out).

The socket is believed exactly as the binary believes it
(``StateDir::daemon_socket`` and ``daemon::client::connect``): a socket
owned by root, in a folder owned by root that nobody else may write, and
root's process answering on it (``SO_PEERCRED``).
"""

import json
import os
import select
import socket
import stat
import struct
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Optional, Sequence, Tuple

SOCKET = "genv.sock"
#: The state folder when ``GENV_TMPDIR`` is unset or empty.
DEFAULT_TMPDIR = "/var/tmp/genv"

#: The largest answer read (the daemon's client reads up to 1 GiB too).
MAX_ANSWER = 1 << 30

#: The daemon closes a connection idle for 60 s; one idle this long is
#: made again rather than risk a request crossing that close.
_IDLE_REUSE = 50.0

#: What the daemon runs for the SDK (the binary's ``daemon::client::
#: forwards``), less what reads or writes ``.genv``, ``genv activate`` and
#: ``genv config``: those run the binary, which reads the folder as the
#: user and talks to the daemon itself.
_FORWARDED = frozenset({"attach", "deactivate", "detach", "devices", "envs", "status"})

#: The variables a verb may read that are the caller's to decide, besides
#: ``GENV_*`` (the binary's ``daemon::client::variables``).
_VARIABLES = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "LD_PRELOAD",
        "HOME",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        "JUPYTER_RUNTIME_DIR",
    }
)
_VARIABLES_RAW = frozenset(os.fsencode(name) for name in _VARIABLES)
#: ``GENV_*`` variables that stay the daemon's own (``caller::daemon_owns``).
_DAEMON_OWNS = frozenset(
    {
        "GENV_TMPDIR",
        "GENV_SSH",
        "GENV_DOCKER",
        "GENV_CONTAINER_RUNTIME",
        "GENV_BYPASS",
        "GENV_SHIM_DEPTH",
    }
)

_START_HINT = (
    "hint: start it (sudo systemctl start genv-daemon.socket, or sudo genv daemon); "
    "genv does not change the state without it while its socket is there"
)

_HEAD = struct.Struct(">I")
_UCRED = struct.Struct("3i")

#: How long a request's answer is watched for before the thread sleeps on
#: the socket: most answers come sooner, and a sleep and the wake-up
#: after it cost more than the request itself on a virtual machine.
_SPIN = 0.0003


def forwards(args: Sequence[str]) -> bool:
    """Whether the daemon runs ``genv ARGS`` for the SDK."""

    if not args:
        return False
    verb = args[0]
    if verb == "sdk":
        # `hold` keeps the locks in the caller's process.
        return len(args) < 2 or args[1] != "hold"
    if verb == "usage":
        return len(args) >= 2 and args[1] == "snapshot"
    return verb in _FORWARDED


def socket_path() -> Optional[str]:
    """The daemon's socket, when one is there to be believed: a socket
    owned by root (not followed), in a folder owned by root without group
    or other write bits. ``None``: no daemon, run the binary."""

    root = os.environ.get("GENV_TMPDIR") or DEFAULT_TMPDIR
    path = os.path.join(root, SOCKET)
    idle = _idle
    if idle is not None and idle.path == path and idle.open_here():
        # Believed when connected, and root's daemon still holds it open.
        return path
    try:
        found = os.lstat(path)
        if not stat.S_ISSOCK(found.st_mode) or found.st_uid != 0:
            return None
        folder = os.lstat(root)
    except OSError:
        return None
    if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != 0 or folder.st_mode & 0o022:
        return None
    return path


def shown(path: str) -> str:
    """A path as genv shows it (``state::file::shown``): controls and
    invisible format characters as Rust escapes."""

    text = os.fsencode(path).decode("utf-8", "replace")
    return "".join(_escaped(c) if _unsafe(c) else c for c in text)


def _unsafe(c: str) -> bool:
    o = ord(c)
    return (
        o < 0x20
        or 0x7F <= o <= 0x9F
        or 0x200B <= o <= 0x200F
        or 0x2028 <= o <= 0x202E
        or 0x2060 <= o <= 0x2069
        or o == 0xFEFF
    )


def _escaped(c: str) -> str:
    special = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}
    return special.get(c) or "\\u{%x}" % ord(c)


def _os_error(e: OSError) -> str:
    """An OS error as Rust's ``io::Error`` shows it."""

    if e.errno is not None:
        return f"{os.strerror(e.errno)} (os error {e.errno})"
    return str(e)


# What ``_variables_json`` last found: the names of the variables sent,
# for the names the environment had then, and the JSON of recent values.
_names_seen: Optional[FrozenSet[bytes]] = None
_names_sent: Tuple[bytes, ...] = ()
_encoded: Dict[Tuple[bytes, ...], str] = {}


def _variables_json() -> str:
    """``variables()`` as JSON: the SDK sends it with every request, and a
    process's variables seldom change between two (``CUDA_VISIBLE_DEVICES``
    goes back and forth), so the names are looked for again only when the
    environment's names change, and the JSON of the last few values is
    kept."""

    global _names_seen, _names_sent
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):
        return json.dumps(variables(), separators=(",", ":"))
    names = raw.keys()
    if _names_seen is None or names != _names_seen:
        _names_seen = frozenset(names)
        _names_sent = tuple(key for key in raw if _sent_raw(key))
    values = tuple(raw[key] for key in _names_sent)
    text = _encoded.get(values)
    if text is None:
        if len(_encoded) >= 8:
            _encoded.clear()
        found = {os.fsdecode(key): os.fsdecode(value) for key, value in zip(_names_sent, values)}
        text = _encoded[values] = json.dumps(found, separators=(",", ":"))
    return text


def variables() -> Dict[str, str]:
    """The process's variables the daemon takes from its client."""

    return {name: value for name, value in os.environ.items() if _sent(name)}


def _sent_raw(key: bytes) -> bool:
    """``_sent`` for a name as os.environ keeps it, decoded only when it
    may be sent: decoding every name would cost more than the request."""

    return (key[:5] == b"GENV_" or key in _VARIABLES_RAW) and _sent(os.fsdecode(key))


def _sent(name: str) -> bool:
    if name.startswith("GENV_"):
        return name not in _DAEMON_OWNS and not name.startswith("GENV_MOCK_")
    return name in _VARIABLES


class _Lost(Exception):
    """The connection failed after the request was sent."""


class _Connection:
    """One connection to the daemon, used by one request at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.buffer = b""
        self.used = time.monotonic()
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise RuntimeError(
                f"genv daemon does not answer on {shown(path)} ({_os_error(e)}); nothing was done\n"
                + _START_HINT
            ) from e
        try:
            creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        except OSError as e:
            self.sock.close()
            raise RuntimeError(f"{shown(path)}: {_os_error(e)}") from e
        _, uid, _ = _UCRED.unpack(creds)
        if uid != 0:
            self.sock.close()
            raise RuntimeError(
                f"the process answering on {shown(path)} is not root's; genv does not believe it"
            )
        # Readable between answers means closed: the daemon sends nothing
        # unasked.
        self.closed = select.poll()
        self.closed.register(self.sock, select.POLLIN)

    def open_here(self) -> bool:
        """Whether this process made the connection and the daemon has not
        closed it (it sends nothing between answers, so anything waiting
        to be read is its close)."""

        return self.pid == os.getpid() and not self.buffer and not self.closed.poll(0)

    def reusable(self, path: str) -> bool:
        """Whether this connection can carry the next request to ``path``:
        same process, same socket, not idle for long, and not closed by
        the daemon (which sends nothing between answers, so anything
        waiting to be read is its close)."""

        if self.path != path or time.monotonic() - self.used > _IDLE_REUSE:
            return False
        return self.open_here()

    def close(self) -> None:
        self.sock.close()

    def exchange(self, argv: Sequence[str], progress: Callable[[str], None]) -> Dict[str, Any]:
        """Sends one request and reads its answers up to the final one,
        handing each progress frame's stderr to ``progress`` as it comes.
        :class:`_Lost` when the connection fails after sending."""

        # ASCII: a variable that is not UTF-8 goes as escapes the daemon
        # refuses, as it refuses any malformed request.
        argv_json = json.dumps(list(argv), separators=(",", ":"))
        body = f'{{"argv":{argv_json},"env":{_variables_json()}}}'.encode()
        try:
            self.sock.sendall(_HEAD.pack(len(body)) + body, socket.MSG_NOSIGNAL)
            while True:
                answer = json.loads(self._frame())
                if not isinstance(answer, dict):
                    raise _Lost("an answer that is not a JSON object")
                if "code" in answer:
                    if answer.get("stdout_frame"):
                        # A long stdout follows as the next frame's bytes.
                        answer["stdout"] = self._frame().decode("utf-8", "replace")
                    self.used = time.monotonic()
                    return answer
                stderr = answer.get("stderr")
                if isinstance(stderr, str) and stderr:
                    progress(stderr)
        except OSError as e:
            raise _Lost(_os_error(e)) from e
        except ValueError as e:
            raise _Lost(str(e)) from e

    def _recv_soon(self) -> bytes:
        """The next bytes: watched for up to ``_SPIN``, then waited for."""

        deadline = time.perf_counter() + _SPIN
        while True:
            try:
                return self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() > deadline:
                    return self.sock.recv(65536)

    def _frame(self) -> bytes:
        """The next frame's body: usually one recv holds the whole frame;
        the rest of a long one is read straight into a buffer of its size."""

        while len(self.buffer) < _HEAD.size:
            chunk = self._recv_soon()
            if not chunk:
                raise _Lost("unexpected end of file" if self.buffer else "the connection was closed")
            self.buffer += chunk
        (length,) = _HEAD.unpack_from(self.buffer)
        if length > MAX_ANSWER:
            raise _Lost(f"a frame of {length} bytes is too long")
        end = _HEAD.size + length
        if len(self.buffer) >= end:
            body, self.buffer = self.buffer[_HEAD.size : end], self.buffer[end:]
            return body
        whole = bytearray(length)
        have = len(self.buffer) - _HEAD.size
        whole[:have] = self.buffer[_HEAD.size :]
        self.buffer = b""
        view = memoryview(whole)
        while have < length:
            got = self.sock.recv_into(view[have:])
            if not got:
                raise _Lost("unexpected end of file")
            have += got
        return bytes(whole)


# The process's connection while no request uses it. A request takes it
# out of the slot and puts it back when done, so that a thread waiting in
# line for a device (`attach(wait=True)`) holds up no other thread: one
# that finds the slot empty opens a connection of its own.
_lock = threading.Lock()
_idle: Optional[_Connection] = None


def _after_fork() -> None:
    # The parent's connection is the parent's: the child forgets it (and
    # a lock some other thread held at the fork) and connects anew.
    global _lock, _idle
    _lock = threading.Lock()
    _idle = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _take(path: str) -> _Connection:
    global _idle
    with _lock:
        connection, _idle = _idle, None
    if connection is not None:
        if connection.reusable(path):
            return connection
        if connection.pid == os.getpid():
            connection.close()
    return _Connection(path)


def _give_back(connection: _Connection) -> None:
    global _idle
    with _lock:
        kept = _idle is None and connection.pid == os.getpid()
        if kept:
            _idle = connection
    if not kept:
        connection.close()


def run(path: str, args: Sequence[str], progress: Callable[[str], None]) -> Tuple[int, str, str]:
    """Runs ``genv ARGS`` in the daemon on ``path``: its exit code, stdout
    and stderr, each progress frame's stderr handed to ``progress`` as it
    comes. RuntimeError when the daemon does not answer, or stops
    answering after the request was sent (a request is never sent again:
    it may have been done)."""

    connection = _take(path)
    try:
        answer = connection.exchange(args, progress)
    except _Lost as e:
        connection.close()
        raise RuntimeError(_lost(path, str(e))) from None
    except BaseException:
        # Interrupted with the answer still to come: the connection is out
        # of step, and goes.
        connection.close()
        raise
    _give_back(connection)
    code = answer.get("code")
    stdout = answer.get("stdout", "")
    stderr = answer.get("stderr", "")
    if not isinstance(code, int) or not isinstance(stdout, str) or not isinstance(stderr, str):
        raise RuntimeError(_lost(path, "a malformed answer"))
    return code, stdout, stderr


def _lost(path: str, why: str) -> str:
    return (
        f"genv daemon stopped answering on {shown(path)} ({why}); "
        "the command may or may not have been done"
    )
