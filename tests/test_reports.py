"""The JSON, JUnit and Markdown reports tell one story, the exit code's: every failure (a step, a
target asked for and not buildable here, a recipe error) is in all three, near the top of the Markdown."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import onnx
import pytest
import yaml

from conftest import conv_model, recipe_dict
from trtbuild.backends.gpu import detect_gpus
from trtbuild.backends.target import installed_version
from trtbuild.commands.cli import main


def nightly(root, *targets: str) -> tuple[int, dict, ET.Element, str]:
    """The targets guide's nightly command on the recipes under root/recipes: (exit code, the three reports)."""
    report, junit, summary = root / "report.json", root / "junit.xml", root / "summary.md"
    code = main([str(root / "recipes"), "-j", "2", *(a for t in targets for a in ("--target", t)),
                 "--cache-dir", str(root / "cache"),
                 "--report", str(report), "--junit", str(junit), "--markdown", str(summary)])
    return code, json.loads(report.read_text()), ET.parse(junit).getroot(), summary.read_text()


def failed_cases(junit: ET.Element) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}/{c.get('name')}": c.find("failure")
            for c in junit.iter("testcase") if c.find("failure") is not None}


def head(markdown: str) -> str:
    """What a job page shows first: everything above the step table."""
    return markdown.split("\n| recipe |")[0]


def assert_agree(code: int, report: dict, junit: ET.Element, markdown: str) -> None:
    """The three reports and the exit code say the same thing, failure for failure."""
    assert report["exit_code"] == code and report["ok"] == (code == 0)
    assert int(junit.get("failures")) == len(failed_cases(junit)) == len(report["failures"])
    assert markdown.startswith(f"## trtbuild: {'ok' if code == 0 else 'FAILED'} (exit code {code})\n")
    for failure in report["failures"]:
        assert f"- **{failure['label']}**: {failure['message']}" in head(markdown)
    if code == 0:
        assert not report["failures"] and "failure" not in head(markdown)


@pytest.fixture
def recipes(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    onnx.save(conv_model(), tmp_path / "conv.onnx")
    data = recipe_dict(str(tmp_path / "conv.onnx"))
    data["engine"]["backend"] = "auto"
    (folder / "conv.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def test_the_nightly_command_with_an_unbuildable_target_fails_in_every_report(tmp_path, recipes, capsys):
    if installed_version("tensorrt") and detect_gpus():
        pytest.skip("full TensorRT and a GPU are here: --target tensorrt builds")
    code, report, junit, markdown = nightly(tmp_path, "tensorrt", "tensorrt-rtx")
    assert code == 1
    assert_agree(code, report, junit, markdown)
    [failure] = report["failures"]
    assert failure["kind"] == "unbuildable" and failure["step"] == "engine"
    assert failure["target"].startswith("tensorrt-") and "tensorrt-rtx" not in failure["target"]
    assert "asked for with --target and cannot be built here" in failure["message"]
    assert "not installed" in failure["message"] or "GPU" in failure["message"]  # the reason, not only the verdict
    [(name, case)] = failed_cases(junit).items()
    assert name == f"conv/engine [{failure['target']}]" and case.get("type") == "unbuildable"
    assert "cannot be built here" in case.get("message")
    title = failure["label"].split(" [", 1)[1].rstrip("]")  # what it is: "tensorrt (not installed, no GPU)"
    assert "| conv | engine | " + title + " | **failed** |" in markdown and "smlocal" not in head(markdown)
    # the portable TensorRT-RTX plan was still built and published
    assert {s["target"]: s["status"] for s in report["steps"] if s["step"] == "engine"}[
        next(s["target"] for s in report["steps"] if (s["target"] or "").startswith("tensorrt-rtx"))] == "built"
    captured = capsys.readouterr()
    assert "left to other machines" not in captured.err  # asked for here: a failure, not someone else's job
    assert f"conv\t{failure['target']}\tfailed: asked for with --target" in captured.out


def test_every_kind_of_failure_is_in_every_report(tmp_path, recipes):
    broken_model = tmp_path / "broken.onnx"
    onnx.save(conv_model(extra_op="Det"), broken_model)
    broken = recipe_dict(str(broken_model))
    broken["name"], broken["onnx"]["simplify"] = "broken", False
    (recipes / "broken.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    (recipes / "typo.yaml").write_text((recipes / "conv.yaml").read_text().replace("workspace:", "workspce:")
                                       .replace("name: conv", "name: typo"))
    code, report, junit, markdown = nightly(tmp_path, "tensorrt-rtx")
    assert code == 2  # a recipe error is bad usage, whatever else failed
    assert_agree(code, report, junit, markdown)
    kinds = {f["kind"]: f for f in report["failures"]}
    assert set(kinds) == {"recipe", "step"}
    assert "typo.yaml:" in kinds["recipe"]["label"] and "did you mean 'workspace'" in kinds["recipe"]["message"]
    assert kinds["step"]["label"] == "broken/check" and "cannot import 1 node (Det)" in kinds["step"]["message"]
    cases = failed_cases(junit)
    assert any(name.startswith("recipes/") and "typo.yaml:" in name for name in cases)
    assert "node 'det_node' (Det)" in cases["broken/check"].text
    assert "last attempt failed" not in markdown
    # the list of failures is followed by a blank line before what comes next; the graph comes last
    assert "\n\n### Failures\n" in markdown and markdown.index("### Failures") < markdown.index("```mermaid")


def test_a_clean_run_is_ok_in_every_report(tmp_path, recipes):
    code, report, junit, markdown = nightly(tmp_path, "tensorrt-rtx")
    assert code == 0
    assert_agree(code, report, junit, markdown)
    assert junit.get("failures") == "0" and int(junit.get("tests")) >= 3
