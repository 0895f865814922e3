"""genv.sdk against the installed package and its genv binary."""

import os
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest

import genv
from genv import _command
from conftest import OtherEnv, attachments, devices, envs, genv_cmd

Config = genv.sdk.Env.Config


# --- outside an environment -------------------------------------------------


def test_outside_an_environment():
    assert genv.sdk.active() is False
    assert genv.sdk.eid() is None
    for call in [
        genv.sdk.configuration,
        genv.sdk.refresh_configuration,
        genv.sdk.load_configuration,
        genv.sdk.save_configuration,
        genv.sdk.attach,
        genv.sdk.attached,
        genv.sdk.detach,
        genv.sdk.refresh_attached,
        lambda: genv.sdk.configure(Config(name="x")),
    ]:
        with pytest.raises(RuntimeError, match="^Not running in an active environment$"):
            call()
    with genv.sdk.lock():
        pass


def test_top_level_names():
    assert genv.Env is genv.sdk.Env
    assert Config() == Config(name=None, gpu_memory=None, gpus=None)
    assert Path(genv.__file__).with_name("py.typed").is_file()


# --- activate ---------------------------------------------------------------


def test_activate_creates_an_environment_for_the_process():
    with genv.sdk.activate():
        pid = os.getpid()
        assert genv.sdk.active()
        assert genv.sdk.eid() == str(pid)
        assert os.environ["GENV_PYTHON"] == "1"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"
        assert genv.sdk.configuration() == Config()
        (env,) = envs()
        assert env["eid"] == str(pid) and env["pids"] == [pid]
        assert env["uid"] == os.getuid()
    assert envs() == []
    assert not genv.sdk.active()
    for name in ["GENV_PYTHON", "GENV_ENVIRONMENT_ID", "CUDA_VISIBLE_DEVICES"]:
        assert name not in os.environ


def test_activate_configures_and_attaches():
    config = Config(name="train", gpu_memory="4g", gpus=1)
    with genv.sdk.activate(eid="mine", config=config):
        assert genv.sdk.eid() == "mine"
        assert genv.sdk.configuration() == config
        assert os.environ["GENV_ENVIRONMENT_NAME"] == "train"
        assert os.environ["GENV_GPU_MEMORY"] == "4g"
        assert os.environ["GENV_GPUS"] == "1"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert genv.sdk.attached() == [0]
        assert [(a["eid"], a["gpu_memory"]) for a in attachments(0)] == [("mine", "4g")]
        (env,) = envs()
        assert env["config"] == {"name": "train", "gpu_memory": "4g", "gpus": 1}
    assert envs() == []
    assert all(d["attachments"] == [] for d in devices())


