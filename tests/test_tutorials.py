"""The tutorials in docs/tutorials/ run as written: each page's ```bash blocks, in order, in a fresh
copy of its folder (the recipes and scripts the page includes), with the real CLI; then what the page
says they print is checked. A tutorial that drifts from the code fails here."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = REPO / "docs" / "tutorials"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def bash_blocks(page: Path) -> list[str]:
    """The page's ```bash blocks, in order."""
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == "bash"]


def included_files(page: Path) -> list[str]:
    """Files the page includes with pymdownx.snippets (--8<-- "tutorials/NAME/FILE")."""
    return re.findall(r'--8<-- "([^"]+)"', page.read_text())


class Tutorial:
    """A tutorial's folder copied to a temporary directory, where its commands run one block at a time."""

    def __init__(self, name: str, tmp_path: Path):
        self.page = TUTORIALS / f"{name}.md"
        self.dir = tmp_path / name
        shutil.copytree(TUTORIALS / name, self.dir)
        bin_dir = tmp_path / "bin"  # `trtbuild` and `python` as an install puts them on PATH
        bin_dir.mkdir()
        for tool, run in (("trtbuild", f'"{sys.executable}" -m trtbuild'), ("python", f'"{sys.executable}"')):
            shim = bin_dir / tool
            shim.write_text(f'#!/bin/sh\nexec {run} "$@"\n')
            shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        self.env.pop("TRTBUILD_CACHE_DIR", None)
        self.env.pop("TRTBUILD_REMOTE", None)
        self.blocks = bash_blocks(self.page)
        assert self.blocks, f"{self.page} has no ```bash blocks"

    def run_all(self) -> list[str]:
        """Runs every block; returns each one's stdout + stderr. A block that fails fails the test."""
        outputs = []
        for block in self.blocks:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=self.dir, env=self.env,
                                  capture_output=True, text=True, timeout=600)
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{self.page.name}: this block exited {done.returncode}:\n{block}\n{output}"
            assert "Traceback" not in output, f"{self.page.name}:\n{block}\n{output}"
            outputs.append(output)
        return outputs

    def report(self, name: str = "report.json") -> dict:
        return json.loads((self.dir / name).read_text())


def statuses(report: dict, recipe: str | None = None) -> dict[str, str]:
    return {s["step"] + (f" [{s['target']}]" if s.get("target") else ""): s["status"]
            for s in report["steps"] if recipe in (None, s["recipe"])}


def test_every_tutorial_in_the_nav_has_its_folder_and_runs_here():
    pages = sorted(p.stem for p in TUTORIALS.glob("*.md"))
    assert pages == sorted(p.name for p in TUTORIALS.iterdir() if p.is_dir()), "a page per folder, a folder per page"
    this = Path(__file__).read_text()
    for name in pages:
        assert f"def test_tutorial_{name}(" in this, f"docs/tutorials/{name}.md is not run by a test"
        for included in included_files(TUTORIALS / f"{name}.md"):
            assert (REPO / "docs" / included).is_file(), included


def test_tutorial_onnx(tmp_path):
    tutorial = Tutorial("onnx", tmp_path)
    fetch, build, io, no_ranges, dynamic, shown = tutorial.run_all()
    assert "squeezenet\ttensorrt-rtx-" in build and "3 built, 1 skipped" in build
    # as the page says: simplify keeps the model as given rather than the 3.5 MiB folded one
    assert "the engine is built from the smaller model as given" in build and "  start      squeezenet/check" in build
    assert (tutorial.dir / "cache/out/squeezenet/model.onnx").stat().st_size < 100_000
    assert json.loads((tutorial.dir / "cache/out/squeezenet/io.json").read_text())["inputs"] == [
        {"name": "data_0", "dtype": "float32", "shape": [1, 3, 224, 224]}]
    assert '"data_0"' in io
    assert "no_ranges.yaml:1: inputs: model input 'data_0' has dynamic dims [-1, 3, 224, 224]: give their range" in no_ranges
    assert "exit code 2" in no_ranges
    report = tutorial.report()
    assert report["ok"]
    engines = [s for s in report["steps"] if s["step"] == "engine"]
    assert sorted(s["target"].rsplit("-", 1)[1] for s in engines) == ["portable", "sm89"]
    assert all(s["status"] == "built" for s in engines)
    for s in engines:
        assert [p["inputs"]["data_0"]["max"] for p in s["meta"]["profiles"]] == [[16, 3, 224, 224]]
    status_line = next(line for line in shown.splitlines() if line.startswith("squeezenet_dynamic "))
    assert status_line.split()[1:] == ["fresh", "fresh"]
    plan = Path(shown.strip().splitlines()[-1])
    assert plan.name == "model.plan" and plan.parent.name.endswith("-sm89") and plan.is_file()


