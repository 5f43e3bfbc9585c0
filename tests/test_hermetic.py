"""Hermetic steps: a key holds exactly what its artifact depends on. Variables that change outputs are
keyed or never reach a step; files the user's code reads are recorded exactly (digested when read,
named from the recipe's project, no folder listings of the import machinery); keys ignore what does
not change an artifact (comments, a glob's spelling, the order of a set); a worker that would run
another action than its key describes refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import Project, conv_model, copy_built, needs, recipe_dict, statuses

pytestmark = pytest.mark.slow


def step(report: dict, name: str) -> dict:
    return next(s for s in report["steps"] if s["step"] == name)


def cli(root: Path, *args: str, env: dict | None = None, recipe: str = "conv.yaml") -> tuple[int, dict, str]:
    """The real CLI in a process of its own, with `env` on top of this one's environment."""
    report = root / "report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "trtbuild", str(root / recipe), "--cache-dir", str(root / "cache"),
                           "--report", str(report), *args], capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=300)
    return done.returncode, json.loads(report.read_text()) if report.exists() else {}, done.stderr


def test_a_variable_that_changes_onnx_simplifier_is_in_the_simplify_key_and_dry_run_names_it(project):
    code, first, err = cli(project.root)
    assert code == 0, err
    code, dry, _ = cli(project.root, "--dry-run", env={"ONNXSIM_FIXED_POINT_ITERS": "0"})
    assert step(dry, "simplify")["status"] == "would-run"
    assert step(dry, "simplify")["reason"] == "env.ONNXSIM_FIXED_POINT_ITERS added"
    assert step(dry, "check")["status"] == "cached"
    code, built, err = cli(project.root, env={"ONNXSIM_FIXED_POINT_ITERS": "0"})
    assert code == 0, err
    assert step(built, "simplify")["key"] != step(first, "simplify")["key"]
    record = json.loads(next((project.cache / "actions").glob(f"*/{step(built, 'simplify')['key']}.json")).read_text())
    assert record["components"]["env"] == {"ONNXSIM_FIXED_POINT_ITERS": "0"}


MODEL_READING_THE_ENVIRONMENT = '''
import os
from pathlib import Path

import torch

CONFIG = Path(__file__).with_name("config.json")


def build():
    import json

    width = json.loads(CONFIG.read_text())["width"]
    scale = float(os.environ.get("MODEL_SCALE", "1"))  # not for trtbuild to pass: it never reaches the step
    net = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU())
    with torch.no_grad():
        net[0].weight.mul_(scale)
    return net
'''


