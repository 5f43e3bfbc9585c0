"""The plain nodes of the step graph: a Step, the user's files it reads (SourceFiles) and the part of
another step's outputs it reads (Pick)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a no-op build imports none of it)
if TYPE_CHECKING:  # annotations only
    from trtbuild.backends.target import Target
    from trtbuild.recipes.loader import LoadedRecipe


@dataclass(frozen=True)
class SourceFiles:
    """Files from the user's tree; `main` is what the step opens (the others sit beside it). In a key,
    `main` is "(main)" and the others are named relative to its folder when `beside_main`, else
    relative to the recipe's project (trtbuild.planning.keys.project_root)."""

    main: Path
    files: tuple[Path, ...]
    beside_main: bool = True


@dataclass(frozen=True, eq=False)
class Pick:
    """Some outputs of a step as another step's input: only they are handed over and hashed."""

    step: Step
    names: tuple[str, ...]

    def select(self, outputs: dict) -> dict:
        return {name: obj for name, obj in outputs.items() if name in self.names}


@dataclass(eq=False)
class Step:
    recipe: LoadedRecipe
    name: str
    kind: ModuleType
    params: dict
    inputs: dict[str, SourceFiles | Step | Pick]  # hashed into the key
    publish_dir: Path  # relative to the cache's out/ directory
    target: Target | None = None
    context: dict = field(default_factory=dict)  # handed to the worker, not part of the key
    after: list[Step] = field(default_factory=list)  # gates: must succeed first, not part of the key
    skip_reason: str | None = None  # set when this machine cannot run the step (e.g. no suitable GPU)

    def __post_init__(self):
        self.kind.READS.check(self.kind.NAME, self.params, self.inputs, self.context)
        # Fixed once made, and asked several times per step: plain attributes (a cached_property takes
        # a lock the first time, once per step of a thousand recipes).
        self.id: str = self.name if self.target is None else f"{self.name}@{self.target.id}"
        # The steps this one waits for.
        self.deps: list[Step] = [producer(i) for i in self.inputs.values() if isinstance(i, (Step, Pick))] + self.after

    @property
    def label(self) -> str:
        return f"{self.recipe.recipe.name}/{self.name}"


def producer(source: Step | Pick) -> Step:
    """The step whose outputs `source` hands over."""
    return source.step if isinstance(source, Pick) else source


def upstream_outputs(source: Step | Pick, record: dict) -> dict:
    """The outputs of an upstream action record that `source` hands over."""
    return source.select(record["outputs"]) if isinstance(source, Pick) else record["outputs"]
