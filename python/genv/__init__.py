"""genv: GPU environments for people who share GPU machines.

The Python side of genv: :mod:`genv.sdk` puts the running process in an
environment (devices, memory capacity, access locks) and :mod:`genv.ray`
does it for Ray tasks. Every call goes through the ``genv`` command that
this package installs, which owns the state shared with every other genv
process on the machine (and with genv 1.4.3); where root's ``genv daemon``
serves that state, the calls it runs go straight to its socket::

    import genv

    with genv.sdk.lock():
        main()

genv 1.4.3's entity classes (:class:`Env`, :class:`Envs`,
:class:`Devices`, :class:`Snapshot`, …) and its :class:`JSONDecoder` read
what genv prints as JSON, such as ``genv usage snapshot``.
"""

from . import sdk
from .entities import (
    Device,
    Devices,
    Env,
    Envs,
    Process,
    Processes,
    Report,
    Snapshot,
    Survey,
    System,
)
from .serialization import JSONDecoder, JSONEncoder

__all__ = [
    "Device",
    "Devices",
    "Env",
    "Envs",
    "JSONDecoder",
    "JSONEncoder",
    "Process",
    "Processes",
    "Report",
    "Snapshot",
    "Survey",
    "System",
    "sdk",
]