@pytest.fixture
def pytorch_project(tmp_path):
    needs("torch")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(MODEL_READING_THE_ENVIRONMENT)
    (tmp_path / "models" / "config.json").write_text('{"width": 4}')
    recipe = {"name": "net", "source": {"framework": "pytorch", "entrypoint": "net:build", "python_path": ["models"]},
              "inputs": {"x": {"shape": [1, 3, 8, 8]}}, "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}
    (tmp_path / "net.yaml").write_text(json.dumps(recipe))
    return tmp_path


def test_an_unkeyed_variable_never_reaches_the_export_and_a_file_the_model_opens_is_an_input(pytorch_project):
    root = pytorch_project
    code, first, err = cli(root, recipe="net.yaml")
    assert code == 0, err
    export = step(first, "export")
    record = json.loads(next((root / "cache" / "actions").glob(f"*/{export['key']}.json")).read_text())
    assert record["discovered"]["files"] == {"models/config.json": _sha(root / "models" / "config.json")}
    assert "torch" in record["discovered"]["tools"]  # what the model's code imported, by version

    # MODEL_SCALE would change the weights, but no variable outside the kind's own reaches a step.
    code, again, err = cli(root, recipe="net.yaml", env={"MODEL_SCALE": "3"})
    assert code == 0 and statuses(again)["export"] == "cached", err
    # Another framework's variables and Terraform's (TF_ too) are not a PyTorch export's; PyTorch's are.
    code, dry, _ = cli(root, "--dry-run", recipe="net.yaml", env={"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CLI_CONFIG_FILE": "/x"})
    assert step(dry, "export")["status"] == "cached"
    code, dry, _ = cli(root, "--dry-run", recipe="net.yaml", env={"PYTORCH_JIT": "0", "TF_LOG": "debug"})
    assert step(dry, "export")["reason"] == "env.PYTORCH_JIT added"

    # A distribution the model's code imported, at another version than when it was built.
    path = next((root / "cache" / "actions").glob(f"*/{export['key']}.json"))
    installed = record["discovered"]["tools"]["torch"]
    path.write_text(json.dumps(record | {"discovered": record["discovered"] | {
        "tools": record["discovered"]["tools"] | {"torch": "1.0.0"}}}))
    code, dry, _ = cli(root, "--dry-run", recipe="net.yaml")
    assert step(dry, "export")["reason"] == f"torch 1.0.0 -> {installed} (read while it ran)"
    path.write_text(json.dumps(record))

    (root / "models" / "config.json").write_text('{"width": 6}')
    code, dry, _ = cli(root, "--dry-run", recipe="net.yaml")
    assert step(dry, "export")["status"] == "would-run"
    assert step(dry, "export")["reason"] == "models/config.json changed (read while it ran)"


def test_an_editable_package_entrypoint_keys_the_modules_it_imports(tmp_path):
    needs("torch")
    package = tmp_path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text("import torch\n\ndef block():\n    return torch.nn.ReLU()\n")
    (package / "model.py").write_text("import torch\n\nfrom mypkg.layers import block\n\n"
                                      "def build():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), block())\n")
    recipe = {"name": "pkg", "source": {"framework": "pytorch", "entrypoint": "mypkg.model:build"},
              "inputs": {"x": {"shape": [1, 3, 8, 8]}}, "engine": {"backend": "tensorrt-rtx", "optimization_level": 0}}
    (tmp_path / "pkg.yaml").write_text(json.dumps(recipe))
    installed = {"PYTHONPATH": str(tmp_path / "src")}  # as an editable install puts its folder on sys.path
    code, first, err = cli(tmp_path, recipe="pkg.yaml", env=installed)
    assert code == 0, err
    (package / "layers.py").write_text("import torch\n\ndef block():\n    return torch.nn.Tanh()\n")
    code, dry, _ = cli(tmp_path, "--dry-run", recipe="pkg.yaml", env=installed)
    assert step(dry, "export")["status"] == "would-run"
    assert step(dry, "export")["reason"].startswith("inputs.code.")
    assert "layers.py changed" in step(dry, "export")["reason"]


LOADER = '''
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def batches():
    for path in sorted((HERE / "calib").rglob("*.npy")):
        yield {"x": np.load(path)}


def batches_then_rewrite():
    first = HERE / "calib" / "a.npy"
    yield {"x": np.load(first)}
    # another process rewrites the file after it was read (a sync job during a nightly build)
    subprocess.run([sys.executable, "-c", f"import numpy as np; np.save({str(first)!r}, np.ones((1, 3, 16, 16), "
                    "np.float32))"], check=True)
'''


def _int8(project, **calibration) -> None:
    data = recipe_dict("conv.onnx", precision="int8")
    data["source"]["python_path"] = ["."]
    data["precision"] = {"calibration": {"batches": 4, **calibration}, "max_relative_error": 10.0}
    project.write_recipe(data)


def _calibration_files(project, *names: str) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        path = project.root / "calib" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal((1, 3, 16, 16)).astype(np.float32))


