"""A recipe's parsed YAML through the schema: its normalized data, or RecipeError with a file:line
message for each problem (an unknown key with the likely one meant, a missing key, a wrong value)."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ByteSize, ValidationError

from trtbuild.errors import RecipeError
from trtbuild.recipes.schema import Recipe
from trtbuild.recipes.shared import dotted, line_for


def validate(data: object, file: Path, lines: dict) -> dict:
    """Validate parsed YAML; return it normalized (see `normalized`) or raise RecipeError at file:line."""
    if not isinstance(data, dict):
        raise RecipeError([f"{file}:1: a recipe must be a mapping with keys: {', '.join(Recipe.model_fields)}"])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError([_describe(err, file, lines) for err in exc.errors()]) from None
    return normalized(recipe)


def normalized(recipe: Recipe) -> dict:
    """A validated recipe as plain data: its values, defaults filled in, and for each section (model)
    its path, its kind and the keys the file gave. trtbuild.recipes.loader reads it back as Sections."""
    sections = []

    def plain(value, path: tuple):
        if isinstance(value, BaseModel):
            sections.append([list(path), type(value).__name__, sorted(value.model_fields_set)])
            return {name: plain(getattr(value, name), (*path, name)) for name in type(value).model_fields}
        if isinstance(value, dict):
            return {key: plain(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item, (*path, i)) for i, item in enumerate(value)]
        return int(value) if isinstance(value, ByteSize) else value

    return {"values": plain(recipe, ()), "sections": sections}


def _describe(err: dict, file: Path, lines: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-after", "function-"))))
    if err["type"] == "recipe_at":  # raised with the exact key path (see _fail)
        return f"{file}:{line_for(lines, tuple(err['ctx']['at']))}: {err['ctx']['message']}"
    where = f"{file}:{line_for(lines, loc)}"
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"allowed keys: {', '.join(allowed)}"
        return f"{where}: {dotted(loc)}: unknown key ({fix})"
    if err["type"] == "missing":
        return f"{where}: {dotted(loc)}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"].endswith(("_type", "_parsing")) and isinstance(err.get("input"), (bool, int, float, str)):
        message += f", not {err['input']!r}"[:80]  # `true` or "1" where a whole number belongs
    return f"{where}: {dotted(loc) or 'recipe'}: {message}"


def _fields_at(loc: tuple) -> list[str]:
    """Field names valid at `loc`, found by walking the schema's type annotations."""
    tp: object = Recipe
    for part in loc:
        tp = _strip_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]  # `part` is a dict key or list index
        else:
            return []
    tp = _strip_optional(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _strip_optional(tp: object) -> object:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
