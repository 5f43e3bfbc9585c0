"""The engine's parser gets a model's external weights from memory maps whose pages are dropped while the
builder runs (trtbuild/backends/weight_maps.py): the plan is the one parse_from_file builds, byte for byte;
a data file too short for its tensors fails the step with a message that says so."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import statuses

pytest.importorskip("tensorrt_rtx")

ROWS = 48
# One build in a fresh process (the first build in a process is the reproducible one): the plan's digest.
BUILD = """
import hashlib, sys
from pathlib import Path
import tensorrt_rtx as trt
import trtbuild.backends.weight_maps as weight_maps
from trtbuild.backends.engine import build_engine
from trtbuild.backends.target import Target
model, plan, mode = sys.argv[1:]
weight_maps._CAN_DROP = mode == "map"
shapes = {"x": {"min": [1, %d], "opt": [2, %d], "max": [4, %d]}}
build_engine(Path(model), Path(plan), Target("tensorrt-rtx", trt.__version__, ()), [{"name": None, "inputs": shapes}],
             1 << 28, 0, None)
print(hashlib.sha256(Path(plan).read_bytes()).hexdigest())
""" % (ROWS, ROWS, ROWS)


def two_file_model(folder: Path) -> Path:
    """x -> MatMul w1 -> Add b1 -> MatMul w2 -> Add b2 -> y, with b1 inline and w1, b2 in a.data, w2 in b.data,
    each after a few bytes of padding (offsets that are not aligned), w2 without a length (to the file's end)."""
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal(s).astype(np.float32)
              for n, s in (("w1", (ROWS, ROWS)), ("b1", ROWS), ("w2", (ROWS, ROWS)), ("b2", ROWS))}
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    files = {"a.data": bytearray(), "b.data": bytearray()}
    for tensor, location in ((inits[0], "a.data"), (inits[2], "b.data"), (inits[3], "a.data")):
        data = files[location]
        data += b"\x01\x02\x03"
        entries = {"location": location, "offset": str(len(data))}
        if tensor.name != "w2":
            entries["length"] = str(len(tensor.raw_data))
        data += tensor.raw_data
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in entries.items():
            tensor.external_data.add(key=key, value=value)
    for name, data in files.items():
        (folder / name).write_bytes(bytes(data))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("MatMul", ["a1", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", ROWS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", ROWS])], inits)
    path = folder / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def build(model: Path, mode: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", BUILD, str(model), str(model.parent / f"{mode}.plan"), mode],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


def test_weights_from_two_mapped_files_build_the_plan_parse_from_file_builds(tmp_path):
    model = two_file_model(tmp_path)
    plain, plain_log = build(model, "file")
    mapped, mapped_log = build(model, "map")
    assert "read from memory maps" not in plain_log
    assert "trtbuild: 3 external weights (0.0 MiB) read from memory maps" in mapped_log  # w1, w2, b2; b1 is inline
    assert mapped == plain


def test_the_maps_pages_leave_resident_memory_when_dropped(tmp_path):
    from trtbuild.backends.weight_maps import WeightMaps

    if not Path("/proc/self/smaps").exists():
        pytest.skip("no /proc/self/smaps here")
    model = two_file_model(tmp_path)
    (tmp_path / "b.data").write_bytes((tmp_path / "b.data").read_bytes() + bytes(4 << 20))  # 1024 pages more
    with WeightMaps(model) as weights:
        assert [(n, p.name) for n, p, *_ in weights.map_files()] == [("w1", "a.data"), ("w2", "b.data"), ("b2", "a.data")]
        view = weights._maps[tmp_path / "b.data"]
        assert sum(view[i] for i in range(0, len(view), 4096)) >= 0  # reads every page
        assert resident_kib(tmp_path / "b.data") >= 4096
        weights.drop()
        assert resident_kib(tmp_path / "b.data") == 0
        assert hashlib.sha256(view[:]).digest() == hashlib.sha256((tmp_path / "b.data").read_bytes()).digest()


def resident_kib(path: Path) -> int:
    """Resident kB of this process's mappings of `path`, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's first line: addresses, ..., its file
            inside = line.endswith(" " + str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_a_truncated_data_file_fails_the_engine_step_clearly(project, monkeypatch, capsys):
    """A data file shorter than its tensors: the engine step fails (exit 1) naming the tensor, the file and
    its size, and says what to do; no traceback."""
    monkeypatch.setenv("TRTBUILD_SIMPLIFY_MAX_WEIGHTS", "1KiB")  # the engine reads the model where it is
    two_file_model(project.root).rename(project.model)
    data = project.root / "a.data"
    data.write_bytes(data.read_bytes()[:-10])
    project.write_recipe({"name": "conv", "source": {"framework": "onnx", "path": "conv.onnx"},
                          "inputs": {"x": {"dtype": "float32", "shape": [-1, ROWS], "min": [1, ROWS],
                                           "opt": [2, ROWS], "max": [4, ROWS]}},
                          "engine": {"backend": "tensorrt-rtx", "workspace": "256MiB", "optimization_level": 0}})
    code, report = project.build()
    assert code == 1
    assert statuses(report)["engine"] == "failed"
    error = next(s for s in report["steps"] if s["step"] == "engine")["error"]
    size = data.stat().st_size
    assert error == (f"{project.model}: initializer 'b2' is bytes {size - ROWS * 4 + 10} to {size + 10} of its external "
                     f"data file a.data, which holds {size} bytes: the data file is truncated or belongs to another "
                     "model; save the model and its data again")
    shown = capsys.readouterr().err
    assert error.splitlines()[0] in shown and "Traceback" not in shown
