"""The records genv keeps, as Python sees them: genv 1.4.3's entity classes
(``genv.Env``, ``Envs``, ``Device``, ``Devices``, ``Process``,
``Processes``, ``Snapshot``, ``Report``, ``Survey``, ``System``) with its
behaviour, typed.

They are plain data: nothing here reads or writes genv's state. A script
gets them from genv's JSON through :class:`genv.JSONDecoder`, for example
from ``genv usage snapshot``::

    import json, subprocess
    import genv

    text = subprocess.run(["genv", "usage", "snapshot"], capture_output=True,
                          text=True, check=True).stdout
    snapshot: genv.Snapshot = json.loads(text, cls=genv.JSONDecoder)
    for env in snapshot.envs:
        print(env.eid, env.config.name, env.time_since)
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import (
    Any,
    Callable,
    DefaultDict,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Set,
    TypeVar,
    Union,
)

_T = TypeVar("_T")

#: How genv writes times (``creation``, an attachment's ``time``).
DATETIME_FMT = "%d/%m/%Y %H:%M:%S"

_MULTIPLIERS = {
    "b": 1,
    "k": 1000,
    "m": 1000 * 1000,
    "g": 1000 * 1000 * 1000,
    "ki": 1024,
    "mi": 1024 * 1024,
    "gi": 1024 * 1024 * 1024,
}


def memory_to_bytes(memory: str) -> int:
    """A genv memory string (``"4g"``, ``"512mi"``, ``"1000"``) in bytes, as
    genv 1.4.3 reads it (the first unit it finds at the end, in the order
    b, k, m, g, ki, mi, gi)."""

    for unit, multiplier in _MULTIPLIERS.items():
        if memory.endswith(unit):
            return int(memory.replace(unit, "")) * multiplier
    return int(memory)


def time_since(time: Union[str, datetime]) -> str:
    """``"5 minutes ago"``: how long ago a time was (a string in
    :data:`DATETIME_FMT`, or a datetime), in the largest whole unit up to
    weeks."""

    if isinstance(time, str):
        time = datetime.strptime(time, DATETIME_FMT)
    value = int((datetime.now() - time).total_seconds())
    unit = "second"
    for amount, next_unit in [(60, "minute"), (60, "hour"), (24, "day"), (7, "week")]:
        if value < amount:
            break
        value, _ = divmod(value, amount)
        unit = next_unit
    if value > 1:
        unit = f"{unit}s"
    return f"{value} {unit} ago"


def _eid_set(eid: Optional[str], eids: Optional[Iterable[str]]) -> Optional[Set[str]]:
    """The identifiers a ``filter(eid=…, eids=…)`` keeps; ``None`` for no
    filtering (genv 1.4.3: an empty ``eids`` without ``eid`` keeps none)."""

    if eids is None and not eid:
        return None
    kept = set(eids) if eids is not None else set()
    if eid:
        kept.add(eid)
    return kept


# --- devices --------------------------------------------------------------------


@dataclass
class Device:
    """A device and the environments attached to it (a record of
    ``devices.json``)."""

    @dataclass
    class Attachement:
        """An environment on a device (genv 1.4.3's spelling), with the
        memory it may use there (``None``: the whole device)."""

        eid: str
        gpu_memory: Optional[str]
        time: str

    index: int
    total_memory: str
    attachments: List[Attachement]

    @property
    def eids(self) -> List[str]:
        return [attachment.eid for attachment in self.attachments]

    @property
    def attached(self) -> bool:
        return len(self.eids) > 0

    @property
    def detached(self) -> bool:
        return len(self.eids) == 0

    @property
    def total_memory_bytes(self) -> int:
        return memory_to_bytes(self.total_memory)

    @property
    def available_memory_bytes(self) -> int:
        """The memory not given to an attachment (an attachment without a
        capacity takes the whole device), never below 0."""

        available = memory_to_bytes(self.total_memory)
        for attachment in self.attachments:
            available -= memory_to_bytes(attachment.gpu_memory or self.total_memory)
        return max(available, 0)

    def available(self, gpu_memory: Optional[str]) -> bool:
        """Whether an environment with this capacity fits (without one: the
        device is free)."""

        if gpu_memory is None:
            return self.detached
        return self.available_memory_bytes >= memory_to_bytes(gpu_memory)

    def filter(self, *, eids: Iterable[str]) -> "Device":
        """The device with only these environments' attachments."""

        kept = set(eids)
        return Device(
            self.index,
            self.total_memory,
            [attachment for attachment in self.attachments if attachment.eid in kept],
        )

    def attach(self, eid: str, gpu_memory: Optional[str], time: str) -> None:
        self.attachments.append(Device.Attachement(eid, gpu_memory, time))

    def detach(self, eid: str) -> None:
        # In place: a collection filtered without `deep` holds this device.
        self.attachments[:] = [a for a in self.attachments if a.eid != eid]


@dataclass
class Devices:
    """A collection of devices. ``devices[i]`` is the device whose index is
    ``i``; ``i in devices`` asks whether there is one."""

    devices: List[Device]

    @property
    def indices(self) -> List[int]:
        return [device.index for device in self.devices]

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, index: int) -> Device:
        """The device with this index; StopIteration when there is none (as
        in genv 1.4.3)."""

        return next(device for device in self.devices if device.index == index)

    def __contains__(self, index: object) -> bool:
        return index in self.indices

    def filter(
        self,
        deep: bool = True,
        *,
        indices: Optional[Iterable[int]] = None,
        not_indices: Optional[Iterable[int]] = None,
        eid: Optional[str] = None,
        eids: Optional[Iterable[str]] = None,
        attached: Optional[bool] = None,
        function: Optional[Callable[[Device], bool]] = None,
    ) -> "Devices":
        """A new collection of the devices that pass every filter given.

        :param deep: with ``eid``/``eids``, also drop the other
            environments' attachments from the devices kept
        :param indices: keep these indices
        :param not_indices: drop these indices
        :param eid: keep devices this environment is attached to
        :param eids: keep devices any of these environments is attached to
        :param attached: keep devices with (``True``) or without attachments
        :param function: keep devices for which it returns ``True``
        """

        kept_eids = _eid_set(eid, eids)
        devices = self.devices
        if indices is not None:
            wanted = list(indices)
            devices = [device for device in devices if device.index in wanted]
        if not_indices is not None:
            unwanted = list(not_indices)
            devices = [device for device in devices if device.index not in unwanted]
        if kept_eids is not None:
            if deep:
                devices = [device.filter(eids=kept_eids) for device in devices]
            devices = [d for d in devices if any(e in kept_eids for e in d.eids)]
        if attached is not None:
            devices = [d for d in devices if (d.attached if attached else d.detached)]
        if function is not None:
            devices = [device for device in devices if function(device)]
        return Devices(devices)

    def attach(self, eid: str, indices: Union[Iterable[int], int], gpu_memory: Optional[str]) -> None:
        """Attaches an environment to devices, now. ``indices`` are
        positions in the collection (genv 1.4.3's behaviour; the same as the
        devices' indices in a machine's full collection)."""

        if isinstance(indices, int):
            indices = [indices]
        time = datetime.now().strftime(DATETIME_FMT)
        for index in indices:
            self.devices[index].attach(eid, gpu_memory, time)

    def detach(self, eid: str, index: Optional[int] = None) -> None:
        """Detaches an environment from the device at this position, or from
        every device."""

        if index is not None:
            self.devices[index].detach(eid)
        else:
            for device in self.devices:
                device.detach(eid)

    def cleanup(self, *, poll_eid: Optional[Callable[[str], bool]] = None) -> None:
        """Detaches, in place, the environments for which ``poll_eid`` is
        false."""

        for device in self.devices:
            for eid in device.eids:
                if poll_eid is not None and not poll_eid(eid):
                    device.detach(eid)

    def find_available_devices(
        self, count: int, gpu_memory: Optional[str], allow_over_subscription: bool
    ) -> List[int]:
        """The indices of ``count`` devices for an environment with this
        capacity: available ones first; then, with over-subscription, the
        least populated of the others.

        :raises RuntimeError: ``No available devices`` when there are not
            enough
        """

        available = self.filter(function=lambda device: device.available(gpu_memory))
        indices = available.indices
        if allow_over_subscription and len(indices) < count:
            others = self.filter(not_indices=available.indices)
            indices += sorted(others.indices, key=lambda index: len(self[index].eids))
        if len(indices) < count:
            raise RuntimeError("No available devices")
        return indices[:count]