def test_activate_restores_the_variables_it_replaced(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("GENV_GPU_MEMORY", "1g")
    with genv.sdk.activate(config=Config(gpus=2)):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        assert "GENV_GPU_MEMORY" not in os.environ
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["GENV_GPU_MEMORY"] == "1g"
    assert "GENV_GPUS" not in os.environ


def test_activate_inside_an_environment_raises():
    with genv.sdk.activate():
        with pytest.raises(RuntimeError, match="^Already running in an active environment$"):
            with genv.sdk.activate():
                pass
        assert genv.sdk.active()
    assert envs() == []


def test_activate_cleans_up_when_the_block_raises():
    with pytest.raises(ValueError, match="boom"):
        with genv.sdk.activate(config=Config(gpus=1)):
            assert genv.sdk.attached() == [0]
            raise ValueError("boom")
    assert envs() == []
    assert all(d["attachments"] == [] for d in devices())
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not genv.sdk.active()


def test_activate_that_fails_leaves_nothing_behind():
    with pytest.raises(RuntimeError, match=r"^Requested more devices \(3\) than total available \(2\)$"):
        with genv.sdk.activate(config=Config(gpus=3)):
            pytest.fail("entered the block")
    assert envs() == []
    assert not genv.sdk.active()
    assert "GENV_PYTHON" not in os.environ


def test_activate_with_a_bad_value_raises_genvs_message():
    with pytest.raises(RuntimeError, match="invalid memory value 'lots'"):
        with genv.sdk.activate(config=Config(gpu_memory="lots")):
            pass
    assert envs() == []


def test_activate_joins_an_existing_environment(other: OtherEnv):
    genv_cmd("envs", "config", "--eid", "other", "name", "--name", "shared")
    genv_cmd("envs", "config", "--eid", "other", "gpus", "--count", "1")
    with genv.sdk.activate(eid="other"):
        assert genv.sdk.configuration() == Config(name="shared", gpus=1)
        assert genv.sdk.attached() == [0]
        (env,) = envs()
        assert env["pids"] == [other.process.pid, os.getpid()]
    (env,) = envs()
    assert env["pids"] == [other.process.pid]


# --- configuration ------------------------------------------------------------


def test_configure_and_configuration():
    with genv.sdk.activate() as _:
        eid = genv.sdk.eid()
        genv.sdk.configure(Config(name="n", gpu_memory="2g", gpus=2))
        assert genv.sdk.configuration() == Config(name="n", gpu_memory="2g", gpus=2)
        query = genv_cmd("envs", "query", "--eid", eid, "--query", "config.name", "config.gpu_memory", "config.gpus")
        assert query.stdout == "n,2g,2\n"
        genv.sdk.configure(Config())
        assert genv.sdk.configuration() == Config()
        for name in ["GENV_ENVIRONMENT_NAME", "GENV_GPU_MEMORY", "GENV_GPUS"]:
            assert name not in os.environ


def test_configure_carries_the_capacity_to_the_attachments():
    with genv.sdk.activate(config=Config(gpus=1)):
        genv.sdk.configure(Config(gpus=1, gpu_memory="8g"))
        assert [a["gpu_memory"] for a in attachments(0)] == ["8g"]


def test_configure_refuses_bad_values():
    with genv.sdk.activate(config=Config(name="kept")):
        with pytest.raises(RuntimeError, match="invalid memory value 'zz'"):
            genv.sdk.configure(Config(gpu_memory="zz"))
        assert genv.sdk.refresh_configuration() == Config(name="kept")


def test_refresh_configuration_reads_what_others_changed():
    with genv.sdk.activate(config=Config(name="before")):
        genv_cmd("envs", "config", "--eid", genv.sdk.eid(), "name", "--name", "after")
        assert genv.sdk.configuration().name == "before"
        assert genv.sdk.refresh_configuration() == Config(name="after")
        assert os.environ["GENV_ENVIRONMENT_NAME"] == "after"


def test_home_load_and_save(tmp_path):
    assert genv.sdk.home() is None
    home_genv = Path.home() / ".genv"
    home_genv.mkdir()
    assert genv.sdk.home() == home_genv
    local = Path.cwd() / ".genv"
    local.mkdir()
    assert genv.sdk.home() == local
    with genv.sdk.activate(config=Config(name="saved", gpu_memory="3g")):
        genv.sdk.save_configuration()
        assert (local / "name").read_text() == "saved"
        assert (local / "gpu-memory").read_text() == "3g"
        assert not (local / "gpus").exists()
        (local / "gpus").write_text("1\n")
        (local / "name").unlink()
        assert genv.sdk.load_configuration() == Config(gpu_memory="3g", gpus=1)
        assert genv.sdk.configuration() == Config(gpu_memory="3g", gpus=1)
        assert genv.sdk.refresh_configuration() == Config(gpu_memory="3g", gpus=1)


def test_the_genv_folder_is_read_and_written_by_genv(tmp_path):
    # `genv config --load/--save`, as a genv shell does it: no link followed,
    # values checked, an entry replaced rather than written through.
    with genv.sdk.activate(config=Config(name="n")):
        genv.sdk.save_configuration()  # no .genv folder: nothing to do
        local = Path.cwd() / ".genv"
        local.mkdir()
        outside = tmp_path / "outside"
        outside.write_text("4g")
        (local / "gpu-memory").symlink_to(outside)
        with pytest.raises(RuntimeError, match="gpu-memory"):
            genv.sdk.load_configuration()
        assert genv.sdk.refresh_configuration() == Config(name="n")
        (local / "gpu-memory").unlink()
        (local / "gpu-memory").write_text("lots")
        with pytest.raises(RuntimeError, match="lots"):
            genv.sdk.load_configuration()
        (local / "gpu-memory").unlink()
        (local / "name").symlink_to(outside)
        genv.sdk.save_configuration()
        assert outside.read_text() == "4g"
        assert not (local / "name").is_symlink()
        assert (local / "name").read_text() == "n"
        assert sorted(p.name for p in local.iterdir()) == ["name"]


def test_load_configuration_without_a_folder_clears():
    with genv.sdk.activate(config=Config(name="x")):
        assert genv.sdk.load_configuration() == Config()
        assert genv.sdk.refresh_configuration() == Config()


def test_config_files_round_trip(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    Config(name="a b", gpu_memory="1g", gpus=2).save(folder)
    loaded = Config()
    loaded.load(folder)
    assert loaded == Config(name="a b", gpu_memory="1g", gpus=2)
    Config(name="only").save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["name"]


# --- devices ------------------------------------------------------------------


def test_attach_and_detach():
    with genv.sdk.activate():
        assert genv.sdk.attach(gpus=2) == [0, 1]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        # Never detaches: already on more devices than asked for.
        assert genv.sdk.attach(gpus=1) == [0, 1]
        assert genv.sdk.detach(1) == [0]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert genv.sdk.attached() == [0]
        assert genv.sdk.detach() == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"
        assert genv.sdk.attach(index=1) == [1]
        assert genv.sdk.attach(index=1) == [1]
        assert genv.sdk.detach() == []
        # No count given or configured: nothing to attach.
        assert genv.sdk.attach() == []
        genv.sdk.configure(Config(gpus=1))
        assert genv.sdk.attach() == [0]


def test_attach_arguments_are_checked():
    with genv.sdk.activate():
        with pytest.raises(ValueError, match="both"):
            genv.sdk.attach(index=0, gpus=1)
        with pytest.raises(ValueError, match="wait=True"):
            genv.sdk.attach(gpus=1, timeout=1)
        with pytest.raises(RuntimeError, match=r"^Device 7 does not exist"):
            genv.sdk.attach(index=7)


def test_attach_when_devices_are_taken(other: OtherEnv):
    assert other.attach("--count", "2") == "0,1"
    with genv.sdk.activate():
        with pytest.raises(RuntimeError, match="^No available devices$"):
            genv.sdk.attach(gpus=1)
        with pytest.raises(RuntimeError, match="^Device 0 is not available$"):
            genv.sdk.attach(index=0)
        assert genv.sdk.attach(index=0, allow_over_subscription=True) == [0]
        assert sorted(a["eid"] for a in attachments(0)) == sorted(["other", genv.sdk.eid()])


def test_attach_wait_times_out(other: OtherEnv):
    other.attach("--count", "2")
    with genv.sdk.activate():
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="^Timed out after 0.5 s waiting for 1 device"):
            genv.sdk.attach(gpus=1, wait=True, timeout=0.5)
        assert time.monotonic() - start < 10
        assert genv.sdk.attached() == []
        assert "other" not in genv_cmd("devices", "queue").stdout


def test_attach_wait_gets_the_device_when_freed(other: OtherEnv, caplog):
    caplog.set_level("INFO", logger="genv")
    other.attach("--count", "2")
    timer = threading.Timer(1.0, lambda: genv_cmd("devices", "detach", "--eid", "other", "--index", "1"))
    timer.start()
    try:
        with genv.sdk.activate():
            assert genv.sdk.attach(gpus=1, wait=True, timeout=60) == [1]
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        assert "genv: waiting for 1 device (1st in line" in caplog.text
    finally:
        timer.join()


def test_refresh_attached_reads_what_others_changed():
    with genv.sdk.activate(config=Config(gpus=1)):
        genv_cmd("devices", "attach", "--eid", genv.sdk.eid(), "--index", "1")
        assert genv.sdk.attached() == [0]
        assert genv.sdk.refresh_attached() == [0, 1]
        assert genv.sdk.attached() == [0, 1]


def test_attached_in_a_shell_and_in_a_container(monkeypatch, state):
    monkeypatch.setenv("GENV_ENVIRONMENT_ID", "e")
    monkeypatch.setenv("GENV_SHELL", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert genv.sdk.attached() == [1, 0]
    monkeypatch.delenv("GENV_SHELL")
    with pytest.raises(RuntimeError, match="Failed to find attached device indices"):
        genv.sdk.attached()
    monkeypatch.setenv("GENV_CONTAINER", "1")
    (state / "devices").mkdir(parents=True)
    for name in ["3.lock", "1.lock", "notes.txt"]:
        (state / "devices" / name).touch()
    assert genv.sdk.attached() == [1, 3]


# --- binary ---------------------------------------------------------------------


def test_the_binary_comes_with_the_package(monkeypatch, tmp_path):
    found = genv._command.binary()
    assert Path(found).name == "genv" and os.access(found, os.X_OK)
    assert genv_cmd("version").stdout.strip() == "1.4.3"
    monkeypatch.setenv("GENV_SDK_BINARY", str(tmp_path / "missing" / "genv"))
    with pytest.raises(RuntimeError, match="could not run .*missing/genv"):
        with genv.sdk.activate():
            pass


def test_activate_with_a_capacity_preloads_the_memory_cap(monkeypatch):
    # The wheel's library, installed as <prefix>/lib/genv/libgenv_memcap.so
    # beside <prefix>/bin/genv, where genv finds it.
    binary = Path(_command.binary())
    library = binary.parent.parent / "lib" / "genv" / "libgenv_memcap.so"
    assert library.read_bytes()[:4] == b"\x7fELF"
    installed = [Path(str(f.locate())).resolve() for f in metadata.files("genv") or []]
    assert library.resolve() in installed and binary.resolve() in installed
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    config = genv.sdk.Env.Config(name="capped", gpu_memory="4g", gpus=1)
    with genv.sdk.activate(config=config):
        entries = os.environ["LD_PRELOAD"].split()
        assert entries == [str(library), "/opt/other.so"]
    assert os.environ["LD_PRELOAD"] == "/opt/other.so"
    with genv.sdk.activate(config=genv.sdk.Env.Config(name="free", gpus=1)):
        assert os.environ["LD_PRELOAD"] == "/opt/other.so"
