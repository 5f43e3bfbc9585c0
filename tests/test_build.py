"""End-to-end builds with real onnx-simplifier and real TensorRT-RTX engines."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from conftest import REPO, conv_model, recipe_dict, statuses
from trtbuild.store.hashing import digest_file


def test_builds_real_plan_then_everything_is_cached(project):
    code, report = project.build()
    assert code == 0 and report["ok"]
    assert statuses(report) == {"check": "built", "simplify": "built", "engine": "built"}
    engine = report["steps"][2]
    plan = engine["outputs"]["model.plan"]
    assert "/out/conv/tensorrt-rtx-" in plan and plan.endswith("-portable/model.plan")
    with open(plan, "rb") as f:
        assert len(f.read()) > 10_000
    meta = json.loads(open(engine["outputs"]["model.json"]).read())
    assert meta["backend"] == "tensorrt-rtx"
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 3, 16, 16],
                               "min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}]
    assert meta["outputs"][0]["name"] == "y" and meta["plan_bytes"] == len(open(plan, "rb").read())
    simplified = onnx.load(report["steps"][1]["outputs"]["model.onnx"])
    assert "BatchNormalization" not in {n.op_type for n in simplified.graph.node}  # folded into the conv

    verify = report["steps"][3]
    assert verify["step"] == "verify" and verify["status"] == "skipped"
    assert verify["reason"].startswith("running this engine needs a GPU with compute capability 8.x or 12.x")

    code, again = project.build()
    assert code == 0
    assert statuses(again) == {"check": "cached", "simplify": "cached", "engine": "cached"}
    assert again["steps"][2]["outputs"]["model.plan"] == plan


def test_changing_workspace_rebuilds_only_the_engine(project):
    project.build()
    project.write_recipe(recipe_dict("conv.onnx", workspace="512MiB"))
    code, dry = project.build("--dry-run")
    assert code == 0 and statuses(dry) == {"check": "cached", "simplify": "cached", "engine": "would-run"}
    assert dry["steps"][2]["reason"] == "params.workspace: 268435456 -> 536870912"
    code, report = project.build()
    assert statuses(report) == {"check": "cached", "simplify": "cached", "engine": "built"}


def test_new_model_bytes_rebuild_everything_downstream(project):
    project.build()
    project.write_model(conv_model(seed=1))
    code, dry = project.build("--dry-run")
    assert statuses(dry) == {"check": "would-run", "simplify": "would-run", "engine": "would-run"}
    assert dry["steps"][0]["reason"].startswith("inputs.model.(main) changed (conv.onnx: ")
    code, report = project.build()
    assert code == 0 and statuses(report) == {"check": "built", "simplify": "built", "engine": "built"}


def test_external_data_file_is_part_of_the_key(project):
    project.write_model(conv_model(), save_as_external_data=True, location="conv.onnx.data", size_threshold=0)
    code, report = project.build()
    assert code == 0 and statuses(report)["engine"] == "built"
    data = project.root / "conv.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[0] ^= 0x40  # new weights, same model file
    data.write_bytes(bytes(blob))
    code, report = project.build()
    assert code == 0
    assert statuses(report) == {"check": "built", "simplify": "built", "engine": "built"}
    assert "inputs.model.conv.onnx.data changed" in report["steps"][0]["reason"]


def test_engine_parses_external_data_when_not_simplified(project):
    project.write_model(conv_model(), save_as_external_data=True, location="conv.onnx.data", size_threshold=0)
    data = recipe_dict("conv.onnx")
    data["onnx"]["simplify"] = False
    project.write_recipe(data)
    code, report = project.build()
    assert code == 0 and statuses(report) == {"check": "built", "engine": "built"}


def test_new_target_gets_new_key_and_old_engine_stays_cached(project):
    code, first = project.build()
    old_plan = first["steps"][2]["outputs"]["model.plan"]
    old_digest = digest_file(old_plan)
    data = recipe_dict("conv.onnx")
    data["targets"] = ["tensorrt-rtx:sm86+sm120"]
    project.write_recipe(data)
    code, second = project.build()
    assert code == 0 and statuses(second) == {"check": "cached", "simplify": "cached", "engine": "built"}
    new_plan = second["steps"][2]["outputs"]["model.plan"]
    assert new_plan.endswith("-sm86+sm120/model.plan") and new_plan != old_plan
    assert second["steps"][2]["key"] != first["steps"][2]["key"]
    assert not Path(old_plan).exists()  # out/ shows what the recipe makes now, nothing stale
    project.write_recipe(recipe_dict("conv.onnx"))
    code, back = project.build()
    assert statuses(back)["engine"] == "cached"
    assert digest_file(old_plan) == old_digest


def test_other_backend_version_changes_the_engine_key(project, monkeypatch):
    project.build()
    from trtbuild.backends import target
    real = target.installed_version("tensorrt-rtx")
    target.installed_version.cache_clear()
    monkeypatch.setattr(target, "installed_version", lambda backend: "99.0" if backend == "tensorrt-rtx" else None)
    code, dry = project.build("--dry-run")
    assert statuses(dry) == {"check": "cached", "simplify": "cached", "engine": "would-run"}
    assert f"params.target.version: {real} -> 99.0" in dry["steps"][2]["reason"]
    assert dry["steps"][2]["target"] == "tensorrt-rtx-99.0-portable"


def test_two_recipes_in_parallel_share_identical_steps(project):
    data = recipe_dict("conv.onnx", optimization_level=1)
    data["name"] = "other"
    (project.root / "other.yaml").write_text(json.dumps(data))
    from trtbuild.commands.cli import main

    report = project.root / "r.json"
    assert main(["build", str(project.root), "-j", "2", "--cache-dir", str(project.cache), "--report", str(report)]) == 0
    status = {(s["recipe"], s["step"]): s["status"] for s in json.loads(report.read_text())["steps"]}
    # Same model and inputs: check and simplify are one action each, built once and shared.
    for step in ("check", "simplify"):
        assert sorted([status[("conv", step)], status[("other", step)]]) == ["built", "cached"]
    assert status[("conv", "engine")] == status[("other", "engine")] == "built"  # optimization levels differ
    assert (project.cache / "out" / "other" / "model.onnx").exists()


def test_no_code_path_uses_an_api_tensorrt_11_removed():
    """Full TensorRT cannot be installed here, so the paths only it takes are checked by reading them:
    none may call what TensorRT 11 removed (weak typing flags, calibrators, implicit batch)."""
    removed = ["BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.FP8", "BuilderFlag.BF16", "BuilderFlag.INT4",
               "PRECISION_CONSTRAINTS", "int8_calibrator", "IInt8", "quantization_flag", "max_workspace_size",
               "builder.build_engine", "platform_has_fast", "EXPLICIT_BATCH", "max_batch_size"]
    for path in sorted((REPO / "trtbuild").rglob("*.py")):
        text = path.read_text()
        if path.name.startswith("triton"):  # Triton's model configuration has a max_batch_size of its own
            text = text.replace("max_batch_size", "")
        used = [name for name in removed if name in text]
        assert not used, f"{path.relative_to(REPO)} uses {used}"
    import tensorrt_rtx as trt  # TensorRT-RTX, which builds every test engine, shares the removals

    assert not any(hasattr(trt.BuilderFlag, flag) for flag in ("FP16", "INT8", "FP8", "BF16"))
