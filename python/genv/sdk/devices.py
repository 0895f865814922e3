"""The devices of this process's environment: attaching, detaching, and
the access locks that over-subscribed devices are shared through."""

import json
import math
import os
import subprocess
import threading
from contextlib import contextmanager
from typing import IO, Iterator, List, Optional

from .. import _command
from . import _vars
from .env import configuration, require_eid


def _wait_args(wait: bool, timeout: Optional[float]) -> List[str]:
    if timeout is not None:
        if not wait:
            raise ValueError("timeout is the longest wait: it needs wait=True")
        if not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds, 0 or more (got {timeout})")
    if timeout is None or math.isinf(timeout):
        return []
    return [repr(float(timeout))]


def attach(
    *,
    index: Optional[int] = None,
    gpus: Optional[int] = None,
    allow_over_subscription: bool = False,
    wait: bool = False,
    timeout: Optional[float] = None,
) -> List[int]:
    """Attaches devices to the environment and returns the indices of all
    its devices (``CUDA_VISIBLE_DEVICES`` follows).

    With ``index``, that device; with ``gpus``, devices until there are
    that many; with neither, the configured count. Never detaches: an
    environment already on more devices keeps them. An environment with a
    memory capacity takes a fraction of a device, one without takes it
    whole.

    :param allow_over_subscription: use devices that are taken when there
        are not enough free ones
    :param wait: when the devices are taken, wait in line (first come,
        first served) until they can be attached, instead of raising
    :param timeout: with ``wait``, give up after this many seconds
    :raises ValueError: for both ``index`` and ``gpus``
    :raises RuntimeError: outside an environment, or with genv's message
        when the devices cannot be attached (``No available devices``,
        ``Device 1 is not available``, a timeout)
    """

    if index is not None and gpus is not None:
        raise ValueError('Can\'t use both "index" and "count" in genv.sdk.devices.attach()')
    seconds = _wait_args(wait, timeout)
    args = ["devices", "attach", "--eid", require_eid()]
    if index is not None:
        args += ["--index", str(int(index))]
    else:
        if gpus is None:
            gpus = configuration().gpus
        current = refresh_attached()
        if gpus is None or len(current) >= gpus:
            return current
        args += ["--count", str(int(gpus))]
    if allow_over_subscription:
        args.append("--allow-over-subscription")
    if wait:
        args.append("--wait" + "".join("=" + s for s in seconds))
    indices = _command.indices(_command.run(args))
    _vars.put_indices(indices)
    return indices


def attached() -> List[int]:
    """The indices of the environment's devices, as this process knows them
    (``CUDA_VISIBLE_DEVICES``; in a container, the device locks mounted
    into it). Indices are the host's, even in a container.

    Raises RuntimeError outside an environment.
    """

    require_eid()
    if _vars.SHELL in os.environ or _vars.PYTHON in os.environ:
        return _vars.visible()
    if _vars.CONTAINER in os.environ:
        # The device locks mounted into the container: their names are the
        # host's indices.
        answer = json.loads(_command.run(["sdk", "attached"]))
        return [int(index) for index in answer["indices"]]
    raise RuntimeError("Failed to find attached device indices")


def detach(index: Optional[int] = None) -> List[int]:
    """Detaches the environment from one device, or from all of them, and
    returns the indices of the devices it keeps.

    Raises RuntimeError outside an environment.
    """

    args = ["devices", "detach", "--eid", require_eid()]
    if index is not None:
        args += ["--index", str(int(index))]
    indices = _command.indices(_command.run(args))
    _vars.put_indices(indices)
    return indices


def refresh_attached() -> List[int]:
    """Reads the environment's devices from genv's state (another process
    may have changed them) into ``CUDA_VISIBLE_DEVICES``.

    Raises RuntimeError outside an environment.
    """

    indices = _command.indices(_command.run(["devices", "find", "--eid", require_eid()]))
    _vars.put_indices(indices)
    return indices


@contextmanager
def lock(*, wait: bool = True, timeout: Optional[float] = None) -> Iterator[None]:
    """Holds the access locks of the environment's devices for the block,
    as ``genv lock`` does (the same lock files, ``devices/<index>.lock``
    in genv's state folder, so the two exclude each other).

    Environments whose memory capacities fit a device together hold its
    lock at the same time; one without a capacity has the device to
    itself. Does nothing outside an environment. The locks are let go when
    the block ends, however it ends, and when the process dies.

    :param wait: wait while a device is in use (by default); ``False``
        raises at once instead
    :param timeout: with ``wait``, give up after this many seconds
    :raises RuntimeError: when a device is in use and ``wait`` is
        ``False``, or the timeout passes, with genv's message naming who
        holds it
    """

    seconds = _wait_args(wait, timeout)
    if not os.environ.get(_vars.ENVIRONMENT_ID):
        yield
        return
    binary = _command.binary()
    args = ["lock"]
    if not wait:
        args.append("-n")
    elif seconds:
        args += ["-w", seconds[0]]
    # `genv lock` runs `genv sdk hold` once it has the locks; that says
    # `held` and keeps them until we write to its standard input, or this
    # process dies. Its own session, so Ctrl-C in the terminal reaches this
    # process only.
    command = [binary, *args, "--", binary, "sdk", "hold"]
    try:
        holder = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as e:
        raise RuntimeError(f"could not run {binary}: {e}") from e
    assert holder.stdin is not None and holder.stdout is not None
    errors: List[str] = []
    reader = threading.Thread(target=_read_stderr, args=(holder.stderr, errors), daemon=True)
    reader.start()
    try:
        line = holder.stdout.readline()
    except BaseException:
        _command.stop(holder)
        raise
    if line.strip() != "held":
        holder.wait()
        reader.join()
        raise _command.failure(args, holder.returncode, "".join(errors))
    try:
        yield
    finally:
        # Told, not just closed: a process forked inside the block holds
        # the pipe open too.
        try:
            holder.stdin.write("release\n")
            holder.stdin.close()
        except OSError:
            pass  # gone already: said below
        try:
            code = holder.wait()
        except BaseException:
            _command.stop(holder)
            raise
        reader.join()
        if code != 0:
            _command.logger.warning(
                "genv lock ended before the block did (exit code %s): the devices' locks "
                "may have been given back early%s",
                code,
                "".join(": " + line.strip() for line in errors[-1:]),
            )


def _read_stderr(stream: Optional[IO[str]], lines: List[str]) -> None:
    """Collects what ``genv lock`` says, logging its progress as it comes."""

    if stream is None:
        return
    for line in stream:
        lines.append(line)
        if line.startswith(_command.PROGRESS):
            _command.logger.info("%s", line.rstrip("\n"))
