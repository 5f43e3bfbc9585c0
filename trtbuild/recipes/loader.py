"""Recipe loading: YAML with file:line errors, validated by the schema (trtbuild.recipes.validation), read as Sections.

A recipe file whose bytes were validated before is read from its record in the cache instead
(trtbuild.recipes.records): the same Sections without importing PyYAML's parser or pydantic, which is
most of what a no-op build would otherwise spend. Both ways go through the same JSON data, so a
recipe read from its record is exactly the recipe validated.
"""

from __future__ import annotations

import collections
import io
import json
import os
from pathlib import Path

from trtbuild.recipes import paths, records as validated
from trtbuild.recipes.reading import check_structure, read_bytes  # named: its code is part of a record's key
from trtbuild.errors import RecipeError
from trtbuild.frontends.registry import framework
from trtbuild.recipes.shared import dotted, line_for, spec_dims
from trtbuild.store.buildlog import stat_or_none


class Section:
    """A part of a validated recipe: its values (defaults filled in) as read-only attributes, and
    `given`, the keys the recipe file itself set."""

    def __init__(self, values: dict, given: list[str]):
        assert "given" not in values, "a recipe field named 'given' would hide the keys given"
        self.__dict__.update(values)
        self.__dict__["given"] = frozenset(given)

    def __setattr__(self, name, value):
        raise AttributeError(f"recipe values are read-only ({name})")

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "given")
        return f"{type(self).__name__}({values})"


class InputSection(Section):
    """One input of `inputs`: dtype, shape, min, opt, max."""

    @property
    def dims(self) -> list[int]:
        return spec_dims(self)

    def profile(self) -> tuple[list[int], list[int], list[int]]:
        """(min, opt, max) shapes; a static input has all three equal to its shape."""
        if self.min is None:
            return self.dims, self.dims, self.dims
        return list(self.min), list(self.opt), list(self.max)


SECTIONS = {"InputSpec": InputSection}  # schema model -> its Section class (others: Section)


class LoadedRecipe(collections.namedtuple("LoadedRecipe", "recipe file lines")):
    """recipe: the Section of the validated recipe; file: the recipe file (a Path); lines: {key path:
    line number}, for errors found after loading. (collections, not typing: a no-op build imports no typing.)"""

    __slots__ = ()

    def resolve(self, relative: str) -> Path:
        return paths.real_path_in(os.path.dirname(self.file) or ".", relative)

    def source_path(self) -> Path | None:
        return self.resolve(self.recipe.source.path) if self.recipe.source.path else None

    def where(self, *loc) -> str:
        """`file:line` of the deepest known key on `loc`."""
        return f"{self.file}:{line_for(self.lines, tuple(loc))}"


def load_recipe(file: str | Path, records: Path | None = None, log=None) -> LoadedRecipe:
    """Parse and validate one recipe; raise RecipeError with every problem at file:line.

    `records`: the cache's folder of validated recipes. A file whose bytes (with the same trtbuild,
    schema and libraries) were validated before is read from there; any other is validated in full,
    and recorded when valid. Errors are never recorded. The files a recipe names are checked every time.
    `log`: a build log (trtbuild.store.buildlog) that spares reading a file whose stat it knows."""
    file = file if isinstance(file, Path) else Path(file)
    st = stat_or_none(file) if log is not None and records is not None else None
    logged = log.recipe(str(file), st, validated.validator()) if st is not None else None
    if logged is not None:
        record = json.loads(logged[1])
    else:
        data = read_bytes(file)  # a regular file of bounded size, or a RecipeError
        key = validated.key(data) if records is not None else None
        record = validated.read(records, key) if key else None
        text = validated.to_json(record) if record is not None and st is not None else None  # to log it
        if record is None:
            record = _validate(data, file)
            text = validated.to_json(record)  # None: a value JSON cannot hold (a YAML date in kwargs)
            if text is not None:
                record = json.loads(text)  # exactly what a later run reads back
                if key:
                    validated.write(records, key, text)
        if st is not None and key and text is not None:
            log.learn_recipe(str(file), st, validated.validator(), key, text)
    loaded = LoadedRecipe(_sections(record["recipe"]), file, {tuple(path): n for path, n in record["lines"]})
    _check_files(loaded)
    return loaded


