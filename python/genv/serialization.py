"""genv's entities to and from JSON, as genv 1.4.3's ``genv.JSONEncoder``
and ``genv.JSONDecoder`` do it::

    snapshot = json.loads(text, cls=genv.JSONDecoder)
    text = json.dumps(snapshot, cls=genv.JSONEncoder)

A JSON object becomes the entity whose fields are exactly its keys
(``{"eid", "uid", …}`` an :class:`~genv.Env`, ``{"processes", "envs",
"devices"}`` a :class:`~genv.Snapshot`); any other object stays a dict.
"""

import dataclasses
import json
from typing import Any, Dict, FrozenSet, List, Tuple, Type

from .entities import Device, Devices, Env, Envs, Process, Processes, Report, Snapshot

#: The entities that JSON objects become, each known by its set of fields.
TYPES: List[Type[Any]] = [
    Device,
    Device.Attachement,
    Devices,
    Env,
    Env.Config,
    Envs,
    Process,
    Process.Usage,
    Processes,
    Report,
    Snapshot,
]


def _fields(cls: Type[Any]) -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


_BY_KEYS: Dict[FrozenSet[str], Tuple[Type[Any], Tuple[str, ...]]] = {
    frozenset(_fields(cls)): (cls, _fields(cls)) for cls in TYPES
}


class JSONEncoder(json.JSONEncoder):
    """Writes an entity as the object of its fields."""

    def default(self, o: Any) -> Any:
        if type(o) in TYPES:
            return o.__dict__
        return super().default(o)


class JSONDecoder(json.JSONDecoder):
    """Reads every object whose keys are an entity's fields as that entity."""

    def __init__(self) -> None:
        super().__init__(object_hook=self.object_hook)

    def object_hook(self, d: Dict[str, Any]) -> Any:
        found = _BY_KEYS.get(frozenset(d))
        if found is None:
            return d
        cls, names = found
        o = cls(*(d[name] for name in names))
        if cls is Report:
            # JSON's keys are strings; a report's device indices are ints.
            o.detach = {int(index): envs for index, envs in o.detach.items()}
        return o
