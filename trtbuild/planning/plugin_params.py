"""The recipe's `steps`: which plug-in step kinds it asks for, each entry validated by its kind's own
pydantic model (the kind's PARAMS), with errors at the line of the value. Only recipes that name a
plug-in kind import pydantic here; the others plan without it."""

from __future__ import annotations

import difflib
from types import ModuleType

from trtbuild.errors import RecipeError
from trtbuild.recipes.shared import dotted
from trtbuild.steps import KINDS, module_name, plugin_kinds


def check_names(loaded) -> None:
    """Every kind the recipe's `steps` names is a plug-in kind Python finds: else an error at its line."""
    problems = []
    for name in loaded.recipe.steps:
        at = loaded.where("steps", name)
        if name in KINDS:
            problems.append(f"{at}: steps.{name}: a built-in step kind; it is planned from the recipe's own sections "
                            f"(steps lists plug-in kinds only)")
        elif module_name(name) is None:
            close = difflib.get_close_matches(name, [*plugin_kinds(), *KINDS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{at}: steps.{name}: no step kind {name!r}: a plug-in step kind NAME is a module "
                            f"trtbuild_step_NAME on the Python path (PYTHONPATH), or one register_kind() names{hint}")
    if problems:
        raise RecipeError(problems)


def validated(loaded, kind: ModuleType, values) -> object:
    """The kind's PARAMS model made from its entry (None / {} for all defaults); a kind without PARAMS
    takes no params."""
    from pydantic import BaseModel, ValidationError

    name = kind.NAME
    model = getattr(kind, "PARAMS", None)
    values = {} if values is None else values
    if model is None:
        if values:
            raise RecipeError([f"{loaded.where('steps', name)}: steps.{name}: the {name} step takes no params"])
        return None
    if not isinstance(values, dict):
        raise RecipeError([f"{loaded.where('steps', name)}: steps.{name}: expected a mapping of its params, "
                           f"not {values!r}"[:200]])
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ("steps", name, *err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = list(model.model_fields) if issubclass(model, BaseModel) else []
                hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
                message = f"unknown key ({f'did you mean {hint[0]!r}?' if hint else 'allowed keys: ' + ', '.join(allowed)})"
            elif err["type"] == "missing":
                message = "required key is missing"
            else:
                message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loaded.where(*loc)}: {dotted(loc)}: {message}")
        raise RecipeError(problems) from None
