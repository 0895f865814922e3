"""Running the ``genv`` command that this package installs.

Every SDK call is one run of the binary: it reads and writes the shared
state under its global lock, and answers on stdout (one line of JSON for
the ``genv sdk`` plumbing, device indices such as ``0,1`` for ``genv
devices``). A failure is its message on stderr and exit code 1, raised here
as :class:`RuntimeError` with that message.

When root's ``genv daemon`` serves the state folder, the calls it runs go
to its socket instead (:mod:`genv._daemon`), answered the same way without
a process per call.
"""

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import List, Optional, Sequence

from . import _daemon

#: Overrides which ``genv`` binary the SDK runs (tests, unusual installs).
BINARY_VAR = "GENV_SDK_BINARY"

logger = logging.getLogger("genv")

# What genv says on stderr while it waits (`genv: waiting for GPU 0 …`, a
# place in `--wait`'s line), or about something it handled: shown through
# logging, not part of an error's message.
PROGRESS = ("genv: waiting", "genv: warning:")
_ERROR_PREFIX = "genv: error: "


def binary() -> str:
    """The path of the ``genv`` binary the SDK runs.

    ``$GENV_SDK_BINARY`` when set; else the one installed with this package
    (the scripts folder of this interpreter, or of the user's scheme); else
    ``genv`` on ``PATH``.
    """

    override = os.environ.get(BINARY_VAR)
    if override:
        return override
    candidates: List[Path] = []
    for scheme in (None, f"{os.name}_user"):
        try:
            scripts = (
                sysconfig.get_path("scripts")
                if scheme is None
                else sysconfig.get_path("scripts", scheme)
            )
        except KeyError:
            continue
        if scripts:
            candidates.append(Path(scripts) / "genv")
    # `pip install --prefix` or `--target`: the scripts sit beside the prefix.
    candidates.append(Path(sys.prefix) / "bin" / "genv")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("genv")
    if found:
        return found
    raise RuntimeError(
        "could not find the genv binary (looked in "
        + ", ".join(str(c.parent) for c in candidates)
        + f" and on PATH); reinstall the genv package or set {BINARY_VAR}"
    )


def failure(args: Sequence[str], returncode: int, stderr: str) -> RuntimeError:
    """The RuntimeError for a failed run: genv's message, progress left out."""

    lines = []
    for line in stderr.splitlines():
        if line.startswith(PROGRESS):
            continue
        if line.startswith(_ERROR_PREFIX):
            line = line[len(_ERROR_PREFIX) :]
        lines.append(line)
    message = "\n".join(lines).strip()
    if "invalid choice: 'sdk'" in message or "unrecognized subcommand 'sdk'" in message:
        message = (
            f"{binary()} is not the genv binary of this package (genv 1.4.3's command?); "
            f"reinstall the genv package or set {BINARY_VAR}"
        )
    if not message:
        message = f"genv {args[0] if args else ''} exited with code {returncode}"
    return RuntimeError(message)


def log_progress(stderr: str) -> None:
    """genv's progress lines (waiting, warnings) to the ``genv`` logger."""

    for line in stderr.splitlines():
        if line.startswith(PROGRESS):
            logger.info("%s", line)


def run(args: Sequence[str]) -> str:
    """Runs ``genv ARGS`` and returns its stdout; RuntimeError on failure.

    When the caller is interrupted while genv runs (Ctrl-C during a wait),
    genv is asked to stop (it leaves any line it waits in) before the
    interruption goes on.
    """

    if _daemon.forwards(args):
        socket = _daemon.socket_path()
        if socket is not None:
            return _run_in_daemon(socket, args)
    command = [binary(), *args]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise RuntimeError(f"could not run {command[0]}: {e}") from e
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        stop(process)
        raise
    log_progress(stderr)
    if process.returncode != 0:
        raise failure(args, process.returncode, stderr)
    return stdout


def _run_in_daemon(socket: str, args: Sequence[str]) -> str:
    """``run`` through the daemon's socket: its answer taken as the
    binary's exit code, stdout and stderr."""

    said: List[str] = []

    def progress(text: str) -> None:
        said.append(text)
        log_progress(text)

    code, stdout, stderr = _daemon.run(socket, args, progress)
    log_progress(stderr)
    if code != 0:
        raise failure(args, code, "".join(said) + stderr)
    return stdout


def stop(process: "subprocess.Popen[str]", grace: Optional[float] = 5.0) -> None:
    """Asks a genv process to end (SIGTERM), then makes sure it has."""

    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def indices(text: str) -> List[int]:
    """``0,1`` (as ``genv devices attach|detach|find`` print) as a list."""

    text = text.strip()
    return [int(index) for index in text.split(",")] if text else []
