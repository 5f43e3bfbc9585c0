"""The recipe schema (pydantic v2): fields, defaults, checks and the `trtbuild schema` JSON Schema.

The pydantic models are the single source of truth: validation, defaults, the JSON Schema and the
README's reference all come from them. Only a recipe file not validated before gets here (through
trtbuild.recipes.validation): importing pydantic and building these models is most of a no-op build's time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ByteSize, ConfigDict, Field, StrictInt, StrictStr, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from trtbuild.recipes.limits import MAX_DIM, MAX_NAME, MAX_SEED, MAX_STEP_TIMEOUT, MAX_TARGET, MAX_WORKSPACE
from trtbuild.recipes.shared import QUANTIZED_PRECISIONS, spec_dims
from trtbuild.backends.target import TARGET_PATTERN
from trtbuild.recipes.choices import BackendName, FrameworkName

DType = Literal["float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool"]
# Whole numbers are written as such: a bool, a string or a float is not read as one.
Dim = Annotated[StrictInt, Field(ge=-1, le=MAX_DIM)]
RangeDim = Annotated[StrictInt, Field(ge=1, le=MAX_DIM)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the model comes from. Paths are relative to the recipe file."""

    framework: FrameworkName = Field(
        description="onnx: an ONNX file. pytorch: an entrypoint or a TorchScript / ExportedProgram file. "
        "tensorflow: a SavedModel directory or a TF1 frozen graph (.pb). keras: a .keras / .h5 file. "
        "Another NAME: a framework module trtbuild_framework_NAME on Python's path (see Architecture)."
    )
    path: str | None = Field(None, description="Model file or directory, relative to the recipe.")
    entrypoint: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description='pytorch: "module:callable" returning a torch.nn.Module, e.g. "torchvision.models:resnet50".',
    )
    args: list[Any] = Field(default_factory=list, description="pytorch: positional arguments for the entrypoint.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="pytorch: keyword arguments for the entrypoint.")
    checkpoint: str | None = Field(None, description="pytorch: a state_dict file, loaded with weights_only=True.")
    exporter: Literal["auto", "dynamo", "torchscript"] = Field(
        "auto", description="pytorch: torch.onnx exporter. auto: dynamo (torch's default, torch.export-based) and, "
        "if it fails, torchscript; the report says which one made the model and why the other was not used."
    )
    python_path: list[str] = Field(
        default_factory=lambda: ["."], description="Directories (relative to the recipe) searched for the entrypoint's module."
    )
    deps: list[str] = Field(
        default_factory=list, description="Globs (relative to the recipe) of further files the model's code depends on."
    )
    outputs: list[str] = Field(
        default_factory=list, description="Output tensor names: for pytorch, the outputs to keep and their order, "
        "by name (a dict's keys, a tuple's default names), or new names for all of a tuple's by position; "
        "required for a TF1 frozen graph ('logits:0')."
    )
    allow_outside_files: bool = Field(
        False, description="onnx, tensorflow: let the model bring in files from outside its folder (ONNX external data, "
        "files of a SavedModel folder, reached by a path or a link). Off: refused, so a model cannot carry a host's "
        "file into the plan, the cache and the remote.")
    inputs_as_nchw: list[str] = Field(
        default_factory=list, description="tensorflow / keras: inputs to transpose from NHWC to NCHW in the ONNX model "
        "(the recipe's shapes for them are NCHW)."
    )

    @model_validator(mode="after")
    def _one_model(self) -> Source:
        fw = self.framework
        if fw == "pytorch":
            if (self.path is None) == (self.entrypoint is None):
                raise ValueError("pytorch needs exactly one of path (TorchScript / ExportedProgram) or entrypoint")
        elif self.path is None:
            raise ValueError(f"{fw} needs path")
        if fw == "pytorch" and self.path:
            if self.exporter == "dynamo" and not self.path.endswith(".pt2"):
                raise ValueError("exporter dynamo cannot export a TorchScript file: use exporter torchscript, "
                                 "an ExportedProgram (.pt2) or an entrypoint")
            if self.path.endswith(".pt2") and self.exporter == "torchscript":
                raise ValueError("an ExportedProgram (.pt2) is exported with exporter dynamo (or auto)")
            if self.path.endswith(".pt2") and self.checkpoint:
                raise ValueError("an ExportedProgram (.pt2) carries its own weights; checkpoint applies to entrypoints")
        torch_only = ("entrypoint", "checkpoint", "args", "kwargs")
        if fw != "pytorch" and any(k in self.model_fields_set for k in torch_only + ("exporter",)):
            raise ValueError(f"entrypoint, args, kwargs, checkpoint and exporter apply to pytorch only, not {fw}")
        if fw not in ("tensorflow", "keras") and self.inputs_as_nchw:  # tf2onnx's option
            raise ValueError("inputs_as_nchw applies to tensorflow and keras only")
        if fw == "tensorflow" and self.path.endswith(".pb") and not self.outputs:
            raise ValueError("a TF1 frozen graph (.pb) needs outputs: the output tensor names, e.g. ['logits:0']")
        return self


class InputSpec(_Strict):
    """One network input: what the recipe sets. Dynamic dims (-1) need a min/opt/max range for the
    optimization profile; with min/opt/max alone, dims where min == max are fixed and the others dynamic."""

    dtype: DType | None = Field(None, description="Default: the model's (ONNX, TensorFlow, Keras), float32 (PyTorch).")
    shape: list[Dim] | None = Field(
        None, description="Dims; -1 marks a dynamic dim. Default: from min/opt/max.")
    min: list[RangeDim] | None = None
    opt: list[RangeDim] | None = None
    max: list[RangeDim] | None = None

    @field_validator("shape")
    @classmethod
    def _no_zero_dims(cls, shape: list[int] | None) -> list[int] | None:
        if shape is not None and 0 in shape:
            raise ValueError("dims must be positive or -1 (dynamic)")
        return shape

    @model_validator(mode="after")
    def _check_profile(self) -> InputSpec:
        ranges = {k: getattr(self, k) for k in ("min", "opt", "max")}
        given = [k for k, v in ranges.items() if v is not None]
        missing = ", ".join(k for k in ranges if ranges[k] is None)
        if self.shape is None and len(given) != 3:
            raise ValueError(f"give shape (fixed dims, -1 for dynamic ones) or min, opt and max (missing: {missing})")
        shape = self.dims
        if -1 in shape and 0 < len(given) < 3:  # none at all: the ranges may be in `profiles` (Recipe checks)
            raise ValueError(f"shape {shape} has dynamic dims (-1): add {missing} (one value per dim)")
        for k in given:
            if len(ranges[k]) != len(shape):
                raise ValueError(f"{k} has rank {len(ranges[k])} but shape has rank {len(shape)}")
        for i, dim in enumerate(shape):
            if dim != -1:
                for k in given:
                    if ranges[k][i] != dim:
                        raise ValueError(f"{k}[{i}]={ranges[k][i]} but shape[{i}] is fixed at {dim}")
        if len(given) == 3:
            for i in range(len(shape)):
                lo, mid, hi = self.min[i], self.opt[i], self.max[i]
                if not lo <= mid <= hi:
                    raise ValueError(f"dim {i} needs min <= opt <= max, got min={lo} opt={mid} max={hi}")
        return self

    @property
    def dims(self) -> list[int]:
        return spec_dims(self)


class ProfileShapes(_Strict):
    """One input's shapes in one optimization profile."""

    min: list[Annotated[int, Field(ge=1)]]
    opt: list[Annotated[int, Field(ge=1)]]
    max: list[Annotated[int, Field(ge=1)]]

    @model_validator(mode="after")
    def _ordered(self) -> ProfileShapes:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"min, opt and max need one rank, got {len(self.min)}, {len(self.opt)}, {len(self.max)}")
        for i, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max)):
            if not lo <= mid <= hi:
                raise ValueError(f"dim {i} needs min <= opt <= max, got min={lo} opt={mid} max={hi}")
        return self


