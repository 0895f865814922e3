"""genv 1.4.3's entity classes and JSON decoding (`genv.Env`, `Envs`,
`Devices`, `Snapshot`, `JSONDecoder`, …): the same answers as genv 1.4.3's
package (target/genv-ref, installed by scripts/test) for the same calls,
and our `genv usage snapshot` read with them."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

import genv
from conftest import genv_cmd

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "target" / "genv-ref" / "bin" / "python"
LONG_AGO = "01/02/2020 10:20:30"

SNAPSHOT: Dict[str, Any] = {
    "processes": {
        "processes": [
            {
                "pid": 201,
                "used_gpu_memory": [
                    {"index": 0, "gpu_memory": "1000mi"},
                    {"index": 1, "gpu_memory": "512mi"},
                ],
                "eid": "b",
            },
            {"pid": 202, "used_gpu_memory": [{"index": 1, "gpu_memory": "3gi"}], "eid": None},
        ]
    },
    "envs": {
        "envs": [
            {
                "eid": "a",
                "uid": 1000,
                "creation": LONG_AGO,
                "username": "alice",
                "config": {"name": "train", "gpu_memory": "2g", "gpus": 2},
                "pids": [101, 102],
                "kernel_ids": [],
            },
            {
                "eid": "b",
                "uid": 1001,
                "creation": LONG_AGO,
                "username": "bob",
                "config": {"name": None, "gpu_memory": None, "gpus": None},
                "pids": [],
                "kernel_ids": ["k1"],
            },
            {
                "eid": "c",
                "uid": 1000,
                "creation": LONG_AGO,
                "username": None,
                "config": {"name": "train", "gpu_memory": None, "gpus": 1},
                "pids": [103],
                "kernel_ids": [],
            },
        ]
    },
    "devices": {
        "devices": [
            {
                "index": 0,
                "total_memory": "16g",
                "attachments": [{"eid": "a", "gpu_memory": "2g", "time": LONG_AGO}],
            },
            {
                "index": 1,
                "total_memory": "16g",
                "attachments": [
                    {"eid": "a", "gpu_memory": "2g", "time": LONG_AGO},
                    {"eid": "b", "gpu_memory": None, "time": LONG_AGO},
                ],
            },
            {"index": 2, "total_memory": "4gi", "attachments": []},
        ]
    },
}


def probe(python: str, snapshot: Path, work: Path) -> List[str]:
    work.mkdir()
    result = subprocess.run(
        [python, str(HERE / "entities_probe.py"), str(snapshot), str(work)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_same_answers_as_genv_1_4_3(tmp_path):
    if not REFERENCE.is_file():
        pytest.skip("genv 1.4.3 is not in target/genv-ref (scripts/test installs it)")
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(SNAPSHOT))
    ours = probe(sys.executable, snapshot, tmp_path / "ours")
    theirs = probe(str(REFERENCE), snapshot, tmp_path / "theirs")
    assert len(ours) > 100
    for mine, reference in zip(ours, theirs):
        assert mine == reference
    assert len(ours) == len(theirs)
    # The probe checks itself: what it saw is what the snapshot holds.
    assert 'types ["Snapshot", "Envs", "Devices", "Processes"]' in ours
    assert 'find_available 4 None False {"message": "No available devices", "raised": "RuntimeError"}' in ours


def test_usage_snapshot_reads_as_entities(other):
    other.attach("--count", "1")
    text = genv_cmd("usage", "snapshot").stdout
    snapshot = json.loads(text, cls=genv.JSONDecoder)
    assert isinstance(snapshot, genv.Snapshot)
    assert isinstance(snapshot.envs, genv.Envs) and isinstance(snapshot.devices, genv.Devices)
    assert isinstance(snapshot.processes, genv.Processes)
    assert snapshot.envs.eids == ["other"]
    assert isinstance(snapshot.envs["other"], genv.Env)
    assert isinstance(snapshot.envs["other"].config, genv.Env.Config)
    assert snapshot.devices.indices == [0, 1]
    assert snapshot.devices.filter(eid="other").indices == [0]
    (attachment,) = snapshot.devices[0].attachments
    assert isinstance(attachment, genv.Device.Attachement) and attachment.eid == "other"
    assert json.loads(json.dumps(snapshot, cls=genv.JSONEncoder)) == json.loads(text)


def test_a_report_reads_back_with_int_indices():
    snapshot = json.loads(json.dumps(SNAPSHOT), cls=genv.JSONDecoder)
    survey = genv.Survey(snapshot)
    survey.detach(1, "b")
    report = survey.report
    assert report.terminate.pids == [201]
    assert list(report.detach) == [1] and report.detach[1].eids == ["b"]
    text = json.dumps(report, cls=genv.JSONEncoder)
    assert json.loads(text, cls=genv.JSONDecoder) == report


def test_the_public_names():
    for name in ["Device", "Devices", "Env", "Envs", "Process", "Processes", "Report",
                 "Snapshot", "Survey", "System", "JSONDecoder", "JSONEncoder", "sdk"]:
        assert name in genv.__all__ and hasattr(genv, name)
    assert genv.sdk.Env is genv.Env
