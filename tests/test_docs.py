"""The documentation: README as the front door, the generated reference pages cover the code they come
from, every Mermaid diagram parses, and the MkDocs site builds with --strict where MkDocs is installed."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mermaid_blocks

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MERMAID = REPO / "tests" / "mermaid"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def hooks():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_the_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    blocks = [body for lang, body in FENCE.findall(text) if lang == "bash"]
    # the two commands: install + build the example, and the tests, as .ci/run runs them
    first = blocks[0].splitlines()
    assert first[0] == "python3 -m venv .venv && . .venv/bin/activate"  # a virtual environment, first
    assert first[1] == "pip install -e '.[rtx]' -c constraints.txt && trtbuild recipes/resnet_block.yaml"
    tests = next(body.splitlines()[-1] for body in blocks if body.splitlines()[-1].startswith("python -m pytest"))
    assert tests == "python -m pytest -q -n 2"
    ci = (REPO / ".ci" / "run").read_text()
    assert f"\n{tests}  # the README's test command\n" in ci and "mkdocs build --strict" in ci and "'.[all,docs]'" in ci
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).is_file(), link


def test_the_recipe_keys_page_lists_every_key_of_the_schema():
    from trtbuild.recipes.schema import Calibration, EngineOptions, InputSpec, Profile, Recipe, Source

    page = hooks().schema_markdown()
    for model in (Recipe, Source, InputSpec, Profile, EngineOptions, Calibration):
        section = page.split(f"### {model.__name__}\n", 1)[1].split("\n### ", 1)[0]
        for name, field in model.model_fields.items():
            row = next((line for line in section.splitlines() if line.startswith(f"| `{name}` |")), None)
            assert row is not None, f"{model.__name__}.{name} is missing from the generated page"
            if field.description:
                assert " ".join(field.description.split()).replace("|", "\\|") in row
    assert "| `workspace` | size | `1.0GiB` |" in page
    assert "Keys under `precision.calibration`." in page
    assert "Keys under `profiles[].inputs.NAME`." in page


def test_the_command_line_page_is_every_commands_help():
    from trtbuild.commands.cli import _parser

    page = hooks().cli_markdown()
    sub = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"### trtbuild {name}\n" in page
        for action in command._actions:
            for option in action.option_strings:
                assert option in page, f"trtbuild {name} {option}"


def test_the_hook_replaces_its_marks_and_nothing_else():
    module = hooks()
    page = "# Title\n\n<!-- generated: schema -->\n\ntext\n"
    out = module.on_page_markdown(page)
    assert out.startswith("# Title\n\n### Recipe\n") and out.endswith("\n\ntext\n")
    assert module.on_page_markdown("plain page\n") == "plain page\n"


def test_every_page_is_in_the_nav_and_every_snippet_exists():
    import yaml

    config = yaml.safe_load(re.sub(r"!!python/name:\S+", "null", (REPO / "mkdocs.yml").read_text()))

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(config["nav"]))
    found = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert listed == found
    for page in DOCS.rglob("*.md"):
        for snippet in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            assert (DOCS / snippet).is_file(), f"{page}: {snippet}"


def test_the_docs_have_the_diagrams():
    assert {page for page, _ in mermaid_blocks()} >= {"docs/index.md", "docs/reference/caching.md"}


@pytest.mark.parametrize("page,diagram", mermaid_blocks(), ids=lambda v: v if v.startswith("docs/") else "")
def test_every_diagram_is_mermaid_that_mermaid_parses(page, diagram):
    if shutil.which("node") is None or not (MERMAID / "node_modules").is_dir():
        pytest.skip("Mermaid's parser is not installed: (cd tests/mermaid && npm ci)")
    parsed = subprocess.run(["node", str(MERMAID / "parse.mjs")], input=diagram, capture_output=True, text=True,
                            cwd=MERMAID, timeout=120)
    assert parsed.returncode == 0, f"{page}: {parsed.stderr}"


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("MkDocs is not installed: pip install -e '.[docs]' -c constraints.txt")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    schema = (tmp_path / "site" / "reference" / "schema" / "index.html").read_text()
    assert "optimization_level" in schema and "<!-- generated" not in schema
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--step-timeout" in cli
    tutorial = (tmp_path / "site" / "tutorials" / "pytorch" / "index.html").read_text()
    assert "tinynet:build" in tutorial  # the recipe file, included by pymdownx.snippets


def test_no_merge_conflict_markers_are_left_in_the_code_or_the_docs():
    """A conflict left inside a code block renders without a warning: only reading the files finds it."""
    marked = [f"{path.relative_to(REPO)}:{i}" for top in ("trtbuild", "docs", "tests", "bench", "recipes")
              for path in (REPO / top).rglob("*") if path.suffix in (".py", ".md", ".yaml", ".yml", ".toml")
              and "node_modules" not in path.parts
              for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
              if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="]
    assert marked == []
