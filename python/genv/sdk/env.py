"""The environment of this process: identity, configuration, activation."""

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from .. import _command
from ..entities import Env
from . import _vars

NOT_ACTIVE = "Not running in an active environment"
ALREADY_ACTIVE = "Already running in an active environment"


def eid() -> Optional[str]:
    """The identifier of the environment this process is in, or ``None``."""

    return os.environ.get(_vars.ENVIRONMENT_ID) or None


def active() -> bool:
    """Whether this process is in an environment."""

    return eid() is not None


def require_eid() -> str:
    """The environment's identifier; RuntimeError outside one."""

    current = eid()
    if current is None:
        raise RuntimeError(NOT_ACTIVE)
    return current


def home() -> Optional[Path]:
    """The configuration folder: ``.genv`` in the working directory, else in
    the home directory; ``None`` when neither exists."""

    for base in (Path.cwd(), Path.home()):
        path = base / ".genv"
        if path.is_dir():
            return path
    return None


def _config(answer: Dict[str, Any]) -> Env.Config:
    fields = answer.get("config")
    if fields is None:
        raise RuntimeError(f"Environment {answer.get('eid')} does not exist")
    return Env.Config(
        name=fields.get("name"),
        gpu_memory=fields.get("gpu_memory"),
        gpus=fields.get("gpus"),
    )


def _config_json(config: Env.Config) -> str:
    if config.gpus is not None:
        gpus: Optional[int] = int(config.gpus)
    else:
        gpus = None
    return json.dumps(
        {
            "name": None if config.name is None else str(config.name),
            "gpu_memory": None if config.gpu_memory is None else str(config.gpu_memory),
            "gpus": gpus,
        }
    )


def _sdk(*args: str) -> Dict[str, Any]:
    answer: Dict[str, Any] = json.loads(_command.run(["sdk", *args]))
    return answer


def configure(config: Env.Config) -> None:
    """Replaces the environment's configuration (unset fields are cleared)
    and the variables that carry it. The memory capacity of attached
    devices follows the new ``gpu_memory``.

    Raises RuntimeError outside an environment, or with genv's message for
    a value it refuses (such as a malformed memory string).
    """

    answer = _sdk("configure", "--eid", require_eid(), "--config", _config_json(config))
    _vars.put_config(_config(answer))


def configuration() -> Env.Config:
    """The environment's configuration, as this process's variables
    (``GENV_ENVIRONMENT_NAME``, ``GENV_GPU_MEMORY``, ``GENV_GPUS``) say.

    Raises RuntimeError outside an environment.
    """

    require_eid()
    gpus = os.environ.get(_vars.GPUS)
    return Env.Config(
        name=os.environ.get(_vars.ENVIRONMENT_NAME),
        gpu_memory=os.environ.get(_vars.GPU_MEMORY),
        gpus=int(gpus) if gpus else None,
    )


def refresh_configuration() -> Env.Config:
    """Reads the environment's configuration from genv's state (another
    process may have changed it) into this process's variables.

    Raises RuntimeError outside an environment.
    """

    config = _config(_sdk("show", "--eid", require_eid()))
    _vars.put_config(config)
    return config


def load_configuration() -> Env.Config:
    """Loads the configuration saved in the configuration folder
    (:func:`home`) and applies it to the environment, fields missing there
    cleared; an empty configuration when there is no such folder. The
    folder is read by ``genv config --load``, as a ``genv`` shell loads it
    (entries that are regular files of at most 4 KiB, never through a
    link, their values checked).

    Raises RuntimeError outside an environment, or with genv's message for
    an entry it refuses.
    """

    require_eid()
    _command.run(["config", "--load", "--quiet"])
    return refresh_configuration()


def save_configuration() -> None:
    """Saves the environment's configuration into the configuration folder
    (:func:`home`), when there is one, as ``genv config --save`` does (an
    entry per field, each written to a new file renamed into place; an
    unset field's entry removed).

    Raises RuntimeError outside an environment.
    """

    require_eid()
    if home() is not None:
        _command.run(["config", "--save", "--quiet"])


@contextmanager
def activate(*, eid: Optional[str] = None, config: Optional[Env.Config] = None) -> Iterator[None]:
    """Puts this process in an environment for the duration of the block.

    Creates the environment (or joins it, when ``eid`` names one that
    exists), replaces its configuration with ``config`` when given, and,
    when a device count is configured and the environment has no devices
    yet, attaches that many. Sets ``GENV_PYTHON``, ``GENV_ENVIRONMENT_ID``,
    the configuration's variables and ``CUDA_VISIBLE_DEVICES`` for the
    process (and so for the processes it starts); on exit, exception or
    not, the process leaves the environment (which ends with its last
    process, its devices with it) and every variable gets back the value it
    had.

    :param eid: the environment's identifier; the process id by default
    :param config: the configuration to give it
    :raises RuntimeError: when already in an environment, or when genv
        refuses (no devices available, a malformed value); nothing is left
        registered then
    """

    if active():
        raise RuntimeError(ALREADY_ACTIVE)
    pid = os.getpid()
    eid = eid or str(pid)
    args = ["activate", "--eid", eid, "--pid", str(pid)]
    if config is not None:
        args += ["--config", _config_json(config)]
    saved = _vars.save()
    try:
        answer = _sdk(*args)
        _vars.put(_vars.PYTHON, "1")
        _vars.put(_vars.ENVIRONMENT_ID, eid)
        _vars.put_config(_config(answer))
        _vars.put_indices(answer.get("indices", []))
        _vars.put_preload(answer.get("preload"))
        try:
            yield
        finally:
            _command.run(["envs", "deactivate", "--pid", str(pid)])
    finally:
        _vars.restore(saved)
