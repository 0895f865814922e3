"""The process's environment variables that say which environment it is
in, as a ``genv`` shell sets them."""

import os
from typing import Dict, Iterable, List, Optional

from ..entities import Env

ENVIRONMENT_ID = "GENV_ENVIRONMENT_ID"
ENVIRONMENT_NAME = "GENV_ENVIRONMENT_NAME"
GPU_MEMORY = "GENV_GPU_MEMORY"
GPUS = "GENV_GPUS"
PYTHON = "GENV_PYTHON"
SHELL = "GENV_SHELL"
CONTAINER = "GENV_CONTAINER"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
LD_PRELOAD = "LD_PRELOAD"

#: Everything :func:`genv.sdk.activate` may set, and restores on exit.
ALL = (
    PYTHON,
    ENVIRONMENT_ID,
    ENVIRONMENT_NAME,
    GPU_MEMORY,
    GPUS,
    CUDA_VISIBLE_DEVICES,
    LD_PRELOAD,
)


def put(name: str, value: Optional[object]) -> None:
    """Sets a variable, or unsets it for ``None``."""

    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)


def put_config(config: Env.Config) -> None:
    put(ENVIRONMENT_NAME, config.name)
    put(GPU_MEMORY, config.gpu_memory)
    put(GPUS, config.gpus)


def put_preload(library: Optional[str]) -> None:
    """Puts genv's memory cap library first in ``LD_PRELOAD``, so that the
    processes this one starts cannot take more GPU memory than the
    environment's capacity (this process itself loaded its libraries
    already)."""

    if not library:
        return
    entries = [e for e in os.environ.get(LD_PRELOAD, "").replace(":", " ").split() if e != library]
    put(LD_PRELOAD, " ".join([library, *entries]))


def put_indices(indices: Iterable[int]) -> None:
    """``CUDA_VISIBLE_DEVICES`` for the attached devices, ``-1`` for none."""

    text = ",".join(str(index) for index in indices)
    put(CUDA_VISIBLE_DEVICES, text or "-1")


def visible() -> List[int]:
    """The device indices in ``CUDA_VISIBLE_DEVICES`` (none for ``-1``)."""

    text = os.environ.get(CUDA_VISIBLE_DEVICES, "").strip()
    if not text or text == "-1":
        return []
    return [int(index) for index in text.split(",") if index.strip()]


def save() -> Dict[str, Optional[str]]:
    return {name: os.environ.get(name) for name in ALL}


def restore(saved: Dict[str, Optional[str]]) -> None:
    for name, value in saved.items():
        put(name, value)
