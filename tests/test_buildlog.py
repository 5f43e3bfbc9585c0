"""The build log (trtbuild.store.buildlog): a no-op build reads one file, and is exactly the build it
stands for. Real builds (TensorRT-RTX), real files; what the log spares is observed by the files read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, statuses
from trtbuild.store import buildlog, cache as cache_module, publish
from trtbuild.recipes import loader

HOUR_AGO = time.time() - 3600


def age(project) -> None:
    """Make the files a no-op build reads older than the racy window (a build seconds ago is not logged)."""
    cache = project.cache
    files = [*cache.glob("actions/*/*.json"), *cache.glob("state/*.json"), *cache.glob("out/.*/.trtbuild-build.json"),
             project.recipe]
    for path in files:
        os.utime(path, (HOUR_AGO, HOUR_AGO))


def logged_build(project) -> dict:
    """Build, age what it wrote, build again (a no-op that fills the log): the log knows the build."""
    assert project.build()[0] == 0
    age(project)
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}
    assert list((project.mine / "buildlog").iterdir())
    return report


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Paths of the records, states, manifests and recipe files a build opens."""
    opened: list[str] = []

    def counting(original):
        def read(path, *args, **kwargs):
            opened.append(str(path))
            return original(path, *args, **kwargs)
        return read

    monkeypatch.setattr(cache_module, "read_json_stat", counting(cache_module.read_json_stat))
    monkeypatch.setattr(publish, "read_json_stat", counting(publish.read_json_stat))
    monkeypatch.setattr(loader, "read_bytes", counting(loader.read_bytes))
    return opened


def test_a_no_op_build_reads_the_build_log_instead_of_a_file_per_step(project, reads):
    logged_build(project)
    reads.clear()
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}
    assert reads == []  # no action record, state file, out/ manifest or recipe file opened
    # and what it shows is what the files say
    manifest = json.loads((project.cache / "out" / "conv" / publish.MANIFEST).read_text())
    assert {s["key"] for s in report["steps"] if s["key"]} <= {s["key"] for s in manifest["steps"].values()}


def test_a_recipe_edited_in_place_with_its_mtime_put_back_is_read_again(project):
    logged_build(project)
    text = project.recipe.read_text()
    assert "256MiB" in text
    before = project.recipe.stat()
    project.recipe.write_text(text.replace("256MiB", "512MiB"))  # same size
    os.utime(project.recipe, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: the ctime moved
    code, report = project.build()
    assert code == 0
    assert statuses(report)["engine"] == "built" and statuses(report)["check"] == "cached"


def test_an_action_record_replaced_behind_the_log_is_not_served(project, capsys):
    report = logged_build(project)
    key = next(s["key"] for s in report["steps"] if s["step"] == "engine")
    record = project.cache / "actions" / key[:2] / f"{key}.json"
    record.write_text(json.dumps({"key": "0" * 64, "outputs": {}}))
    os.utime(record, (HOUR_AGO, HOUR_AGO))
    code, report = project.build()
    assert code == 0 and statuses(report)["engine"] == "built"
    assert "rejected (its key is not the step's)" in capsys.readouterr().err
    record.unlink()  # gone: rebuilt, not served from the log
    code, report = project.build()
    assert code == 0 and statuses(report)["engine"] == "built"


def test_a_state_file_or_out_folder_changed_behind_the_log_is_seen(project):
    logged_build(project)
    (project.cache / "state" / "conv.json").unlink()
    plan = next((project.cache / "out" / "conv").glob("*/model.plan"))
    plan.write_bytes(b"edited")
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}
    state = json.loads((project.cache / "state" / "conv.json").read_text())
    assert {e["key"] for e in state.values()} >= {s["key"] for s in report["steps"] if s["step"] != "verify"}
    plan = next((project.cache / "out" / "conv").glob("*/model.plan"))
    assert plan.read_bytes() != b"edited"


def test_an_environment_variable_a_step_reads_changes_its_key_with_the_log(project, monkeypatch):
    logged_build(project)
    monkeypatch.setenv("ONNXSIM_FIXED_POINT_ITERS", "3")
    code, report = project.build()
    assert code == 0 and statuses(report)["simplify"] == "built" and statuses(report)["check"] == "cached"