# --- environments -------------------------------------------------------------


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
            """Loads the fields saved in a folder (genv 1.4.3's
            ``Env.Config.load``): the files ``name``, ``gpu-memory`` and
            ``gpus``; a missing file leaves its field unset. The SDK's
            :func:`genv.sdk.load_configuration` has genv read the ``.genv``
            folder instead."""

            def read(basename: str, convert: Callable[[str], _T]) -> Optional[_T]:
                file = Path(path) / basename
                return convert(file.read_text().strip()) if file.is_file() else None

            self.name = read("name", str)
            self.gpu_memory = read("gpu-memory", str)
            self.gpus = read("gpus", int)

        def save(self, path: Union[str, Path]) -> None:
            """Saves the fields into a folder, one file each; an unset
            field's file is removed (genv 1.4.3's ``Env.Config.save``)."""

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

    @property
    def time_since(self) -> str:
        """``"5 minutes ago"``: how long ago the environment was created."""

        return time_since(self.creation)

    @property
    def active(self) -> bool:
        """Whether a process or a kernel is still in the environment."""

        return len(self.pids) > 0 or len(self.kernel_ids) > 0

    def __hash__(self) -> int:
        return hash(self.eid)

    def cleanup(
        self,
        *,
        poll_pid: Optional[Callable[[int], bool]] = None,
        poll_kernel: Optional[Callable[[str], bool]] = None,
    ) -> None:
        """Drops, in place, the pids and kernels the polls say are gone."""

        if poll_pid is not None:
            self.pids = [pid for pid in self.pids if poll_pid(pid)]
        if poll_kernel is not None:
            self.kernel_ids = [k for k in self.kernel_ids if poll_kernel(k)]

    def attach(self, *, pid: Optional[int] = None, kernel_id: Optional[str] = None) -> None:
        """Adds a process or a Jupyter kernel."""

        if pid is not None:
            self.pids.append(pid)
        if kernel_id is not None:
            self.kernel_ids.append(kernel_id)


