"""Several unix users on one cache (the only place tests run as other uids): a setgid cache directory keeps what each creates group-writable
whatever their umask; a log path another user turned into a link is replaced, never followed; a
user who may only read the cache (a CI mount) gets status, dag, path and a no-op build."""

from __future__ import annotations

import json

import pytest

from conftest import recipe_dict, statuses
from helpers import run_as

pytestmark = pytest.mark.slow


def test_a_setgid_cache_stays_group_writable_whatever_the_umask(shared):
    first = run_as(shared, 4301, str(shared.recipe), "--cache-dir", str(shared.cache), umask=0o022)
    assert first.returncode == 0, first.stderr
    data = recipe_dict("conv.onnx")
    data["engine"]["workspace"] = "128MiB"
    shared.write_recipe(data)
    second = run_as(shared, 4302, str(shared.recipe), "--cache-dir", str(shared.cache), umask=0o022)
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr
    assert "cached     conv/simplify" in second.stderr and "built      conv/engine" in second.stderr
    own = shared.cache / "users" / "4301"  # each user's own folder: closed to the others (test_shared_forgeries)
    made = [p for p in shared.cache.rglob("*") if not p.is_symlink() and p.stat().st_uid == 4301
            and own not in p.parents and p != own]
    assert made
    for path in made:
        mode = path.stat().st_mode
        if path.is_dir() and not path.name.startswith("pull-"):
            assert mode & 0o070 == 0o070 and mode & 0o2000, path  # group rwx, setgid
        elif path.parent.name != "objects" and path.parent.parent.name != "objects":
            assert mode & 0o060 == 0o060 or mode & 0o777 == 0o444, path  # group rw (objects: read-only)


def test_a_log_turned_into_a_link_is_replaced_not_followed(project, tmp_path):
    code, report = project.build()
    assert code == 0
    key = next(s["key"] for s in report["steps"] if s["step"] == "engine")
    log = project.cache / "logs" / f"{key}.log"
    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    log.unlink(missing_ok=True)
    log.symlink_to(victim)
    code, forced = project.build("--force", "engine")
    assert code == 0 and statuses(forced)["engine"] == "built"
    assert victim.read_text() == "another user's file\n"
    assert not log.is_symlink() and log.is_file()


def test_a_read_only_cache_serves_status_dag_path_and_a_no_op_build(shared):
    built = run_as(shared, 4301, str(shared.recipe), "--cache-dir", str(shared.cache), umask=0o002)
    assert built.returncode == 0, built.stderr
    reader = 4399  # not in the group: the cache is read-only to it (others r-x, files r--)
    cache = ["--cache-dir", str(shared.cache)]
    status = run_as(shared, reader, "status", str(shared.recipe), *cache, groups=())
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    dag = run_as(shared, reader, "dag", str(shared.recipe), *cache, groups=())
    assert dag.returncode == 0 and "Traceback" not in dag.stderr and "engine" in dag.stdout, dag.stderr
    path = run_as(shared, reader, "path", "conv", "--target", "tensorrt-rtx", *cache, groups=())
    assert path.returncode == 0 and path.stdout.strip().endswith("model.plan"), path.stderr
    before = {p: p.stat().st_mtime_ns for p in shared.cache.rglob("*") if not p.is_symlink()}
    noop = run_as(shared, reader, str(shared.recipe), *cache, groups=())
    assert noop.returncode == 0 and "Traceback" not in noop.stderr, noop.stderr
    assert "cached     conv/engine" in noop.stderr
    after = {p: p.stat().st_mtime_ns for p in shared.cache.rglob("*") if not p.is_symlink()}
    assert after == before  # nothing written
    edited = recipe_dict("conv.onnx")
    edited["engine"]["workspace"] = "96MiB"
    shared.write_recipe(edited)
    rebuild = run_as(shared, reader, str(shared.recipe), *cache, groups=())
    assert rebuild.returncode == 1 and "Traceback" not in rebuild.stderr, rebuild.stderr  # says it cannot write
    assert json.loads((shared.cache / "out" / "conv" / ".trtbuild-build.json").read_text())
