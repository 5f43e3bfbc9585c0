"""What a run leaves behind: the action record of each step it built (the commit point of a step), each
step's state entry (what --dry-run and status explain the next change against), and out/."""

from __future__ import annotations

import time
from collections.abc import Callable

from trtbuild.execution.disk import Disk
from trtbuild.execution.results import StepResult
from trtbuild.planning.graph import Step
from trtbuild.planning.keys import portable, project_root
from trtbuild.store import discovered as found_while_running


class Publisher:
    def __init__(self, disk: Disk, report: Callable[[str], None]):
        self.disk = disk
        self.report = report  # an error line about out/
        self._states: dict[str, dict] = {}  # recipe -> {step id: [key, status]} of its state, read once per run
        self.undelivered: list[StepResult] = []  # built or cached, but not in out/ (a publish that failed)
        self.replaced: set = set()  # (recipe, step id, name) of files a later step replaces in out/ (shown.replaced)

    def paths(self, step: Step, outputs: dict) -> dict[str, str]:
        """Where the outputs appear once the run publishes."""
        folder = f"{self.disk.out}/{step.publish_dir}"  # strings: a no-op build asks once per hit
        recipe = step.recipe.recipe.name
        return {name: str(self.disk.object_path(obj["digest"])) if (recipe, step.id, name) in self.replaced
                else f"{folder}/{name}" for name, obj in outputs.items()}  # plain file names (store.validate)

    def commit(self, step: Step, key: str, components: dict, outputs: dict, meta: dict, seconds: float,
               node: dict | None) -> dict:
        """Store the action record of a step that ran; from here on its result is valid. Returns it."""
        discovered = meta.pop("discovered", None)
        record = {
            "key": key, "recipe": step.recipe.recipe.name, "step": step.id, "components": components,
            "outputs": outputs, "meta": meta, "seconds": round(seconds, 3), "created": time.time(),
        }
        if node:
            record["node"] = node
        if discovered and any(discovered.values()):
            root = project_root(step.recipe)
            record["discovered"] = found_while_running.relative(discovered, lambda p: portable(p, root))
        self.disk.put_action(key, record)  # the commit point
        self.state(step, key, components, "built")
        return record

    def current(self, step: Step, key: str, components: dict) -> None:
        """A cache hit is what out/ now shows: --dry-run and status explain the next change against it.
        Written only when it differs from the recorded entry, so a no-op build writes nothing."""
        recipe = step.recipe.recipe.name
        if recipe not in self._states:
            self._states[recipe] = self.disk.state_keys(recipe)
        if self._states[recipe].get(step.id) != [key, "built"]:
            self.state(step, key, components, "built")

    def state(self, step: Step, key: str, components: dict, status: str) -> None:
        """Remember the step's last key components: what --dry-run and status diff against."""
        entry = {"key": key, "components": components, "time": time.time(), "status": status}
        self.disk.record_state(step.recipe.recipe.name, step.id, entry)

    def publish(self, steps: list[Step], results: dict[Step, StepResult], declared: list[Step], lookup) -> None:
        """out/<recipe>/ shows the current key of each of the recipe's steps (trtbuild.execution.shown),
        whatever subset this run built; what could not be delivered there fails the run. `lookup`:
        (step, key) -> its verified action record, or None."""
        self.undelivered += self.disk.publish(steps, results, declared, lookup, self.report)
