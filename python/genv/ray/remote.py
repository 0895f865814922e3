"""``genv.ray.remote``: ``ray.remote`` with each task in an environment of
its own."""

import functools
import json
import math
import os
from typing import Any, Callable, List, TypeVar

import ray

from .. import _command, sdk

_F = TypeVar("_F", bound=Callable[..., Any])


def remote(**options: Any) -> Callable[[_F], Any]:
    """Like ``ray.remote(**options)``, with each run of the task in a genv
    environment of its own, attached to the GPUs that Ray gave it.

    The environment is named ``ray/<pid>`` and configured with
    ``ceil(num_gpus)`` devices; a fraction of a GPU (``0 < num_gpus < 1``)
    becomes a memory capacity of that fraction of the device's memory, so
    tasks sharing a GPU are held to their share (and share its lock, see
    :func:`genv.sdk.lock`). The GPUs are attached even when other
    environments hold them: Ray decided who gets which.

    :raises ValueError: without ``num_gpus``
    """

    num_gpus = options.get("num_gpus")
    if num_gpus is None:
        raise ValueError(
            "The @genv.ray.remote decorator must be applied only when the "
            "argument 'num_gpus' is being used."
        )

    def decorator(function: _F) -> Any:
        @functools.wraps(function)
        def task(*args: Any, **kwargs: Any) -> Any:
            indices = [int(index) for index in ray.get_gpu_ids()]
            config = sdk.Env.Config(name=f"ray/{os.getpid()}", gpus=math.ceil(num_gpus))
            if 0 < num_gpus < 1 and indices:
                config.gpu_memory = str(math.floor(_total_bytes(indices[0]) * num_gpus))
            with sdk.activate():
                sdk.configure(config)
                for index in indices:
                    sdk.attach(index=index, allow_over_subscription=True)
                return function(*args, **kwargs)

        return ray.remote(**options)(task)

    return decorator


def _total_bytes(index: int) -> int:
    """A device's memory in bytes, as genv knows it (the driver, or the
    simulated devices of ``GENV_MOCK_*``)."""

    devices: List[Any] = json.loads(_command.run(["sdk", "devices"]))["devices"]
    for device in devices:
        if device["index"] == index:
            return int(device["total_bytes"])
    raise RuntimeError(f"Device {index} does not exist")
