"""Installed distributions, wherever they sit on sys.path: the interpreter's site-packages, a venv over
another interpreter's packages (a `.pth` file), PYTHONPATH, `pip install --target`. What a step loads
from them is a tool, keyed by name and version, never a user file (trtbuild.store.discovered).
"""

from __future__ import annotations

import functools
import os
import sys


@functools.cache
def interpreter_folders() -> tuple[str, ...]:
    """The folders of the Python installation itself."""
    import sysconfig  # here: a no-op build records nothing

    paths = sysconfig.get_paths()
    folders = (sys.prefix, sys.base_prefix, sys.exec_prefix, paths["purelib"], paths["platlib"], paths["stdlib"])
    return tuple({form + os.sep for p in folders for form in _forms(p)} - {"//"})


def _forms(folder: str) -> set[str]:
    """A folder as paths may name it: as given and with its links resolved."""
    return {os.path.abspath(folder), os.path.realpath(folder)}


def library_roots(sys_path: list[str]) -> tuple[str, ...]:
    """Path prefixes of installed packages in the sys.path folders outside the interpreter's own: for
    each wheel-installed distribution (a `.dist-info` with a RECORD), the top-level names its RECORD
    lists. A `.egg-info` beside sources (`setup.py develop`) marks the user's own code: not a root."""
    own = interpreter_folders()
    roots: set[str] = set()
    for entry in dict.fromkeys(sys_path):
        if (os.path.realpath(entry or ".") + os.sep).startswith(own):
            continue
        for folder in _forms(entry or "."):
            roots.update(os.path.join(folder, name) for name in _roots_in(os.path.realpath(entry or ".")))
    return tuple(sorted(roots))


@functools.cache
def _roots_in(folder: str) -> frozenset[str]:
    """Names in `folder` that belong to a distribution ("pkg/", "module.py", "pkg-1.0.dist-info/")."""
    try:
        infos = [e.path for e in os.scandir(folder) if e.name.endswith(".dist-info") and e.is_dir()]
    except OSError:
        return frozenset()
    roots = set()
    for info in infos:
        roots.add(os.path.basename(info) + os.sep)
        try:
            with open(os.path.join(info, "RECORD"), encoding="utf-8", errors="replace") as f:
                for line in f:
                    top = line.partition(",")[0].split("/", 1)
                    if top[0] and top[0] not in ("..", ".") and not top[0].endswith(".dist-info"):
                        roots.add(top[0] + (os.sep if len(top) > 1 else ""))
        except OSError:
            continue
    return frozenset(roots)


def provided_by(modules: set[str], is_users) -> dict[str, str]:
    """{distribution: version} of the installed packages that provided `modules` (`is_users(path)`: a
    module file of the user's own, recorded as a file instead)."""
    import importlib.metadata

    tops = {m.partition(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"trtbuild", "__main__"}
    found, unknown = {}, []
    for top in sorted(t for t in tops if not t.startswith("_")):
        module = sys.modules.get(top)
        source = getattr(module, "__file__", None) or ""
        if not source or is_users(os.path.abspath(source)):
            continue  # the user's own code (recorded as files) or a namespace without files
        try:
            found[top] = importlib.metadata.version(top)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            unknown.append(top)
    unknown = [top for top in unknown if not _from_top_level(top, found)]
    if unknown:  # import names no top_level.txt beside them names (yaml -> PyYAML): scans every distribution
        names = importlib.metadata.packages_distributions()
        for top in unknown:
            for dist in names.get(top, []):
                try:
                    found[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    pass
    return dict(sorted(found.items()))


def _from_top_level(top: str, found: dict[str, str]) -> bool:
    """Find the distribution of import name `top` (PIL -> pillow, torchgen -> torch) among those installed
    beside it: by their top_level.txt (one small file each), else by the RECORD of those without one,
    names most like `top` first, rather than every distribution's RECORD."""
    source = os.path.abspath(sys.modules[top].__file__)
    folder = os.path.dirname(os.path.dirname(source) if os.path.basename(source) == "__init__.py" else source)
    try:
        infos = sorted((e.path for e in os.scandir(folder) if e.name.endswith(".dist-info")),
                       key=lambda p: -len(os.path.commonprefix([os.path.basename(p).lower(), top.lower()])))
    except OSError:
        return False
    unlisted = []
    for info in infos:
        try:
            with open(os.path.join(info, "top_level.txt"), encoding="utf-8") as f:
                listed = top in f.read().split()
        except OSError:
            unlisted.append(info)
            continue
        if listed:
            return _add(info, found)
    for info in unlisted:
        try:
            with open(os.path.join(info, "RECORD"), encoding="utf-8") as f:
                if any(line.startswith((f"{top}/", f"{top}.py,")) for line in f):
                    return _add(info, found)
        except OSError:
            continue
    return False


def _add(info: str, found: dict[str, str]) -> bool:
    import importlib.metadata

    dist = importlib.metadata.Distribution.at(info)
    found[dist.metadata["Name"]] = dist.version
    return True
