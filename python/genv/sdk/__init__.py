"""Put this Python process in a genv environment, and share GPUs politely.

::

    import genv

    with genv.sdk.activate(config=genv.sdk.Env.Config(name="train", gpus=1)):
        with genv.sdk.lock():
            train()

Outside :func:`activate`, the functions work on the environment the process
was started in (a ``genv`` shell, a container), and :func:`lock` does
nothing when there is none. Failures are :class:`RuntimeError` with genv's
message; waiting is reported through the ``genv`` logger.
"""

from ..entities import Env
from .devices import attach, attached, detach, lock, refresh_attached
from .env import (
    activate,
    active,
    configuration,
    configure,
    eid,
    home,
    load_configuration,
    refresh_configuration,
    save_configuration,
)

__all__ = [
    "Env",
    "activate",
    "active",
    "attach",
    "attached",
    "configuration",
    "configure",
    "detach",
    "eid",
    "home",
    "load_configuration",
    "lock",
    "refresh_attached",
    "refresh_configuration",
    "save_configuration",
]
