"""What a step kind's plan() is handed: one recipe's facts, the steps planned so far, and the helpers that
make steps and their inputs. Step kinds (trtbuild.steps) plan themselves with it and import nothing of
planning: imports flow from planning to the steps, never back."""

from __future__ import annotations

from pathlib import Path

from trtbuild.errors import RecipeError, UsageError
from trtbuild.planning import sources
from trtbuild.planning.nodes import Pick, SourceFiles, Step
from trtbuild.planning.profiles import engine_profiles, profile_opts, warn_uncalibrated, with_profile_ranges
from trtbuild.planning.profiles import ranges as shape_ranges
from trtbuild.steps import load_kind
from trtbuild.frontends.registry import framework as framework_of
from trtbuild.recipes.shared import line_for

DEFAULT_MAX_RELATIVE_ERROR = {"tf32": 0.01, "fp16": 0.01, "bf16": 0.05, "int8": 0.1, "fp8": 0.15}


class Planning:
    """One recipe being planned. A step kind's plan(p) reads the recipe (p.recipe, p.loaded), the inputs'
    specs (p.inputs, p.read), the model as it stands (p.model, p.model_after) and the steps planned so
    far (p.first, p.all, p.gates); it makes steps with p.step, p.pick and p.files, hands a transformed
    model on by setting p.model, and blames recipe values with p.where / p.recipe_error."""

    sources = sources  # where a recipe's files are found: onnx_files, tree_files, module_file, user_imports...
    warn_uncalibrated = staticmethod(warn_uncalibrated)
    SourceFiles = SourceFiles  # what the user's files are (isinstance(p.model, p.SourceFiles))

    def __init__(self, loaded, cache, backend: str | None, targets: list[str] | None, machine):
        self.loaded, self.recipe, self.cache, self.machine = loaded, loaded.recipe, cache, machine
        self._backend, self._targets, self._resolved = backend, targets, None
        recipe = self.recipe
        self.out = Path(recipe.name)
        # PyTorch models carry no input types; the other sources' types come from the model when not set.
        default_dtype = None if recipe.source.framework == "onnx" else framework_of(recipe.source.framework).input_dtype
        inputs = {name: _input_params(spec, default_dtype) for name, spec in recipe.inputs.items()}
        self.profiles = engine_profiles(recipe)
        if self.profiles:  # the steps that run the model once do so at the first profile's opt shapes
            inputs = with_profile_ranges(inputs, self.profiles, default_dtype)
        self.inputs = inputs
        self.ranges = shape_ranges(inputs, self.profiles)
        self.profile_opts = profile_opts(self.profiles)
        self.parity_data = {"data": self.files([loaded.resolve(recipe.parity.data)])} if recipe.parity.data else {}
        # The model the next step that transforms it reads; an export step sets it for framework sources.
        self.model: SourceFiles | Step | Pick | None = None
        if recipe.source.framework == "onnx":
            self.model = self.files(sources.onnx_files(loaded.source_path(), cache.stat_cache, loaded.where(
                "source", "path"), recipe.source.allow_outside_files))
        self.planned: dict[str, list[Step]] = {}
        self._models: dict[str, SourceFiles | Step | Pick | None] = {}

    # --- what the recipe asks for

    @property
    def targets(self) -> list[tuple[str, object, str | None]]:
        """(spec, Target, why this machine cannot build it) for each engine to build: --target beats
        --backend beats the recipe's targets beats engine.backend."""
        if self._resolved is None:
            given = self._targets or self._backend
            specs = self._targets or ([self._backend] if self._backend else None) or self.recipe.targets \
                or [self.recipe.engine.backend]
            self._resolved = [(spec, *self._resolve(spec, given)) for spec in specs]
        return self._resolved

    @property
    def max_relative_error(self) -> float | None:
        """Lossy precisions are judged by relative L2 error against fp32, in the accuracy gate and in verify."""
        return self.recipe.precision.max_relative_error or DEFAULT_MAX_RELATIVE_ERROR.get(self.recipe.engine.precision)

    def read(self, *fields: str) -> dict:
        """The part of each input spec a step reads: only that goes into its key (a new max rebuilds the engine,
        not what runs the model at opt; a step that runs the model at its opt shape reruns when opt changes)."""
        return {name: {f: spec[f] for f in fields} for name, spec in self.inputs.items()}

    def where(self) -> dict[str, str]:
        """`file:line` of the recipe values a step may blame, by dotted key ("recipe": the file itself)."""
        loaded, recipe = self.loaded, self.recipe
        keys = [("source",), *(("source", k) for k in recipe.source.given), ("inputs",),
                *(("inputs", n) for n in recipe.inputs), *(("inputs", n, "dtype") for n in recipe.inputs)]
        file, lines = str(loaded.file), loaded.lines  # as loaded.where says, once per recipe
        return {".".join(k): f"{file}:{line_for(lines, k)}" for k in keys} | {"recipe": file}

    def recipe_error(self, key: tuple, message: str) -> RecipeError:
        """A recipe mistake at the line of `key` (a key path): raise it."""
        return RecipeError([f"{self.loaded.where(*key)}: {message}"])

    # --- the steps planned so far

    def first(self, kind: str) -> Step | None:
        found = self.planned.get(kind)
        return found[0] if found else None

    def all(self, kind: str) -> list[Step]:
        return self.planned.get(kind, [])

    def gates(self) -> list[Step]:
        """The steps planned so far whose kind is a gate (GATE = True): an engine waits for them."""
        return [s for steps in self.planned.values() for s in steps if getattr(s.kind, "GATE", False)]

    def model_after(self, kind: str) -> SourceFiles | Step | Pick | None:
        """The model as it stood once `kind` (an upstream kind of the caller) was planned, whether or not it
        applied to this recipe: e.g. "simplify" is the fp32 model an engine's precision starts from."""
        return self._models[kind]

    # --- making steps

    def step(self, kind: str, params: dict, inputs: dict, folder: Path | None = None, **options) -> Step:
        """A step of `kind` publishing under `folder` (default: the recipe's); options: target, context,
        after (gates: they must succeed first), skip_reason."""
        return Step(self.loaded, kind, load_kind(kind), params, inputs, folder or self.out, **options)

    @staticmethod
    def files(paths: list[Path], main: Path | None = None) -> SourceFiles:
        return SourceFiles(main or paths[0], tuple(paths))

    pick = Pick  # p.pick(step, names): only those outputs of `step` are another step's input

    def _resolve(self, spec: str, from_command_line) -> tuple:
        """The target for `spec`; a recipe's own target that no backend takes is an error at its line."""
        try:
            return self.machine.resolve(spec)
        except UsageError as exc:
            targets = self.recipe.targets
            if from_command_line or spec not in targets:
                raise
            at = targets.index(spec)
            raise RecipeError([f"{self.loaded.where('targets', at)}: targets[{at}]: {exc}"]) from None

    def record(self, kind: str, made) -> None:
        """Record what `kind`'s plan() made (a Step, a list of them, or None) and the model after it."""
        if made is not None:
            self.planned[kind] = [made] if isinstance(made, Step) else list(made)
        self._models[kind] = self.model


def _input_params(spec, default_dtype: str | None) -> dict:
    lo, mid, hi = spec.profile()
    return {"dtype": spec.dtype or default_dtype, "shape": spec.dims, "min": lo, "opt": mid, "max": hi}