@pytest.mark.parametrize("damage", ["flip", "cut", "garbage"])
def test_a_damaged_build_log_is_ignored_and_rewritten(project, capsys, damage):
    logged_build(project)
    (log,) = [p for p in (project.mine / "buildlog").iterdir() if p.suffix != ".lock"]
    data = log.read_bytes()
    log.write_bytes({"flip": data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], "cut": data[: len(data) // 2],
                     "garbage": b"\0" * 100}[damage])
    capsys.readouterr()
    code, report = project.build()
    assert code == 0 and set(statuses(report).values()) == {"cached"}
    if damage != "garbage":  # another header: another trtbuild's log, replaced quietly
        assert "does not match its checksum" in capsys.readouterr().err
    head, _, body = log.read_bytes().partition(b"\n")
    assert head.startswith(buildlog.FORMAT.encode()) and json.loads(body)["records"]


def test_runs_saving_at_once_keep_each_others_entries(tmp_path):
    """Two runs learn different records and save one after the other: the log has both."""
    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.json"
        path.write_text("{}")
        os.utime(path, (HOUR_AGO, HOUR_AGO))
        files.append(path)
    first, second = (buildlog.BuildLog(tmp_path / "log", tmp_path / "log.lock") for _ in range(2))
    first.learn_record("a" * 64, os.stat(files[0]), {"key": "a" * 64})
    second.learn_record("b" * 64, os.stat(files[1]), {"key": "b" * 64})
    first.save()
    second.save()
    later = buildlog.BuildLog(tmp_path / "log", tmp_path / "log.lock")
    assert later._entry("records", "a" * 64, os.stat(files[0])) == {"key": "a" * 64}
    assert later._entry("records", "b" * 64, os.stat(files[1])) == {"key": "b" * 64}
    files[0].write_text("{ }")  # its stat moved: the entry is not served
    assert later._entry("records", "a" * 64, os.stat(files[0])) is None


def test_a_file_written_seconds_ago_is_not_logged(tmp_path):
    fresh = tmp_path / "fresh.json"
    fresh.write_text("{}")
    log = buildlog.BuildLog(tmp_path / "log", tmp_path / "log.lock")
    log.learn_record("a" * 64, os.stat(fresh), {"key": "a" * 64})
    log.save()
    assert not (tmp_path / "log").exists()  # nothing learned, nothing written


def _version_in_a_fresh_process(site: Path, memo: Path) -> str:
    probe = ("import sys; from pathlib import Path; from trtbuild.store import versions; "
             f"versions.keep_in(Path({str(memo)!r})); print(versions.version('trtbuild-probe-dist'), "
             "'importlib.metadata' in sys.modules)")
    env = os.environ | {"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          check=True, cwd=site).stdout.strip()


def _install(site: Path, version: str) -> Path:
    info = site / f"trtbuild_probe_dist-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: trtbuild-probe-dist\nVersion: {version}\n")
    return info


def test_kept_versions_follow_installs_upgrades_and_edits(tmp_path):
    site, memo = tmp_path / "site", tmp_path / "versions.json"
    site.mkdir()
    assert _version_in_a_fresh_process(site, memo) == "None True"
    info = _install(site, "1.0")
    assert _version_in_a_fresh_process(site, memo) == "1.0 True"  # installed: asked again
    assert _version_in_a_fresh_process(site, memo) == "1.0 False"  # kept: importlib.metadata not imported
    (info / "METADATA").unlink()
    info.rmdir()
    info = _install(site, "2.0")
    assert _version_in_a_fresh_process(site, memo) == "2.0 True"  # upgraded
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: trtbuild-probe-dist\nVersion: 2.0.post1\n")
    assert _version_in_a_fresh_process(site, memo) == "2.0.post1 True"  # edited in place
    memo.write_text("{not json")
    assert _version_in_a_fresh_process(site, memo) == "2.0.post1 True"  # a damaged file: asked again


def test_a_no_op_build_imports_neither_package_metadata_nor_file_locks(project):
    logged_build(project)
    script = ("import sys; from trtbuild.commands.cli import main\n"
              f"assert main([{str(project.recipe)!r}, '--cache-dir', {str(project.cache)!r}, '--quiet']) == 0\n"
              "print(sorted(m for m in ('importlib.metadata', 'filelock', 'pydantic', 'yaml') if m in sys.modules))")
    env = os.environ | {"PYTHONPATH": str(REPO)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                           cwd=project.root).stdout.strip().splitlines()[-1] for _ in range(2)]
    assert runs[1] == "[]", runs  # the first fresh process may keep the tools' versions for this sys.path
