"""A Triton Python-backend model that serves TensorRT-RTX plans (written by `trtbuild triton` as
REPOSITORY/NAME/VERSION/model.py; trtbuild itself never imports it).

Triton's TensorRT backend is built on full TensorRT and cannot load TensorRT-RTX plans, so this model
runs them with the TensorRT-RTX runtime (through Polygraphy) in Triton's Python backend. Each model
instance asks CUDA for its GPU's compute capability and loads the plan built for it, else the
portable plan where that covers it (8.x and 12.x; fp8 plans only from 8.9); on any other GPU (Hopper,
Turing, or an fp8 plan on an sm86 card) the instance refuses to load with the reason, never running a
plan its GPU cannot. plans.json beside this file says which plan serves which compute capability.

Needs, in the Python backend's environment: tensorrt-rtx (the version that built the plans),
polygraphy and numpy.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORTABLE_MAJORS = ("8", "12")  # where a portable TensorRT-RTX plan runs (not 9.x: Hopper)


def choose_plan(plans: dict, cc: str) -> str:
    """The plan file (plans.json's "plans") that runs on a GPU of compute capability `cc`; ValueError
    saying why when none does."""
    if plans.get("precision") == "fp8" and tuple(map(int, cc.split("."))) < (8, 9):
        raise ValueError(f"these are fp8 plans and this GPU (compute capability {cc}) has no fp8 tensor cores "
                         "(8.9 or newer needed)")
    files = plans["plans"]
    if cc in files:
        return files[cc]
    if "portable" in files and cc.split(".")[0] in PORTABLE_MAJORS:
        return files["portable"]
    offered = sorted(k for k in files if k != "portable") + (["portable (8.x, 12.x)"] if "portable" in files else [])
    raise ValueError(f"no TensorRT-RTX plan of this model runs on compute capability {cc}: built for "
                     f"{', '.join(offered) or 'nothing'} (TensorRT-RTX plans do not run on Hopper, 9.0)")


def compute_capability(device: int) -> str:
    """The compute capability of CUDA device `device`, from the CUDA driver (no framework needed)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    handle, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    for call in (lambda: cuda.cuInit(0), lambda: cuda.cuDeviceGet(ctypes.byref(handle), device),
                 lambda: cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle),  # ..._COMPUTE_CAPABILITY_MAJOR
                 lambda: cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)):  # ..._MINOR
        if call() != 0:
            raise RuntimeError(f"the CUDA driver could not describe GPU {device}")
    return f"{major.value}.{minor.value}"


def choose_profile(profiles: list, shapes: dict) -> int:
    """The first optimization profile whose min..max ranges hold every input's shape."""
    for profile in profiles:
        if all(all(lo <= n <= hi for lo, n, hi in zip(r["min"], shapes[name], r["max"]))
               for name, r in profile["inputs"].items() if name in shapes):
            return profile["index"]
    raise ValueError(f"input shapes {shapes} fit none of the engine's optimization profiles")


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        plans = json.loads((HERE / "plans.json").read_text())
        device = int(args.get("model_instance_device_id") or 0)
        cc = compute_capability(device)
        try:
            plan = choose_plan(plans, cc)
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{args.get('model_name')}: {exc}") from None
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"  # Polygraphy drives TensorRT-RTX, not TensorRT
        import tensorrt_rtx
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        if tensorrt_rtx.__version__ != plans["backend_version"]:
            raise pb_utils.TritonModelException(
                f"{args.get('model_name')}: the plans were built with TensorRT-RTX {plans['backend_version']}, and "
                f"this Python backend has {tensorrt_rtx.__version__}: install tensorrt-rtx=={plans['backend_version']}")
        self.profiles = plans.get("profiles") or []
        self.outputs = plans["outputs"]
        self.runner = TrtRunner(EngineFromBytes((HERE / plan).read_bytes()))
        self.runner.activate()
        self.profile = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {name: self.pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                         for name in self.runner.get_input_metadata()}
                if len(self.profiles) > 1:
                    wanted = choose_profile(self.profiles, {n: a.shape for n, a in feeds.items()})
                    if wanted != self.profile:
                        self.runner.set_profile(wanted)
                        self.profile = wanted
                outputs = self.runner.infer(feeds, copy_outputs_to_host=True)
                responses.append(self.pb_utils.InferenceResponse(
                    [self.pb_utils.Tensor(name, outputs[name]) for name in self.outputs]))
            except Exception as exc:  # one bad request fails alone
                responses.append(self.pb_utils.InferenceResponse(error=self.pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        self.runner.deactivate()