def _validate(data: bytes, file: Path) -> dict:
    """Parse and validate the file's bytes: {"recipe": the schema's normalized data, "lines": [[key path, line]]}."""
    import yaml  # here only: a recipe read from its record needs no parser

    from trtbuild.recipes.validation import validate

    try:
        text = io.TextIOWrapper(io.BytesIO(data)).read()  # as Path.read_text decodes
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{file}: cannot read recipe: {exc}"]) from None
    try:
        root, parsed = _parse_yaml(text, file)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of more than 4300 digits
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError([f"{file}{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    if root is not None:
        _index_lines(root, (), lines, problems, file)
    if problems:
        raise RecipeError(problems)
    return {"recipe": validate(parsed, file, lines), "lines": [[list(path), n] for path, n in lines.items()]}


def _sections(data: dict) -> Section:
    """The normalized data (trtbuild.recipes.validation.normalized) with each model's dict made a Section."""
    top = {"": data["values"]}
    for path, kind, given in sorted(data["sections"], key=lambda s: len(s[0]), reverse=True):  # innermost first
        holder, key = top, ""
        for part in path:
            holder, key = holder[key], part
        holder[key] = SECTIONS.get(kind, Section)(holder[key], given)
    return top[""]


def _check_files(loaded: LoadedRecipe) -> None:
    """The paths the recipe names must be usable (trtbuild.recipes.paths): checked on every load, as
    they change without the recipe."""
    recipe, base = loaded.recipe, loaded.file.parent
    source = recipe.source
    # A SavedModel is a directory; a keras one is refused by the export step, which says what it is instead
    folder = source.framework != "onnx" and framework(source.framework).model_folder
    model_kind = paths.FILE_OR_DIRECTORY if folder else paths.FILE
    named = [(("source", "path"), source.path, model_kind), (("source", "checkpoint"), source.checkpoint, paths.FILE),
             (("parity", "data"), recipe.parity.data, paths.FILE)]
    # "." (the default) is the folder the recipe was just read from: a directory, no stat needed.
    named += [(("source", "python_path", i), p, paths.DIRECTORY) for i, p in enumerate(source.python_path)
              if p != "."]
    problems = [f"{loaded.where(*loc)}: {dotted(loc)}: {problem}" for loc, value, expect in named
                if value is not None and (problem := paths.path_problem(base, value, expect))]
    globs = [(("source", "deps", i), p) for i, p in enumerate(source.deps)]
    calibration = recipe.precision.calibration
    if calibration and calibration.data is not None:
        globs.append((("precision", "calibration", "data"), calibration.data))
    problems += [f"{loaded.where(*loc)}: {dotted(loc)}: {problem}" for loc, pattern in globs
                 if (problem := paths.glob_problem(base, pattern))]
    if problems:
        raise RecipeError(problems)


def _parse_yaml(text: str, file: Path):
    """One safe parse (libyaml when available) giving both the node tree, for line numbers, and the data."""
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    check_structure(text, file, loader_class)  # before anything follows an alias or recurses
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def _index_lines(node, path: tuple, lines: dict, problems: list, file: Path) -> None:
    """Record the line of every key; report duplicate keys, which PyYAML silently overwrites."""
    lines[path] = node.start_mark.line + 1
    if node.id == "mapping":
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append(f"{file}:{key_node.start_mark.line + 1}: {dotted(path + (key,))}: duplicate key")
            seen.add(key)
            _index_lines(value_node, path + (key,), lines, problems, file)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif node.id == "sequence":
        for i, item in enumerate(node.value):
            _index_lines(item, path + (i,), lines, problems, file)


def json_schema() -> dict:
    from trtbuild.recipes.schema import json_schema

    return json_schema()
