"""Hostile models and caches: a model's external data never brings in a file from outside its folder, and
a cache object that is not a regular file is rebuilt, not read (real builds with TensorRT-RTX)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import conv_model, needs, recipe_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(project, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real CLI in a process of its own: a read that blocks fails the test instead of hanging it."""
    env = os.environ | {"PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "trtbuild", str(project.recipe), "--cache-dir", str(project.cache), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def object_files(project) -> list[bytes]:
    return [p.read_bytes() for p in (project.cache / "objects").glob("*/*")]


@pytest.fixture
def outside(project):
    """The model's weights as external data, moved to a folder beside the project's (another user's, /etc)."""
    project.write_model(conv_model(), save_as_external_data=True, location="conv.onnx.data", size_threshold=0)
    folder = project.root.parent / f"{project.root.name}-outside"
    folder.mkdir()
    os.replace(project.root / "conv.onnx.data", folder / "conv.onnx.data")
    project.write_recipe(recipe_dict("conv.onnx") | {"onnx": {"simplify": False}})
    return folder


def rewrite_location(project, location: str) -> None:
    import onnx

    model = onnx.load(str(project.model), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(project.model))


def test_external_data_linked_from_outside_the_models_folder_is_refused(project, outside):
    secret = (outside / "conv.onnx.data").read_bytes()
    (project.root / "conv.onnx.data").symlink_to(outside / "conv.onnx.data")
    result = cli(project)
    assert result.returncode == 2, result.stderr
    assert (f"{project.model}: external data 'conv.onnx.data' resolves to {outside / 'conv.onnx.data'}, outside the "
            f"model's folder {project.root}") in result.stderr
    assert "Traceback" not in result.stderr
    assert secret not in object_files(project)


def test_external_data_in_a_linked_folder_or_up_the_tree_is_refused(project, outside):
    (project.root / "weights").symlink_to(outside)
    for location in ("weights/conv.onnx.data", f"../{outside.name}/conv.onnx.data", str(outside / "conv.onnx.data")):
        rewrite_location(project, location)
        result = cli(project)
        assert result.returncode == 2, result.stderr
        assert f"external data {location!r} resolves to {outside / 'conv.onnx.data'}, outside" in result.stderr
    assert object_files(project) == []


def test_the_recipe_can_allow_external_data_from_outside(project, outside):
    (project.root / "conv.onnx.data").symlink_to(outside / "conv.onnx.data")
    recipe = recipe_dict("conv.onnx") | {"onnx": {"simplify": False}}
    recipe["source"]["allow_outside_files"] = True
    project.write_recipe(recipe)
    result = cli(project)
    assert result.returncode == 0, result.stderr


def test_savedmodel_folder_with_a_link_out_or_a_fifo_is_refused(project, outside):
    for module in ("tensorflow", "tf2onnx"):  # without them the recipe is refused first, for the framework
        needs(module)
    saved = project.root / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    (saved / "variables" / "variables.index").symlink_to(outside / "conv.onnx.data")
    project.write_recipe({"name": "tf", "source": {"framework": "tensorflow", "path": "saved"}})
    result = cli(project, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert (f"{project.recipe}:4: source.path: {saved / 'variables' / 'variables.index'} resolves to "
            f"{outside / 'conv.onnx.data'}, outside the model's folder {saved}") in result.stderr
    (saved / "variables" / "variables.index").unlink()
    os.mkfifo(saved / "variables" / "variables.data-00000-of-00001")
    result = cli(project, "--dry-run", timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{saved / 'variables' / 'variables.data-00000-of-00001'} is a FIFO, not a file" in result.stderr


def test_external_data_that_is_a_fifo_is_refused(project, outside):
    os.mkfifo(project.root / "conv.onnx.data")
    result = cli(project, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{project.model}: external data 'conv.onnx.data' is a FIFO, not a file" in result.stderr


def test_external_data_inside_the_folder_through_a_link_builds(project, outside):
    (project.root / "weights").mkdir()
    os.replace(outside / "conv.onnx.data", project.root / "weights" / "conv.onnx.data")
    (project.root / "conv.onnx.data").symlink_to("weights/conv.onnx.data")
    result = cli(project)
    assert result.returncode == 0, result.stderr


def test_cache_object_replaced_by_a_fifo_is_rebuilt(project):
    assert cli(project).returncode == 0
    plans = [p for p in (project.cache / "out").rglob("model.plan")]
    assert plans
    victim = max((project.cache / "objects").glob("*/*"), key=lambda p: p.stat().st_size)
    victim.unlink()
    os.mkfifo(victim)
    result = cli(project, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"cache object {victim} is not a regular file; removed, rebuilding" in result.stderr
    assert victim.is_file() and not victim.is_fifo()


def fifo_in_place_of(path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_cache_records_replaced_by_fifos_are_misses(project):
    """Action records, recipe records and state files: a FIFO or a link to /dev/zero in their place is read
    as a miss, without blocking."""
    assert cli(project).returncode == 0
    records = [*(project.cache / "actions").glob("*/*.json"), *(project.mine / "recipes").glob("*.json"),
               *(project.cache / "state").glob("*.json")]
    assert len(records) >= 5
    for i, path in enumerate(records):
        if i % 2:
            fifo_in_place_of(path)
        else:
            path.unlink()
            path.symlink_to("/dev/zero")
    result = cli(project, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "not a regular file" in result.stderr  # the action records' warning: rebuilding the step


@pytest.mark.parametrize("part", ["objects", "actions"])
def test_remote_files_replaced_by_fifos_are_not_read(project, tmp_path, part):
    remote = tmp_path / "remote"
    assert cli(project, "--remote", f"file://{remote}").returncode == 0
    for path in (remote / part).glob("*/*"):
        fifo_in_place_of(path)
    other = project.root / "machine-b"
    other.mkdir()
    for name in ("conv.onnx", "conv.yaml"):
        (other / name).write_bytes((project.root / name).read_bytes())
    env = os.environ | {"PYTHONPATH": REPO}
    result = subprocess.run([sys.executable, "-m", "trtbuild", str(other / "conv.yaml"), "--cache-dir", str(other / "cache"),
                             "--remote", f"file://{remote}"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    warning = "does not match its digest" if part == "objects" else "is not a regular file"
    assert f"{warning}; building locally" in result.stderr
