"""The built documentation site, as a reader sees it offline: served from 127.0.0.1 and rendered in
headless Chromium (Debian's chromium package; .ci/run installs it) with every other host unresolvable,
every Mermaid diagram is drawn (an SVG, not its source), the architecture diagram fits the page, and
the site publishes no build files."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from browser import Browser, chromium, classes, walk
from conftest import REPO
from helpers import mermaid_blocks

PAGES = sorted({page for page, _ in mermaid_blocks()})


def url_path(page: str) -> str:
    """docs/reference/caching.md -> reference/caching/; docs/index.md -> ''."""
    stem = page.removeprefix("docs/").removesuffix(".md")
    return "" if stem == "index" else stem.removesuffix("/index") + "/"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("MkDocs is not installed: pip install -e '.[docs]' -c constraints.txt")
    folder = tmp_path_factory.mktemp("site") / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def served(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    found = Browser(executable)
    yield found
    found.close()


def drawn(browser: Browser, url: str, expected: int, timeout: float = 45) -> tuple[str, list[tuple[dict, tuple]]]:
    """Open `url` and wait until its Mermaid hosts hold `expected` SVGs: (session, [(svg node, ancestors)])."""
    session = browser.open(url)
    deadline, found = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        tree = browser.call("DOM.getDocument", session, depth=-1, pierce=True)["root"]
        found = [(node, up) for node, up in walk(tree) if node.get("nodeName", "").lower() == "svg"
                 and any("mermaid" in classes(a) for a in up)]
        if len(found) >= expected:
            break
        time.sleep(0.5)
    return session, found


@pytest.mark.slow
def test_every_diagram_is_drawn_offline_and_the_architecture_fits(served, browser):
    assert "docs/reference/architecture.md" in PAGES
    for page in PAGES:
        expected = sum(p == page for p, _ in mermaid_blocks())
        session, svgs = drawn(browser, served + url_path(page), expected)
        assert len(svgs) == expected, f"{page}: {len(svgs)} of {expected} diagrams drawn; {browser.console}"
        if page.endswith("architecture.md"):
            tree = browser.call("DOM.getDocument", session, depth=-1, pierce=True)["root"]
            content = next(n for n, _ in walk(tree) if "md-content__inner" in classes(n))
            width = lambda node: browser.call("DOM.getBoxModel", session,
                                              backendNodeId=node["backendNodeId"])["model"]["width"]
            svg_width, page_width = width(svgs[0][0]), width(content)
            assert 300 < svg_width <= page_width, f"the architecture diagram is {svg_width}px in {page_width}px"


def test_the_site_serves_mermaid_itself_and_publishes_no_build_files(site):
    assert (site / "js" / "mermaid.min.js").stat().st_size > 1_000_000
    assert not (site / "hooks").exists() and not list(site.rglob("reference.py"))
    for page in PAGES:
        html = (site / url_path(page) / "index.html").read_text()
        assert 'src="' in html and "js/mermaid.min.js" in html, page
        assert "fonts.googleapis.com" not in html, page