@dataclass
class Envs:
    """A collection of environments. ``envs[eid]`` is the environment with
    that identifier; ``eid in envs`` asks whether there is one."""

    envs: List[Env]

    @property
    def eids(self) -> List[str]:
        return [env.eid for env in self.envs]

    @property
    def usernames(self) -> Set[str]:
        return set(env.username for env in self.envs if env.username)

    def __iter__(self) -> Iterator[Env]:
        return iter(self.envs)

    def __len__(self) -> int:
        return len(self.envs)

    def __getitem__(self, eid: str) -> Env:
        """The environment with this identifier; StopIteration when there is
        none (as in genv 1.4.3)."""

        return next(env for env in self.envs if env.eid == eid)

    def __contains__(self, eid: object) -> bool:
        return any(env.eid == eid for env in self.envs)

    def activate(self, eid: str, uid: int, username: Optional[str] = None) -> None:
        """Adds a new environment, created now, with no configuration."""

        self.envs.append(
            Env(
                eid=eid,
                uid=uid,
                creation=datetime.now().strftime(DATETIME_FMT),
                username=username,
                config=Env.Config(name=None, gpu_memory=None, gpus=None),
                pids=[],
                kernel_ids=[],
            )
        )

    def filter(
        self,
        deep: bool = True,
        *,
        eid: Optional[str] = None,
        eids: Optional[Iterable[str]] = None,
        username: Optional[str] = None,
        name: Optional[str] = None,
    ) -> "Envs":
        """A new collection of the environments that pass every filter given
        (``deep`` is there for the other collections' sake)."""

        kept_eids = _eid_set(eid, eids)
        envs = self.envs
        if kept_eids is not None:
            envs = [env for env in envs if env.eid in kept_eids]
        if username is not None:
            envs = [env for env in envs if env.username == username]
        if name is not None:
            envs = [env for env in envs if env.config.name == name]
        return Envs(envs)

    def cleanup(
        self,
        *,
        eid: Optional[str] = None,
        eids: Optional[Iterable[str]] = None,
        poll_pid: Optional[Callable[[int], bool]] = None,
        poll_kernel: Optional[Callable[[str], bool]] = None,
    ) -> None:
        """Cleans up the environments given (all by default) in place, then
        drops every environment left without a process or a kernel."""

        kept_eids = _eid_set(eid, eids)
        for env in self.envs:
            if kept_eids is None or env.eid in kept_eids:
                env.cleanup(poll_pid=poll_pid, poll_kernel=poll_kernel)
        self.envs = [env for env in self.envs if env.active]

    def find(self, *, pid: Optional[int] = None, kernel_id: Optional[str] = None) -> List[Env]:
        """The environments this process or kernel is in."""

        return [
            env
            for env in self.envs
            if (pid is not None and pid in env.pids)
            or (kernel_id is not None and kernel_id in env.kernel_ids)
        ]


# --- processes ----------------------------------------------------------------