def test_a_file_rewritten_after_the_loader_read_it_fails_the_step(project):
    (project.root / "loader.py").write_text(LOADER)
    _calibration_files(project, "a.npy")
    _int8(project, loader="loader:batches_then_rewrite")
    code, report = project.build()
    assert code == 1
    precision = step(report, "precision")
    assert precision["status"] == "failed"
    assert "calib/a.npy changed while the step ran" in precision["error"]
    assert not [a for a in project.actions() if a["step"] == "precision"]  # nothing recorded


def test_new_files_beside_the_recipe_do_not_rerun_calibration(project):
    (project.root / "loader.py").write_text(LOADER)
    _calibration_files(project, "a.npy", "b.npy")
    _int8(project, loader="loader:batches")
    code, report = project.build()
    assert code == 0 and statuses(report)["precision"] == "built"
    (project.root / "NOTES.md").write_text("a new file in the folder the loader was imported from\n")
    (project.root / "other.yaml").write_text("name: other\n")
    code, report = project.build("--dry-run")
    assert statuses(report)["precision"] == "cached", step(report, "precision")["reason"]
    _calibration_files(project, "c.npy")  # but a new file in the folder the loader lists is an input
    code, report = project.build("--dry-run")
    assert step(report, "precision")["reason"] == "calib/ changed (read while it ran)"


def test_two_calibration_files_with_one_name_in_different_folders_are_both_inputs(project):
    _calibration_files(project, "y.npy", "a/y.npy")
    _int8(project, data="calib/**/*.npy")
    code, report = project.build()
    assert code == 0, step(report, "precision").get("error")
    labels = json.loads(next((project.cache / "actions").glob(f"*/{step(report, 'precision')['key']}.json"))
                        .read_text())["components"]["inputs"]["calibration"]
    assert sorted(labels) == ["calib/a/y.npy", "calib/y.npy"]
    np.save(project.root / "calib" / "a" / "y.npy", np.zeros((1, 3, 16, 16), np.float32))
    code, report = project.build("--dry-run")
    assert step(report, "precision")["reason"].startswith("inputs.calibration.calib/a/y.npy changed")


def test_what_does_not_change_an_artifact_does_not_change_its_key(project):
    _calibration_files(project, "a.npy", "b.npy")
    _int8(project, data="calib/*.npy")
    data = json.loads(json.dumps(__import__("yaml").safe_load(project.recipe.read_text())))
    data["precision"]["keep_fp32"] = ["Relu", "Conv"]
    data["targets"] = ["tensorrt-rtx:sm120+sm86"]
    project.write_recipe(data)
    code, first = project.build()
    assert code == 0
    data["precision"]["calibration"]["data"] = "./calib/*.npy"
    data["precision"]["keep_fp32"] = ["Conv", "Relu"]
    data["targets"] = ["tensorrt-rtx:sm86+sm120"]
    project.write_recipe(data)
    code, second = project.build("--dry-run")
    assert {s["status"] for s in second["steps"] if s["step"] != "verify"} == {"cached"}
    assert [s["key"] for s in first["steps"]] == [s["key"] for s in second["steps"]]


def test_the_same_recipe_in_another_folder_sharing_a_remote_rebuilds_what_it_read_and_never_crashes(tmp_path):
    remote = (tmp_path / "remote").as_uri()
    copies = []
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        (root / "loader.py").write_text(LOADER)
        copies.append(root)
    from conftest import Project, conv_model

    projects = [Project(root) for root in copies]
    for p in projects:
        p.write_model(conv_model())
        _calibration_files(p, "a.npy")
        _int8(p, loader="loader:batches")
    code, report = projects[0].build("--remote", remote)
    assert code == 0
    np.save(projects[1].root / "calib" / "a.npy", np.zeros((1, 3, 16, 16), np.float32))  # other data there
    code, report = projects[1].build("--remote", remote)
    assert code == 0
    assert statuses(report)["precision"] == "built"
    assert "calib/a.npy changed" in step(report, "precision")["reason"]
    assert projects[1].build("--remote", remote)[0] == 0


