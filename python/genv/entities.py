"""The records genv keeps, as Python sees them."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar, Union

_T = TypeVar("_T")


@dataclass
class Env:
    """An environment: a record of ``envs.json`` (genv 1.4.3's keys)."""

    @dataclass
    class Config:
        """What an environment asks for. ``None`` leaves a field unset.

        :param name: a name for people to recognise it by
        :param gpu_memory: the memory capacity on each device, a genv memory
            string such as ``"4g"`` or ``"512mi"``
        :param gpus: how many devices to attach
        """

        name: Optional[str] = None
        gpu_memory: Optional[str] = None
        gpus: Optional[int] = None

        def load(self, path: Union[str, Path]) -> None:
            """Loads the fields saved in a configuration folder (``.genv``):
            the files ``name``, ``gpu-memory`` and ``gpus``; a missing file
            leaves its field unset."""

            def read(basename: str, convert: Callable[[str], _T]) -> Optional[_T]:
                file = Path(path) / basename
                return convert(file.read_text().strip()) if file.is_file() else None

            self.name = read("name", str)
            self.gpu_memory = read("gpu-memory", str)
            self.gpus = read("gpus", int)

        def save(self, path: Union[str, Path]) -> None:
            """Saves the fields into a configuration folder, one file each;
            an unset field's file is removed."""

            def write(basename: str, value: Optional[Any]) -> None:
                file = Path(path) / basename
                if value is None:
                    file.unlink(missing_ok=True)
                else:
                    file.write_text(str(value))

            write("name", self.name)
            write("gpu-memory", self.gpu_memory)
            write("gpus", self.gpus)

    eid: str
    uid: int
    creation: str
    username: Optional[str]
    config: Config
    pids: List[int] = field(default_factory=list)
    kernel_ids: List[str] = field(default_factory=list)
