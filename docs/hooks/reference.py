"""MkDocs hook: pages generated from the code, so the reference cannot drift from it.

`<!-- generated: schema -->` in a page becomes the recipe keys, from the pydantic models in
trtbuild/recipes/schema.py (their docstrings and Field descriptions); `<!-- generated: cli -->`
becomes each command's `--help`, from the argparse parser the command line uses.
tests/test_docs.py checks both cover what they should.

It also serves Mermaid from the site itself (js/mermaid.min.js, from the npm package the tests install
in tests/mermaid): the theme loads it from a CDN otherwise, and offline (an air-gapped cluster, a
laptop on a plane) every diagram would show its source.
"""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

SCHEMA_MARK = "<!-- generated: schema -->"
CLI_MARK = "<!-- generated: cli -->"


MERMAID_JS = Path(__file__).resolve().parents[2] / "tests" / "mermaid" / "node_modules" / "mermaid" / "dist" / \
    "mermaid.min.js"
MERMAID_SITE_PATH = "js/mermaid.min.js"  # mkdocs.yml's extra_javascript names it


def on_files(files, config):
    """Add Mermaid to the site's files; without the npm package, a warning (an error with --strict)."""
    from mkdocs.structure.files import File

    if MERMAID_JS.is_file():
        files.append(File.generated(config, MERMAID_SITE_PATH, abs_src_path=str(MERMAID_JS)))
    else:
        logging.getLogger("mkdocs.hooks.reference").warning(
            f"{MERMAID_JS} is missing: run (cd tests/mermaid && npm ci), or the site's diagrams load Mermaid "
            "from a CDN (and show their source offline)")
    return files


def on_page_markdown(markdown: str, page=None, config=None, files=None) -> str:
    if SCHEMA_MARK in markdown:
        markdown = markdown.replace(SCHEMA_MARK, schema_markdown())
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_markdown())
    return markdown


# --- recipe keys ---------------------------------------------------------------------------------

def _models() -> list[tuple[str, type[BaseModel]]]:
    """(dotted prefix, model) for the Recipe and every model nested in it, in the order a recipe reads."""
    from trtbuild.recipes.schema import Recipe

    found, seen = [], set()

    def walk(prefix: str, model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        found.append((prefix, model))
        for name, field in model.model_fields.items():
            for inner, container in _nested(field.annotation):
                walk(f"{prefix}{name}{container}.", inner)

    walk("", Recipe)
    return found


def _nested(annotation) -> list[tuple[type[BaseModel], str]]:
    """Models inside an annotation, with how a key reaches them: '' (a mapping), '.NAME', '[]'."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple):
        return [(m, "[]" + how) for a in args for m, how in _nested(a)]
    if origin is dict:
        return [(m, ".NAME" + how) for m, how in _nested(args[1])]
    return [found for a in args for found in _nested(a)]


def _field_type(field) -> str:
    """A field's type; a registry's names (recipes.choices.Registered, in the field's metadata) as choices."""
    registered = [m for m in field.metadata if hasattr(m, "built_in")]
    if registered:
        return " \\| ".join(f"`{name}`" for name in registered[0].built_in) + " \\| a plugin's NAME"
    return _type(field.annotation)


def _type(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is typing.Any:
        return "any"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    name = getattr(annotation, "__name__", str(annotation))
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "ByteSize": "size",
            "StrictInt": "integer"}.get(name, name)


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "its keys' defaults"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if type(value).__name__ == "ByteSize":
        return f"`{value.human_readable()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def schema_markdown() -> str:
    parts = []
    for prefix, model in _models():
        title = model.__name__
        parts.append(f"### {title}\n")
        if prefix:
            parts.append(f"Keys under `{prefix.rstrip('.')}`.\n")
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith(("!!", "Usage docs")):
            parts.append(_cell(doc) + "\n")
        parts.append("| key | type | default | description |\n| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            parts.append(f"| `{name}` | {_field_type(field)} | {_default(field)} | "
                         f"{_cell(field.description or '')} |")
        parts.append("")
    return "\n".join(parts)


# --- command line ------------------------------------------------------------------------------------

def cli_markdown() -> str:
    """Each command's --help, as argparse prints it at 100 columns."""
    from trtbuild.commands.cli import _parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = _parser()
        parts = ["### trtbuild\n", "```text", parser.format_help().rstrip(), "```\n"]
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        for name, command in sub.choices.items():
            parts += [f"### trtbuild {name}\n", "```text", command.format_help().rstrip(), "```\n"]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(parts)