class Profile(_Strict):
    """One optimization profile of the engine: a shape range for every dynamic input."""

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description='What reports call it: "short", "prefill".')
    inputs: dict[str, ProfileShapes] = Field(
        min_length=1, description="min / opt / max per dynamic input, e.g. {input_ids: {min: [1, 1], opt: [1, 128], "
        "max: [8, 512]}}.")


class OnnxOptions(_Strict):
    opset: StrictInt | None = Field(
        None, ge=7, le=23, description="ONNX opset the exporters write. Default: 18 for pytorch, 17 for tensorflow "
        "and keras (each exporter's best-tested); ignored for onnx sources.")
    simplify: bool = Field(True, description="Run onnx-simplifier before building the engine.")
    simplify_check: Literal["quick", "thorough"] = Field(
        "quick", description="quick: the simplified and the original model run once on ONNX Runtime (batch 1) and "
        "must agree; thorough: onnx-simplifier's own check, 3 random inputs at the opt shapes (slower).")


class EngineOptions(_Strict):
    backend: BackendName = Field(
        "auto", description="auto: TensorRT if it imports and a GPU is present, else TensorRT-RTX. Another "
        "NAME: a backend module trtbuild_backend_NAME on Python's path (see Architecture)."
    )
    precision: Literal["fp32", "tf32", "fp16", "bf16", "int8", "fp8"] = Field(
        "fp32", description="fp32 and tf32 are builder settings; fp16 / bf16 convert the ONNX model, int8 and fp8 "
        "add calibrated Q/DQ nodes (fp8 engines need sm_89 or newer); the network is always built strongly typed.",
    )
    workspace: ByteSize = Field(ByteSize(1 << 30), description='Workspace memory-pool limit: "512MiB", "4GiB" or bytes.')
    optimization_level: StrictInt = Field(3, ge=0, le=5, description="Builder optimization level, 0 (fast build) to 5.")

    @field_validator("workspace")
    @classmethod
    def _positive(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("workspace must be positive")
        if value > MAX_WORKSPACE:
            raise ValueError(f"workspace {value.human_readable(separator=' ')} is more than TensorRT accepts "
                             f"(at most {ByteSize(MAX_WORKSPACE).human_readable(separator=' ')})")
        return value

    @field_validator("workspace", mode="before")
    @classmethod
    def _size_not_bool(cls, value: object) -> object:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError(f"workspace {value!r}: expected a size such as 512MiB, 4GiB or a number of bytes")
        return value


class Calibration(_Strict):
    """int8 / fp8 calibration data: a glob of .npy batches or a .npz, or a loader; never downloaded."""

    data: str | None = Field(
        None, description='"calib/*.npy" (one batch per file, single-input models) or "calib.npz" '
        "(arrays keyed by input name, first dim = samples; a .npz whose arrays differ in their first dim is one "
        "batch as it is), relative to the recipe.",
    )
    loader: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description='"module:callable" returning an iterable of {input name: array} batches '
        "(module found on source.python_path).",
    )
    batches: StrictInt | None = Field(
        None, ge=1, description="At most this many batches (files past them are not read, nor keyed; a warning says "
        "how many). Default: all the data gives.")
    method: Literal["minmax", "entropy", "percentile"] = "minmax"

    @model_validator(mode="after")
    def _one_source(self) -> Calibration:
        if (self.data is None) == (self.loader is None):
            raise ValueError("give exactly one of data or loader")
        return self