def test_tutorial_pytorch(tmp_path):
    needs("torch")
    tutorial = Tutorial("pytorch", tmp_path)
    first, again, dry_run, rebuilt, used = tutorial.run_all()
    report = tutorial.report()
    assert report["ok"]
    assert sorted(statuses(report).values()) == ["built"] * 5 + ["skipped"]  # verify: no GPU here
    assert next(s for s in report["steps"] if s["step"] == "export")["meta"]["exporter"] in ("dynamo", "torchscript")
    assert "5 cached, 1 skipped" in again
    assert re.search(r"would-run +tinynet/export +inputs\.code\.\(main\) changed \(tinynet\.py: ", dry_run), dry_run
    assert "5 built, 1 skipped" in rebuilt
    lines = used.splitlines()
    assert lines[0].endswith("/model.plan") and Path(lines[0]).is_file()
    # inputs in forward()'s order whatever the recipe's order; outputs named by the dict's keys
    assert [line.split('"')[3] for line in lines[1:]] == ["image", "temperature", "logits", "probs", "default"]


def test_tutorial_huggingface(tmp_path):
    needs("torch")
    needs("transformers")
    tutorial = Tutorial("huggingface", tmp_path)
    first, profiles, changed = tutorial.run_all()
    report = tutorial.report()
    assert report["ok"] and sorted(statuses(report).values()) == ["built"] * 5 + ["skipped"]
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    assert [o["name"] for o in engine["meta"]["outputs"]] == ["last_hidden_state", "pooler_output"]
    assert profiles.splitlines() == ["0 short {'min': [1, 1], 'opt': [8, 64], 'max': [16, 128]}",
                                     "1 long {'min': [1, 129], 'opt': [1, 384], 'max': [2, 512]}"]
    assert "2 built, 3 cached, 1 skipped" in changed  # the export runs the model at the new max; the same ONNX model
    assert re.search(r"built +tiny_bert/engine .*params\.profiles\[1\]\.inputs\.input_ids\.max: \[2, 512\] -> \[4, 512\]",
                     changed), changed


def test_tutorial_keras(tmp_path):
    needs("tensorflow")
    needs("tf2onnx")
    tutorial = Tutorial("keras", tmp_path)
    made, built, mistake, status = tutorial.run_all()
    assert (tutorial.dir / "classifier.keras").is_file()
    report = tutorial.report()
    assert report["ok"] and sorted(statuses(report).values()) == ["built"] * 5 + ["skipped"]
    engine = next(s for s in report["steps"] if s["step"] == "engine")
    assert [(i["name"], i["shape"]) for i in engine["meta"]["inputs"]] == [("image", [-1, 3, 32, 32])]
    assert ("forgot_nchw.yaml:6: inputs.image: shape [-1, 3, 32, 32] is NCHW, the Keras model's input 'image' is "
            "NHWC [-1, 32, 32, 3]: add `source: {inputs_as_nchw: [image]}`") in mistake
    assert "exit code 2" in mistake
    assert re.search(r"^classifier +fresh$", status, re.M), status


def test_tutorial_int8(tmp_path):
    needs("PIL")
    tutorial = Tutorial("int8", tmp_path)
    made, built, numbers, added, rebuilt = tutorial.run_all()
    report = tutorial.report()
    assert report["ok"] and sorted(statuses(report).values()) == ["built"] * 5 + ["skipped"]
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["precision"]["meta"]["calibration"] == {"batches": 3, "samples": 12, "batches_asked": None,
                                                         "shapes": {"image": [[4, 4], [3, 3], [64, 64], [64, 64]]}}
    rel_l2 = steps["accuracy"]["meta"]["accuracy"]["outputs"][0]["rel_l2"]
    assert 0 < rel_l2 < 0.1
    assert numbers.splitlines() == [str(steps["precision"]["meta"]["calibration"]), str(rel_l2)]
    assert re.search(r"cached +classifier_int8/simplify", added)
    assert re.search(r"would-run +classifier_int8/precision +images/ changed \(read while it ran\)", added), added
    assert re.search(r"built +classifier_int8/precision +\S+ +images/ changed \(read while it ran\)", rebuilt), rebuilt
    # the page says the thirteenth image moved no range, so nothing after precision reran
    assert re.search(r"cached +classifier_int8/engine", rebuilt), rebuilt
