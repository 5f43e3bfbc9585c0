"""Each step kind declares what it reads (READS); its key is made of exactly that, and its code reads
nothing else of the recipe."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

from conftest import recipe_dict
from trtbuild.store.cache import Cache
from trtbuild.planning.graph import Step, compile_recipe
from trtbuild.recipes.loader import load_recipe
from trtbuild.steps import KINDS, load_kind


def _subscripts(module, container: str) -> set[str]:
    """String keys the module reads from `job.<container>` (or a local alias of it): x["k"], x.get("k")."""
    tree = ast.parse(inspect.getsource(module))
    aliases = {container}
    for node in ast.walk(tree):  # p = job.params
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute)
                and node.value.attr == container and isinstance(node.targets[0], ast.Name)):
            aliases.add(node.targets[0].id)

    def is_container(value) -> bool:
        return ((isinstance(value, ast.Attribute) and value.attr == container)
                or (isinstance(value, ast.Name) and value.id in aliases))

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_container(node.value) and isinstance(node.slice, ast.Constant):
            found.add(node.slice.value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and is_container(node.func.value) and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_step_code_reads_only_what_it_declares(kind):
    module = load_kind(kind)
    reads = module.READS
    assert _subscripts(module, "params") <= set(reads.params)
    assert _subscripts(module, "inputs") <= set(reads.files) | {"inputs"}  # params["inputs"]: the input specs
    assert _subscripts(module, "context") <= set(reads.context)
    assert _subscripts(module, "params"), "the scan found no parameter reads: it no longer sees the step's code"


def test_a_step_given_an_undeclared_value_is_refused(project):
    [check] = [s for s in compile_recipe(load_recipe(project.recipe), Cache(project.cache)) if s.name == "check"]
    with pytest.raises(TypeError, match=r"check step: not what its READS declares: params \['workspace'\]"):
        Step(check.recipe, "check", check.kind, check.params | {"workspace": 1}, check.inputs, check.publish_dir)
    with pytest.raises(TypeError, match=r"context \['python_path'\]"):
        Step(check.recipe, "check", check.kind, check.params, check.inputs, check.publish_dir,
             context={"python_path": []})


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_compiled_steps_carry_exactly_their_declared_params(project, precision):
    """Every step of a recipe with parity data and calibration shards: params are the declaration."""
    data = recipe_dict("conv.onnx", precision=precision)
    np.savez(project.root / "calib.npz", x=np.zeros((2, 3, 16, 16), np.float32))
    if precision == "int8":
        data["precision"] = {"calibration": {"data": "calib.npz", "batches": 1}}
    project.write_recipe(data)
    steps = compile_recipe(load_recipe(project.recipe), Cache(project.cache))
    assert {s.name for s in steps} >= {"check", "simplify", "engine", "verify"}
    for step in steps:
        assert set(step.params) == set(step.kind.READS.params), step.name
        assert set(step.inputs) <= set(step.kind.READS.files), step.name
