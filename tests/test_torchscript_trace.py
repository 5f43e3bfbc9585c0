"""The TorchScript export (opset below 18) with dynamic dims: torch.export checks the dims beside the
trace (in a forked copy of the worker on Linux), and without a parity reference to take from the
trace, the trace runs at size 2 where torch.export's guards say that takes the path opt takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, build_recipe, nets_module, statuses

torch = pytest.importorskip("torch")

NETS = '''
import torch


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # the same weights in the worker and in the test
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class BigBatch(Conv):
    """Takes another path above batch 4: a trace at batch 2 would keep the wrong one for opt."""

    def forward(self, x):
        y = super().forward(x)
        return y * 2.0 if x.shape[0] > 4 else y


SLOW = False  # set by a test: forward() then takes a minute (torch.export runs it too)


class Slow(Conv):
    def forward(self, x):
        if SLOW:
            import time
            time.sleep(60)
        return super().forward(x)


class PerSample(Conv):
    """Divides by the batch size made a tensor: torch.export records no guard, the tracer warns of a constant."""

    def forward(self, x):
        return super().forward(x) / torch.tensor(x.shape[0], dtype=torch.float32)
'''

X = {"shape": [-1, 3, 16, 16], "min": [1, 3, 16, 16], "opt": [8, 3, 16, 16], "max": [16, 3, 16, 16]}


@pytest.fixture
def nets(tmp_path, monkeypatch):
    yield from nets_module(NETS, tmp_path, monkeypatch)


def recipe(root: Path, entrypoint: str, parity: bool = False, exporter: str | None = None) -> Path:
    path = root / f"{entrypoint.split(':')[1].lower()}-{exporter or 'auto'}-{parity}.yaml"
    data = {"name": path.stem, "source": {"framework": "pytorch", "entrypoint": entrypoint,
                                          **({"exporter": exporter} if exporter else {})},
            "inputs": {"x": X}, "onnx": {"opset": 17, "simplify": False}, "parity": {"enabled": parity},
            "engine": {"backend": "tensorrt-rtx"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def export_of(recipe_path: Path) -> tuple[dict, Path]:
    code, report = build_recipe(recipe_path)
    assert code == 0, report
    assert statuses(report)["export"] == "built"
    export = report["steps"][0]
    return export, Path(export["outputs"]["model.onnx"])


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_without_a_reference_the_trace_runs_at_2_and_writes_the_model_a_trace_at_opt_writes(nets):
    small, small_model = export_of(recipe(nets, "nets:Conv"))
    assert small["meta"]["exporter"] == "torchscript"
    assert small["meta"]["traced_at"] == {"x": [2, 3, 16, 16]} and "size_guards" not in small["meta"]
    at_opt, opt_model = export_of(recipe(nets, "nets:Conv", exporter="torchscript"))  # traces at opt, unchecked
    assert "traced_at" not in at_opt["meta"]
    assert small_model.read_bytes() == opt_model.read_bytes()


def test_a_model_that_branches_on_the_batch_is_traced_again_at_opt(nets):
    export, model = export_of(recipe(nets, "nets:BigBatch"))
    assert "traced_at" not in export["meta"]
    assert export["meta"]["size_guards"] == ["x.size()[0] > 4"]  # what the ONNX model assumes, in the report
    assert "the guards do not hold at size 2; tracing again at opt" in Path(export["log"]).read_text()
    from nets import BigBatch, Conv

    net = BigBatch().eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
        plain = Conv.forward(net, torch.from_numpy(x)).numpy()
    assert not np.allclose(expected, plain)  # the branch matters at opt
    np.testing.assert_allclose(run_onnx(model, x), expected, rtol=1e-4, atol=1e-5)  # opt's branch is kept


def test_a_trace_the_tracer_warns_about_is_traced_again_at_opt(nets):
    export, _ = export_of(recipe(nets, "nets:PerSample"))
    assert "traced_at" not in export["meta"] and "size_guards" not in export["meta"]
    log = Path(export["log"]).read_text()
    assert "TracerWarning" in log and "the tracer warned (above); tracing again at opt" in log


def test_with_a_parity_reference_the_trace_stays_at_opt(nets):
    export, _ = export_of(recipe(nets, "nets:Conv", parity=True))
    assert export["meta"]["exporter"] == "torchscript" and "traced_at" not in export["meta"]
    assert "reference.npz" in export["outputs"]


CHECKS = """
import json, os, torch
from dataclasses import asdict
from trtbuild.frontends import ModelSpec, pytorch, torch_dims

X = {x}
spec = ModelSpec(framework="pytorch", opset=17, inputs={{"x": X | {{"dtype": "float32"}}}}, entrypoint="nets:BigBatch")
model = pytorch.load(spec)
small = torch_dims.small_shapes(spec)
with torch.no_grad():
    pending = torch_dims.start(model, spec, small)
    forked = pending.verdict()
    here = torch_dims.check(model, spec, small)
    at_6 = torch_dims.check(model, spec, {{"x": [6, 3, 16, 16]}})
print(json.dumps({{"small": small, "forked": asdict(forked), "here": asdict(here), "at_6": at_6.small_ok,
                  "fork_expected": pending.forked or len(os.sched_getaffinity(0)) < 2 or torch.cuda.is_initialized()}}))
"""


def test_the_forked_check_gives_the_verdict_the_check_here_gives(nets):
    # In a process of its own: torch.export in one that has loaded TensorFlow (other tests) crashes in its triton import.
    done = subprocess.run([sys.executable, "-c", CHECKS.format(x=X)], cwd=nets, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": os.pathsep.join([str(nets), str(REPO)])})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["small"] == {"x": [2, 3, 16, 16]}
    assert found["fork_expected"]  # forked wherever it may be (Linux, a second core, no CUDA in use)
    expected = {"refused": "", "failed": "", "log": "", "small_ok": False, "guards": ["x.size()[0] > 4"]}
    assert found["forked"] == found["here"] == expected  # x.size()[0] > 4: false at 2
    assert found["at_6"]  # and true at 6


SLOW_CHECK = """
import time, torch, nets
from trtbuild.frontends import ModelSpec, pytorch, torch_dims

spec = ModelSpec(framework="pytorch", opset=17, inputs={{"x": {x} | {{"dtype": "float32"}}}}, entrypoint="nets:Slow")
model = pytorch.load(spec)
nets.SLOW = True
print(torch_dims.start(model, spec, None).forked, flush=True)
time.sleep(120)
"""


def _state(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    states = {int(p.name): _state(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    return [child for child, state in states.items() if state and state[0] != "Z" and state[1] == pid]


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or len(os.sched_getaffinity(0)) < 2,
                    reason="forks on Linux with a second core")
def test_the_forked_check_ends_with_the_worker_that_started_it(nets):
    """A worker killed (a step timeout, a stop) takes its check along instead of leaving it to finish."""
    worker = subprocess.Popen([sys.executable, "-c", SLOW_CHECK.format(x=X)], cwd=nets, stdout=subprocess.PIPE,
                              text=True, env=os.environ | {"PYTHONPATH": os.pathsep.join([str(nets), str(REPO)])})
    try:
        assert worker.stdout.readline().strip() == "True"  # forked: Linux, two cores, no CUDA in use
        [copy] = _children(worker.pid)
    finally:
        worker.kill()
        worker.wait()
    for _ in range(100):
        if (_state(copy) or ("Z", 0))[0] == "Z":  # gone, or dead and not yet reaped
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the check's process {copy} outlived its worker")
