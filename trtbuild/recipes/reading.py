"""Reading a recipe file with limits: its size, its type, how deep its YAML nests and how many values its
aliases expand to, all checked before the file is parsed into Python objects.

YAML aliases let a few hundred bytes name billions of values ("billion laughs"); anything that walks the
parsed recipe (line numbers, validation) would follow every one. A recursive alias (`a: &e {x: *e}`)
makes a structure without end, and a deeply nested one exhausts the stack of the recursive composer.
The check below reads the parser's event stream, which libyaml and PyYAML produce without recursion,
and counts each alias as the size of what it names, so a bomb is refused after a handful of events.
"""

from __future__ import annotations

import errno
import stat
from pathlib import Path

from trtbuild.errors import RecipeError
from trtbuild.store.fsutil import NotRegularFile, read_record

MAX_BYTES = 1 << 20  # a recipe is a page of YAML; 1 MiB is far beyond any real one
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_VALUES = 100_000  # keys and values, with every alias counted as what it names

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_bytes(file: Path) -> bytes:
    """The recipe file's bytes: a regular file of at most MAX_BYTES, opened without blocking on a FIFO."""
    try:
        return read_record(file, limit=MAX_BYTES, follow=True)  # a recipe may be a link
    except FileNotFoundError:
        raise RecipeError([f"{file}: no such recipe file"]) from None
    except NotRegularFile as exc:
        raise RecipeError([f"{file}: cannot read recipe: {kind_of(exc.mode)}, not a recipe file"]) from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise RecipeError([f"{file}: recipe file is larger than {MAX_BYTES >> 20} MiB; is it a recipe?"]) from None
        raise RecipeError([f"{file}: cannot read recipe: {exc.strerror or exc}"]) from None  # a link loop, no permission
    except ValueError as exc:  # a NUL byte in the name
        raise RecipeError([f"{file}: cannot read recipe: {exc}"]) from None


def check_structure(text: str, file: Path, loader_class) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH, expanding to more than MAX_VALUES values, or holding a
    recursive alias, at file:line, before anything builds the document. YAML syntax errors raise
    yaml.YAMLError as parsing would."""
    import yaml

    expanded = 0  # values so far, aliases counted as the values they name
    sizes: dict[str, int] = {}  # anchor -> values in the node it names
    open_nodes: list[tuple[int, str | None]] = []  # collections being read: (expanded at their start, anchor)
    loader = loader_class(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1 if event.start_mark else 1
            if isinstance(event, yaml.AliasEvent):
                if any(anchor == event.anchor for _, anchor in open_nodes):
                    raise RecipeError([f"{file}:{line}: YAML alias *{event.anchor} is inside the node &{event.anchor} "
                                       "it names (a recursive alias): write the values out"])
                expanded += sizes.get(event.anchor, 1)  # an undefined one: the parser says so next
            elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                expanded += 1
                if isinstance(event, yaml.CollectionStartEvent):
                    open_nodes.append((expanded - 1, event.anchor))
                    if len(open_nodes) > MAX_DEPTH:
                        raise RecipeError([f"{file}:{line}: YAML nested more than {MAX_DEPTH} levels deep"])
                elif event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionEndEvent):
                start, anchor = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = expanded - start
            if expanded > MAX_VALUES:
                raise RecipeError([f"{file}:{line}: the recipe expands to more than {MAX_VALUES} values "
                                   "(YAML aliases repeat what they name): write it without such aliases"])
    finally:
        loader.dispose()
