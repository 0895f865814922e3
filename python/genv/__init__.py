"""genv: GPU environments for people who share GPU machines.

The Python side of genv: :mod:`genv.sdk` puts the running process in an
environment (devices, memory capacity, access locks) and :mod:`genv.ray`
does it for Ray tasks. Every call goes through the ``genv`` command that
this package installs, which owns the state shared with every other genv
process on the machine (and with genv 1.4.3)::

    import genv

    with genv.sdk.lock():
        main()
"""

from . import sdk
from .sdk import Env

__all__ = ["Env", "sdk"]
