"""Nothing wrong is ever served: verified hits, copies in out/, out/ showing exactly the last build."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import conv_model, recipe_dict, statuses
from trtbuild.store.hashing import digest_file
from trtbuild.store.publish import read_manifest


def _plan(report: dict) -> Path:
    return Path(next(s for s in report["steps"] if s["step"] == "engine")["outputs"]["model.plan"])


def _flip_last_byte(path: Path, keep_mtime: bool = True) -> None:
    st = path.stat()
    path.chmod(0o644)  # root ignores the read-only bit anyway
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:  # as a careful tamperer (or a restore from backup) would
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_editing_a_published_plan_never_reaches_the_store(project):
    code, first = project.build()
    plan = _plan(first)
    good = digest_file(plan)
    _flip_last_byte(plan)  # a script editing out/ in place
    code, second = project.build()
    assert code == 0 and statuses(second)["engine"] == "cached"
    assert digest_file(plan) == good  # the edited copy was replaced by the store's bytes
    assert digest_file(project.cache / "objects" / good[:2] / good) == good


def test_a_corrupt_object_is_reported_removed_and_rebuilt(project, capsys):
    code, first = project.build()
    good = digest_file(_plan(first))
    obj = project.cache / "objects" / good[:2] / good
    _flip_last_byte(obj)
    capsys.readouterr()
    code, second = project.build()
    assert code == 0 and statuses(second)["engine"] == "built"
    assert "does not hold the bytes it is named after" in capsys.readouterr().err
    assert digest_file(obj) == good and digest_file(_plan(second)) == good


def test_out_shows_only_what_the_recipe_makes_now(project):
    project.build()
    simplified = project.cache / "out" / "conv" / "model.onnx"
    assert simplified.exists()
    data = recipe_dict("conv.onnx")
    data["onnx"]["simplify"] = False
    project.write_recipe(data)
    project.write_model(conv_model(seed=1))
    code, report = project.build()
    assert code == 0
    assert not simplified.exists()  # the old simplified bytes do not linger beside a new engine
    target = _plan(report).parent.name
    shown = read_manifest(project.cache / "out" / "conv")["files"]
    assert set(shown) == {"io.json", f"{target}/model.plan", f"{target}/model.json"}
    assert shown[f"{target}/model.plan"]["digest"] == digest_file(_plan(report))


def test_a_failed_rebuild_leaves_no_plan_that_looks_current(project):
    code, first = project.build()
    plan = _plan(first)
    assert plan.exists()
    project.write_model(conv_model(extra_op="Det"))  # TensorRT cannot import it: the check says so
    code, second = project.build()
    assert code == 1 and statuses(second)["check"] == "failed" and statuses(second)["engine"] == "skipped"
    assert not plan.exists()
    steps = read_manifest(project.cache / "out" / "conv")["steps"]
    assert steps["engine@" + plan.parent.name]["current"] is False


def test_a_no_op_build_publishes_nothing(project):
    project.build()
    out = project.cache / "out" / "conv"
    shown = out.resolve()
    stamp = (shown / "io.json").stat().st_mtime_ns
    code, report = project.build()
    assert code == 0 and out.resolve() == shown and (shown / "io.json").stat().st_mtime_ns == stamp


LOADER = '''
from pathlib import Path

import numpy as np


def batches():
    here = Path(__file__)
    here.write_text(here.read_text() + "# edited by a git pull during the build\\n")
    yield {"x": np.ones((2, 3, 16, 16), np.float32)}
'''


def test_a_source_changed_during_its_step_is_never_cached(project):
    (project.root / "calib.py").write_text(LOADER)
    data = recipe_dict("conv.onnx", precision="int8")
    data["source"]["python_path"] = ["."]
    data["precision"] = {"calibration": {"loader": "calib:batches", "batches": 1}}
    project.write_recipe(data)
    code, report = project.build()
    precision = next(s for s in report["steps"] if s["step"] == "precision")
    assert code == 1 and precision["status"] == "failed"
    assert f"source changed during the build: {project.root / 'calib.py'}" in precision["error"]
    assert not [a for a in project.actions() if a["step"] == "precision"]  # nothing recorded under the old key