def _int8_from_a_loader_built(folder: Path) -> None:
    project = Project(folder)
    project.write_model(conv_model())
    (folder / "loader.py").write_text(LOADER)
    _calibration_files(project, "a.npy")
    _int8(project, loader="loader:batches")
    code, report = project.build()
    assert code == 0 and statuses(report)["precision"] == "built", report


@pytest.mark.parametrize("discovered", ['"x"', "[]", '{"files": {"a": 1}}', '{"files": {"/dev/zero": "00"}}'])
def test_a_malformed_discovered_record_is_a_miss_with_a_warning(built_once, tmp_path, discovered, capsys):
    """From an int8 build whose loader's reads were recorded (built once per run, copied here)."""
    project = Project(copy_built(built_once("hermetic-int8-loader", _int8_from_a_loader_built), tmp_path))
    report = json.loads((project.root / "report.json").read_text())  # the first build's
    path = next((project.cache / "actions").glob(f"*/{step(report, 'precision')['key']}.json"))
    record = json.loads(path.read_text())
    record["discovered"] = json.loads(discovered)
    path.write_text(json.dumps(record))
    capsys.readouterr()
    code, report = project.build()
    assert code == 0 and statuses(report)["precision"] == "built"
    assert "its record of the files read while it ran is malformed" in capsys.readouterr().err


def test_a_worker_refuses_an_action_whose_code_tools_or_files_differ_from_its_key(project, tmp_path):
    """The check every worker makes (a farm node included) before it runs a step: here a real worker
    process gets a job whose key says other code, another onnx and another model file."""
    from helpers import run_in_a_worker
    from trtbuild.steps.action import code_modules, code_version, expectations

    components = {"version": code_version("check"), "tools": {"onnx": "0.0.1"}}
    expect = expectations("check", components)
    expect["code"]["trtbuild.steps.check"] = "0" * 64
    expect["version"] = "not-this-code"
    expect["inputs"] = {"model": {"(main)": "f" * 64}}
    (tmp_path / "out").mkdir()
    job = {"kind": "check", "params": {"inputs": {}}, "inputs": {"model": str(project.model)},
           "outdir": str(tmp_path / "out"), "context": {"where": {}}, "env": {}, "expect": expect,
           "sources": {"model": {"(main)": str(project.model)}}}
    result = run_in_a_worker(job, tmp_path / "log")
    assert not result["ok"]
    assert result["error"].startswith("not built here: this worker would build another action than its key describes")
    assert f"trtbuild's code of the check step (trtbuild.steps.check): code version {code_version('check')} here" \
        in result["error"]
    assert "onnx" in result["error"] and "0.0.1 in the key" in result["error"]
    assert f"{project.model} differs from the file the key was computed from" in result["error"]
    assert not list((tmp_path / "out").iterdir())
    assert "trtbuild.steps.check" in code_modules("check")


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_checkouts_of_one_repository_on_one_cache_share_what_the_loader_read(tmp_path):
    from conftest import Project, conv_model

    cache = tmp_path / "shared-cache"
    projects = []
    for name in ("alice", "bob"):
        root = tmp_path / name / "repo"
        (root / ".git").mkdir(parents=True)  # a checkout: paths are named from the repository's root
        (root / "recipes").mkdir()
        project = Project(root / "recipes")
        project.cache = cache
        (project.root / "loader.py").write_text(LOADER)
        project.write_model(conv_model())
        _calibration_files(project, "a.npy", "b.npy")
        _int8(project, loader="loader:batches")
        projects.append(project)
    assert projects[0].build()[0] == 0
    for project in (projects[1], projects[0], projects[1]):
        code, report = project.build()
        assert code == 0 and statuses(report)["precision"] == "cached", step(report, "precision")["reason"]
    record = next(a for a in projects[0].actions() if a["step"] == "precision")
    assert sorted(record["discovered"]["files"]) == ["recipes/calib/a.npy", "recipes/calib/b.npy"]