class PrecisionOptions(_Strict):
    """How fp16 / bf16 / int8 / fp8 models are made from the fp32 one, and the accuracy gate after it."""

    keep_io_types: bool = Field(True, description="fp16/bf16: keep float32 model inputs and outputs.")
    keep_fp32: list[str] = Field(
        default_factory=list, description="Op types (Softmax) or node names kept in fp32 / left unquantized."
    )
    calibration: Calibration | None = Field(None, description="Required for int8 and fp8.")
    max_relative_error: float | None = Field(
        None, gt=0, description="Accuracy gate and engine verify: largest allowed ||out - fp32 out|| / ||fp32 out|| "
        "per output. Default: tf32 0.01, fp16 0.01, bf16 0.05, int8 0.1, fp8 0.15; fp32 engines are verified "
        "with parity.atol / rtol instead.",
    )


class OutputTolerance(_Strict):
    """Tolerances of one output, overriding parity's."""

    atol: float | None = Field(None, ge=0, description="Absolute tolerance of this output.")
    rtol: float | None = Field(None, ge=0, description="Relative tolerance of this output.")
    max_relative_error: float | None = Field(None, ge=0, description="Relative L2 error that passes this output.")


class Parity(_Strict):
    """Framework vs ONNX Runtime on the same inputs, after export (framework sources only)."""

    enabled: bool = Field(True, description="Compare the exported ONNX model with the source framework.")
    atol: float = Field(1e-4, ge=0, description="Absolute tolerance.")
    rtol: float = Field(1e-3, ge=0, description="Relative tolerance: |onnx - framework| <= atol + rtol * |framework|.")
    max_relative_error: float = Field(
        1e-5, ge=0, description="An output outside atol / rtol still passes when ||onnx - framework|| / ||framework|| "
        "is within this: float reassociation moves a few elements of a correct export (0: elementwise only).")
    outputs: dict[str, OutputTolerance] = Field(
        default_factory=dict, description="Per-output tolerances by output name, e.g. {boxes: {atol: 0.01}}.")
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED, description="Seed of the random inputs.")
    data: str | None = Field(
        None, description="Inputs to use instead of random ones: a .npz keyed by input name, relative to the recipe."
    )