@dataclass
class Process:
    """A process running on GPUs, and the environment it is in."""

    @dataclass
    class Usage:
        """The memory a process uses on one device."""

        index: int
        gpu_memory: str

        @property
        def bytes(self) -> int:
            return memory_to_bytes(self.gpu_memory)

    pid: int
    used_gpu_memory: List[Usage]
    eid: Optional[str]

    @property
    def indices(self) -> List[int]:
        return [usage.index for usage in self.used_gpu_memory]

    @property
    def total_bytes(self) -> int:
        return sum(usage.bytes for usage in self.used_gpu_memory)

    def __hash__(self) -> int:
        return hash(self.pid)

    def filter(self, *, index: int) -> "Process":
        """The process with its use of this device only."""

        return Process(
            self.pid,
            [usage for usage in self.used_gpu_memory if usage.index == index],
            self.eid,
        )


@dataclass
class Processes:
    """A collection of processes. ``processes[pid]`` is the process with
    that pid."""

    processes: List[Process]

    @property
    def pids(self) -> List[int]:
        return [process.pid for process in self.processes]

    def __iter__(self) -> Iterator[Process]:
        return iter(self.processes)

    def __len__(self) -> int:
        return len(self.processes)

    def __getitem__(self, pid: int) -> Process:
        """The process with this pid; StopIteration when there is none (as
        in genv 1.4.3)."""

        return next(process for process in self.processes if process.pid == pid)

    def filter(
        self,
        deep: bool = True,
        *,
        pids: Optional[Iterable[int]] = None,
        eid: Optional[str] = None,
        eids: Optional[Iterable[str]] = None,
        index: Optional[int] = None,
    ) -> "Processes":
        """A new collection of the processes that pass every filter given.

        :param deep: with ``index``, also drop the processes' use of the
            other devices
        """

        kept_eids = _eid_set(eid, eids)
        processes = self.processes
        if pids is not None:
            wanted = list(pids)
            processes = [process for process in processes if process.pid in wanted]
        if kept_eids is not None:
            processes = [process for process in processes if process.eid in kept_eids]
        if index is not None:
            if deep:
                processes = [process.filter(index=index) for process in processes]
            processes = [process for process in processes if index in process.indices]
        return Processes(processes)


# --- snapshot, system, enforcement --------------------------------------------------


@dataclass
class Snapshot:
    """One look at a machine: its GPU processes, environments and devices
    (what ``genv usage snapshot`` prints)."""

    processes: Processes
    envs: Envs
    devices: Devices

    def filter(
        self,
        deep: bool = True,
        *,
        eid: Optional[str] = None,
        eids: Optional[Iterable[str]] = None,
        username: Optional[str] = None,
    ) -> "Snapshot":
        """The environments that pass the filters, with their processes and
        devices."""

        envs = self.envs.filter(deep=deep, eid=eid, eids=eids, username=username)
        return Snapshot(
            processes=self.processes.filter(deep=deep, eids=envs.eids),
            envs=envs,
            devices=self.devices.filter(deep=deep, eids=envs.eids),
        )


@dataclass
class System:
    """A machine's status."""

    @dataclass
    class Genv:
        installed: bool

    @dataclass
    class Device:
        index: int
        utilization: int
        temperature: int
        used_memory: str
        total_memory: str

    genv: Genv
    devices: List[Device]


@dataclass
class Report:
    """What enforcement decided (what ``genv usage execute`` reads):
    processes to terminate, and environments to detach per device index."""

    terminate: Processes
    detach: Dict[int, Envs]

    def __bool__(self) -> bool:
        return len(self.terminate) > 0 or len(self.detach) > 0


@dataclass
class Survey:
    """Enforcement's decisions about a snapshot, made one by one, then read
    as a :class:`Report`. Detaching an environment from a device also
    terminates its processes there."""

    snapshot: Snapshot
    hostname: Optional[str] = None

    _pids: Set[int] = field(default_factory=set, init=False)
    _eids: DefaultDict[int, Set[str]] = field(default_factory=lambda: defaultdict(set), init=False)

    def terminate(self, *pids: int) -> None:
        self._pids.update(pids)

    def detach(self, index: int, *eids: str) -> None:
        self._eids[index].update(eids)
        self.terminate(
            *(
                process.pid
                for eid in eids
                for process in self.snapshot.processes.filter(eid=eid, index=index)
            )
        )

    @property
    def report(self) -> Report:
        return Report(
            terminate=self.snapshot.processes.filter(deep=False, pids=self._pids),
            detach={
                index: self.snapshot.envs.filter(deep=False, eids=eids)
                for index, eids in self._eids.items()
            },
        )
