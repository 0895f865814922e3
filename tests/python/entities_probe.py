"""Runs genv's entity classes through their paces and prints every answer,
one JSON line each, so that the same run under genv 1.4.3's package and
under ours can be compared line by line (test_entities.py).

    python entities_probe.py SNAPSHOT.json WORK_FOLDER
"""

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import genv


def show(label: str, compute: Callable[[], Any]) -> None:
    try:
        value = compute()
    except Exception as e:  # noqa: BLE001 (the kind of failure is the answer)
        value = {"raised": type(e).__name__, "message": str(e)}
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    try:
        text = json.dumps(value, cls=genv.JSONEncoder, sort_keys=True)
    except TypeError:
        text = json.dumps({"unencodable": type(value).__name__})
    print(label, text)


def main() -> None:
    text = Path(sys.argv[1]).read_text()
    work = Path(sys.argv[2])
    snapshot = json.loads(text, cls=genv.JSONDecoder)
    s = snapshot
    envs, devices, processes = s.envs, s.devices, s.processes

    show("types", lambda: [type(x).__name__ for x in (s, envs, devices, processes)])
    show("inner types", lambda: [type(x).__name__ for x in (*envs, *devices, *processes)])
    show("attachment types", lambda: [type(a).__name__ for d in devices for a in d.attachments])
    show("config types", lambda: [type(e.config).__name__ for e in envs])
    show("usage types", lambda: [type(u).__name__ for p in processes for u in p.used_gpu_memory])
    show("round trip", lambda: json.loads(json.dumps(s, cls=genv.JSONEncoder)) == json.loads(text))
    show("equal after round trip", lambda: json.loads(json.dumps(s, cls=genv.JSONEncoder), cls=genv.JSONDecoder) == s)

    # Environments
    show("eids", lambda: envs.eids)
    show("usernames", lambda: envs.usernames)
    show("len envs", lambda: len(envs))
    show("contains a", lambda: "a" in envs)
    show("contains zz", lambda: "zz" in envs)
    show("envs[b]", lambda: envs["b"])
    show("envs[zz]", lambda: envs["zz"])
    show("active", lambda: [e.active for e in envs])
    show("time_since", lambda: [e.time_since for e in envs])
    show("hash", lambda: hash(envs["a"]) == hash("a"))
    show("filter eid", lambda: envs.filter(eid="a"))
    show("filter eids", lambda: envs.filter(eids=["a", "c"]))
    show("filter eids empty", lambda: envs.filter(eids=[]))
    show("filter eid and eids", lambda: envs.filter(eid="b", eids=["a"]))
    show("filter username", lambda: envs.filter(username="alice"))
    show("filter name", lambda: envs.filter(name="train"))
    show("find pid", lambda: envs.find(pid=101))
    show("find kernel", lambda: envs.find(kernel_id="k1"))
    show("find nothing", lambda: envs.find())

    # Devices
    show("indices", lambda: devices.indices)
    show("len devices", lambda: len(devices))
    show("contains 1", lambda: 1 in devices)
    show("contains 9", lambda: 9 in devices)
    show("devices[9]", lambda: devices[9])
    for d in devices:
        show(f"device {d.index} eids", lambda: d.eids)
        show(f"device {d.index} attached", lambda: (d.attached, d.detached))
        show(f"device {d.index} bytes", lambda: (d.total_memory_bytes, d.available_memory_bytes))
        for memory in (None, "1g", "3gi", "100mi", "8000000000"):
            show(f"device {d.index} available {memory}", lambda: d.available(memory))
    show("filter attached", lambda: devices.filter(attached=True))
    show("filter detached", lambda: devices.filter(attached=False))
    show("filter indices", lambda: devices.filter(indices=[0, 2]))
    show("filter not_indices", lambda: devices.filter(not_indices=[0]))
    show("filter eid deep", lambda: devices.filter(eid="a"))
    show("filter eid shallow", lambda: devices.filter(deep=False, eid="a"))
    show("filter function", lambda: devices.filter(function=lambda d: d.index > 0))
    for count in (1, 2, 3, 4):
        for memory in (None, "2g"):
            for over in (False, True):
                show(
                    f"find_available {count} {memory} {over}",
                    lambda: devices.find_available_devices(count, memory, over),
                )

    # Processes
    show("pids", lambda: processes.pids)
    show("processes[201]", lambda: processes[201])
    show("indices of processes", lambda: [p.indices for p in processes])
    show("total_bytes", lambda: [p.total_bytes for p in processes])
    show("usage bytes", lambda: [u.bytes for p in processes for u in p.used_gpu_memory])
    show("process filter", lambda: [p.filter(index=1) for p in processes])
    show("processes filter index", lambda: processes.filter(index=1))
    show("processes filter index shallow", lambda: processes.filter(deep=False, index=1))
    show("processes filter pids", lambda: processes.filter(pids=[202]))
    show("processes filter eid", lambda: processes.filter(eid="b"))

    # Snapshot, survey, report
    show("snapshot filter eid", lambda: s.filter(eid="a"))
    show("snapshot filter username", lambda: s.filter(username="bob"))
    show("snapshot filter shallow", lambda: s.filter(deep=False, eids=["b"]))
    survey = genv.Survey(s)
    show("empty report", lambda: bool(survey.report))
    survey.detach(1, "b")
    survey.terminate(999)
    report = survey.report
    show("report", lambda: report)
    show("report bool", lambda: bool(report))
    show("report detach keys", lambda: [type(k).__name__ for k in report.detach])
    decoded = json.loads(json.dumps(report, cls=genv.JSONEncoder), cls=genv.JSONDecoder)
    show("report decoded", lambda: (type(decoded).__name__, sorted(decoded.detach), decoded == report))

    # Changes in place
    changed = json.loads(text, cls=genv.JSONDecoder)
    changed.devices.detach("a")
    show("detach a everywhere", lambda: changed.devices)
    changed.devices.detach("b", 1)
    show("detach b from 1", lambda: changed.devices)
    changed.devices.attach("c", [0, 2], "1g")
    show("attach c", lambda: [[(a.eid, a.gpu_memory) for a in d.attachments] for d in changed.devices])
    changed.devices.attach("d", 1, None)
    show("attach d", lambda: changed.devices[1].eids)
    changed.devices.cleanup(poll_eid=lambda eid: eid != "c")
    show("cleanup devices", lambda: [d.eids for d in changed.devices])
    changed.envs.activate("new", 1234, "carol")
    new = changed.envs["new"]
    show("activated", lambda: (new.eid, new.uid, new.username, new.config, new.pids, new.kernel_ids, new.active))
    show("activated time_since", lambda: new.time_since)
    new.attach(pid=5)
    new.attach(kernel_id="k9")
    show("attached", lambda: (new.pids, new.kernel_ids))
    changed.envs.cleanup(eid="new", poll_pid=lambda pid: False)
    show("cleanup one", lambda: changed.envs.eids)
    changed.envs.cleanup(poll_pid=lambda pid: pid != 101, poll_kernel=lambda k: False)
    show("cleanup all", lambda: changed.envs)

    # Configuration folders
    folder = work / "config"
    folder.mkdir()
    genv.Env.Config(name="x y", gpu_memory="2g", gpus=3).save(folder)
    show("saved", lambda: sorted((p.name, p.read_text()) for p in folder.iterdir()))
    genv.Env.Config(name="only").save(folder)
    show("saved again", lambda: sorted((p.name, p.read_text()) for p in folder.iterdir()))
    (folder / "gpus").write_text(" 2\n")
    loaded = genv.Env.Config(name="stale", gpu_memory="9g")
    loaded.load(folder)
    show("loaded", lambda: loaded)
    (folder / "gpus").write_text("two")
    show("load bad gpus", lambda: genv.Env.Config().load(folder))

    # Objects that are no entity stay dicts.
    show("plain", lambda: json.loads('{"a": {"eid": 1}, "b": [1]}', cls=genv.JSONDecoder))


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