class Recipe(_Strict):
    """A trtbuild recipe: one model, how to turn it into ONNX, and how to build its engine."""

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME, description="Recipe name; names the output directory.")
    source: Source
    inputs: dict[str, InputSpec] = Field(
        default_factory=dict, description="Network inputs by tensor name: only what the recipe sets (dynamic dims "
        "and their ranges, or an override). Inputs left out keep the model's static shape and type; "
        "pytorch sources list every input (the shapes to export with).")
    profiles: list[Profile] = Field(
        default_factory=list, validate_default=True,
        description="Several optimization profiles in one engine, in index order (a runtime selects one by index: "
        "TensorRT's set_optimization_profile_async, Triton's instance_group.profile). Each lists every dynamic input "
        "with min / opt / max; `inputs` then gives dtypes and shapes (-1 for dynamic dims) but no ranges. "
        "Default: one profile from the inputs' min / opt / max.")
    onnx: OnnxOptions = OnnxOptions()
    parity: Parity = Parity()
    precision: PrecisionOptions = PrecisionOptions()
    engine: EngineOptions = EngineOptions()
    step_timeout: float = Field(
        default=6 * 3600, gt=0, le=MAX_STEP_TIMEOUT, allow_inf_nan=False, description="Seconds any one step of this "
        "recipe may run before its worker is killed and the step fails (a hung converter, calibration loader or "
        "build); default 6 hours; --step-timeout overrides it. Not part of any key.")
    steps: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=MAX_NAME)], Any] = Field(
        default_factory=dict, description="Plug-in step kinds to run as well, by name, each with its params "
        "(validated by the kind itself): a kind NAME is the module trtbuild_step_NAME on the Python path. "
        "See the architecture page, Adding a step kind.")
    targets: list[Annotated[str, Field(pattern=TARGET_PATTERN, max_length=MAX_TARGET)]] = Field(
        default_factory=list,
        description='Engines to build, each "BACKEND[:ARCH]": "tensorrt-rtx" (portable), "tensorrt-rtx:sm86+sm120", '
        '"tensorrt:sm86" (needs that GPU). Default: one target from engine.backend.',
    )

    @field_validator("step_timeout", mode="before")
    @classmethod
    def _seconds_not_yes(cls, value):
        if isinstance(value, bool):  # YAML's true / yes would be 1 second
            raise ValueError(f"expected a number of seconds, not {str(value).lower()}")
        return value

    @field_validator("profiles")
    @classmethod
    def _profiles_cover_inputs(cls, profiles: list[Profile], info: ValidationInfo) -> list[Profile]:
        """Ranges live in `inputs` (one profile) or in `profiles`, never both; every profile gives the same
        inputs, all the dynamic ones, with the ranks and fixed dims `inputs` says. Errors point at their key."""
        inputs = info.data.get("inputs")
        if inputs is None:  # `inputs` itself is invalid: reported already
            return profiles
        for name, spec in inputs.items():
            ranged = [k for k in ("min", "opt", "max") if getattr(spec, k) is not None]
            if profiles and ranged:
                _fail(("inputs", name, ranged[0]), f"inputs.{name}.{ranged[0]}: with profiles, each profile gives the "
                      f"ranges (profiles[i].inputs.{name}); keep only dtype and shape here")
            if not profiles and -1 in spec.dims and not ranged:
                _fail(("inputs", name, "shape"), f"inputs.{name}.shape: shape {spec.dims} has dynamic dims (-1): add "
                      "min, opt and max (one value per dim), or list optimization profiles under profiles")
        names: dict[str, int] = {}
        for i, profile in enumerate(profiles):
            if profile.name in names:
                _fail(("profiles", i, "name"), f"profiles[{i}].name: {profile.name!r} is also the name of "
                      f"profiles[{names[profile.name]}]; give each profile its own name")
            names[profile.name] = i
            dynamic = [n for n, spec in inputs.items() if -1 in spec.dims]
            expected = list(profiles[0].inputs) if i else dynamic
            missing = [n for n in dict.fromkeys(expected + dynamic) if n not in profile.inputs]
            if missing:
                _fail(("profiles", i, "inputs"), f"profiles[{i}] ({profile.name}): inputs: missing {', '.join(missing)}"
                      " (every profile gives every dynamic input its min / opt / max)")
            extra = [n for n in profile.inputs if i and n not in profiles[0].inputs]
            if extra:
                _fail(("profiles", i, "inputs", extra[0]), f"profiles[{i}] ({profile.name}): inputs.{extra[0]} is not "
                      f"in profiles[0] ({profiles[0].name}): every profile gives the same inputs")
            for name, shapes in profile.inputs.items():
                if name not in inputs:
                    continue  # a dynamic input of the model that `inputs` does not list: the model has its shape
                dims = inputs[name].dims
                at = ("profiles", i, "inputs", name)
                if len(shapes.min) != len(dims):
                    _fail(at, f"profiles[{i}] ({profile.name}): inputs.{name}: rank {len(shapes.min)}, but "
                          f"inputs.{name} has shape {dims} (rank {len(dims)})")
                for d, dim in enumerate(dims):
                    if dim != -1 and not shapes.min[d] == shapes.opt[d] == shapes.max[d] == dim:
                        _fail(at, f"profiles[{i}] ({profile.name}): inputs.{name}: dim {d} is fixed at {dim} by "
                              f"inputs.{name}.shape, but the profile gives min={shapes.min[d]} opt={shapes.opt[d]} "
                              f"max={shapes.max[d]}")
        return profiles

    @model_validator(mode="after")
    def _quantized_has_calibration(self) -> Recipe:
        if self.engine.precision in QUANTIZED_PRECISIONS and self.precision.calibration is None:
            raise ValueError(f"engine.precision {self.engine.precision} needs precision.calibration "
                             "(data: 'calib/*.npy' or a .npz, or loader: 'module:callable')")
        return self

    @model_validator(mode="after")
    def _dynamo_opset(self) -> Recipe:
        if self.source.framework == "pytorch" and self.source.exporter == "dynamo" and (self.onnx.opset or 18) < 18:
            raise ValueError(f"onnx.opset {self.onnx.opset}: the dynamo exporter writes opset 18 and newer; "
                             "use source.exporter torchscript (or auto) for older opsets")
        return self

    @model_validator(mode="after")
    def _pytorch_lists_inputs(self) -> Recipe:
        if self.source.framework == "pytorch" and not self.inputs:
            raise ValueError("a pytorch source needs inputs: each forward() argument in order, with its shape "
                             "(e.g. inputs: {x: {shape: [1, 3, 224, 224]}})")
        return self

    @model_validator(mode="after")
    def _nchw_inputs_exist(self) -> Recipe:
        unknown = [n for n in self.source.inputs_as_nchw if n not in self.inputs]
        if unknown:
            raise ValueError(f"source.inputs_as_nchw names {unknown}, which are not in inputs")
        if any(len(self.inputs[n].dims) != 4 for n in self.source.inputs_as_nchw):
            raise ValueError("inputs_as_nchw inputs must have rank 4")
        return self


def _fail(at: tuple, message: str):
    """A validation error at key path `at` (a list index is an int), however deep the validator sits."""
    raise PydanticCustomError("recipe_at", "{message}", {"message": message, "at": at})


def json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtbuild recipe"
    return schema
