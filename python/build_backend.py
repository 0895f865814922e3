"""The build backend of ``pip install .``: maturin, after building the
memory cap library.

maturin builds the ``genv`` binary into the wheel's scripts; the memory cap
library (``libgenv_memcap.so``, the ``genv-memcap`` crate of this workspace)
is a crate of its own, which maturin does not build. This builds it with
the same cargo profile and puts it in the wheel's data
(``python/genv.data/data/lib/genv/``), which pip installs as
``<prefix>/lib/genv/libgenv_memcap.so``, where genv looks for it beside
``<prefix>/bin/genv``. Everything else is maturin's.
"""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, List, Mapping, Optional

import maturin
from maturin import (  # noqa: F401 (the hooks pip calls, as maturin has them)
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
)

_ROOT = Path(__file__).resolve().parent.parent
_LIBRARY = "libgenv_memcap.so"
_DESTINATION = _ROOT / "python" / "genv.data" / "data" / "lib" / "genv"


def _profile_args(config_settings: Optional[Mapping[str, Any]]) -> List[str]:
    """The cargo profile maturin will build with (``--profile dev`` in
    ``MATURIN_PEP517_ARGS`` or the config settings; release otherwise)."""

    args = maturin.get_maturin_pep517_args(config_settings)
    for i, arg in enumerate(args):
        if arg == "--profile" and i + 1 < len(args):
            return ["--profile", args[i + 1]]
        if arg.startswith("--profile="):
            return [arg]
    return ["--release"]


def build_memcap(config_settings: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
    """Builds ``libgenv_memcap.so`` and copies it where the wheel takes it.

    Not from a source distribution: maturin's sdist holds the ``genv``
    crate alone, so that wheel has no library (genv says so when an
    environment with a capacity is activated)."""

    _data_folder()
    if not (_ROOT / "crates" / "genv-memcap" / "Cargo.toml").is_file():
        print(f"No crates/genv-memcap here (a source distribution?): the wheel carries no {_LIBRARY}")
        (_DESTINATION / _LIBRARY).unlink(missing_ok=True)
        return None
    cargo = os.environ.get("CARGO", "cargo")
    command = [
        cargo,
        "build",
        "--package",
        "genv-memcap",
        "--lib",
        "--message-format=json-render-diagnostics",
        *_profile_args(config_settings),
    ]
    print("Building the memory cap library:", shlex.join(command), flush=True)
    result = subprocess.run(command, cwd=_ROOT, stdout=subprocess.PIPE, text=True, check=True)
    built: Optional[str] = None
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact":
            for filename in message.get("filenames", []):
                if Path(filename).name == _LIBRARY:
                    built = filename
    if built is None:
        raise RuntimeError(f"cargo built no {_LIBRARY}")
    target = _DESTINATION / _LIBRARY
    shutil.copyfile(built, target)
    target.chmod(0o644)
    return target


def _data_folder() -> None:
    """maturin wants the wheel's data folder (pyproject.toml's `data`) to
    exist for every hook; it holds the library once `build_memcap` ran."""

    _DESTINATION.mkdir(parents=True, exist_ok=True)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: Optional[Mapping[str, Any]] = None
) -> str:
    _data_folder()
    name: str = maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
    return name


def build_sdist(sdist_directory: str, config_settings: Optional[Mapping[str, Any]] = None) -> str:
    _data_folder()
    name: str = maturin.build_sdist(sdist_directory, config_settings)
    return name


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    build_memcap(config_settings)
    name: str = maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
    return name


def build_editable(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    build_memcap(config_settings)
    name: str = maturin.build_editable(wheel_directory, config_settings, metadata_directory)
    return name


if __name__ == "__main__":
    # For `maturin build` or `maturin develop` run by hand: put the library
    # where the wheel takes it first (`python python/build_backend.py`).
    build_memcap()
