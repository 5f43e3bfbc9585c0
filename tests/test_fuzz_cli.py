"""Fuzz: hostile values for each command-line option, through the real CLI in a process of its own (a
time limit catches a hang). Each ends in one line and an exit code (2 for bad usage, 1 for something
asked for and not delivered), never a traceback or a hang. Where an option takes any of several values
(the report paths, the numbers, gc's limits), each run tries every value once, each on an option drawn
with the printed seed (tests/fuzz_seed.py), and every option at least once: all the pairs over runs.
bench/README.md records the figures."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, conv_model, recipe_dict
from fuzz_seed import cover as pairs
from fuzz_seed import seeded

pytestmark = pytest.mark.slow

TARGETS = ["tensorrt-rtx:sm0", "tensorrt-rtx:sm9999", "", ":", "tensorrt-rtx:", "nosuch:sm86", "tensorrt-rtx:sm86+",
           "x" * 5000, "tensorrt-rtx:sm86\0"]
NUMBERS = ["0", "-1", "abc", "nan", "inf", "1e999", "9" * 5000, ""]
COMMANDS = ("status", "dag", "repro", "path", "gc", "triton", "ray-node")
# Device nodes of the test's own (null, full): a bug that renamed over one must not replace the machine's /dev/null.
PATHS = ["afile", "null", "fifo", "folder", "/proc/x.md", "/nonexistent/x/y", "", "x\0y", "full"]
RUNNABLE = [p for p in PATHS if "\0" not in p]  # no process can be given a NUL byte: those lines are left out


def command_lines(root: Path, rng=None) -> list[list[str]]:
    """Every line; where an option takes any of several values, each value on one option drawn with `rng`
    (None: on every option, as bench/fuzz.py runs them)."""
    def cover(options, values, rng):
        return pairs(options, values, rng) if rng else [(o, v) for o in options for v in values]

    recipe, cache = str(root / "conv.yaml"), ["--cache-dir", str(root / "cache")]
    lines = [[recipe, "--target", t, *cache] for t in TARGETS]
    lines += [[cmd, recipe, "--target", "tensorrt-rtx:sm0", *cache] for cmd in ("status", "dag")]
    lines += [["repro", recipe, "engine", "--target", "tensorrt-rtx:sm0", *cache]]
    lines += [[recipe, "--cache-dir", p] for p in PATHS] + [["status", recipe, "--cache-dir", p] for p in PATHS[:4]]
    lines += [[recipe, option, p, *cache] for option, p in cover(["--report", "--junit", "--markdown"], RUNNABLE, rng)]
    lines += [[recipe, option, n, *cache] for option, n in cover(["-j", "--step-timeout", "--remote-timeout"], NUMBERS, rng)]
    lines += [[recipe, "--remote", r, *cache] for r in ("ftp://127.0.0.1:1/x", "nosuchproto://x", "file:///proc/x",
                                                         "s3://", "", "http://127.0.0.1:1/x", "file://" + "x" * 5000)]
    lines += [[recipe, "--force", f, *cache] for f in ("nosuch", "", "engine\0")]
    lines += [[recipe, "--backend", b, *cache] for b in ("nosuch", "")]
    lines += [[recipe, "--executor", "ray", "--ray-address", "127.0.0.1:1", *cache]]
    lines += [["path", "conv", "--gpu", n, *cache] for n in ("-1", "abc", "9" * 50)]
    lines += [["path", "conv", "--target", t, *cache] for t in TARGETS[:4]]
    lines += [["gc", *cache, option, v] for option, v in cover(["--keep-last", "--older-than", "--max-size", "--grace"],
                                                                ["0", "-1", "abc", "9" * 5000, "1e999"], rng)]
    lines += [["triton", recipe, "--repository", p, *cache] for p in PATHS[:5]]
    lines += [["ray-node", "--address", a] for a in ("127.0.0.1:1", "", "x" * 5000)]
    lines += [["nosuch"], ["--cache-dir"], [recipe, "--nosuch"], ["env", "--json", "extra"], ["schema", "x"]]
    return lines


def run_lines(root: Path, rng=None) -> list[dict]:
    import onnx
    import yaml

    onnx.save(conv_model(), root / "conv.onnx")
    (root / "conv.yaml").write_text(yaml.safe_dump(recipe_dict("conv.onnx")))
    (root / "afile").write_text("a file\n")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))
    (root / "folder").mkdir()
    (root / "home").mkdir()
    env = os.environ | {"HOME": str(root / "home"), "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    results = []
    for line in command_lines(root, rng):
        try:
            done = subprocess.run([sys.executable, "-m", "trtbuild", *line], capture_output=True, text=True,
                                  timeout=120, cwd=root, env=env)
            outcome = "traceback" if "Traceback (most recent call last)" in done.stderr else f"exit {done.returncode}"
            stderr = done.stderr
        except subprocess.TimeoutExpired:
            outcome, stderr = "hang", ""
        except ValueError:  # a NUL byte: no process can be given this command line
            continue
        results.append({"line": line, "outcome": outcome, "stderr": stderr[-500:]})
    return results


def test_hostile_command_lines_end_in_one_line_and_an_exit_code(tmp_path):
    rng, told = seeded("hostile-command-lines")
    results = run_lines(tmp_path, rng)
    print(json.dumps(Counter(r["outcome"] for r in results)))
    bad = [f"{' '.join(a[:60] for a in r['line'])}: {r['outcome']}: {r['stderr']}" for r in results
           if r["outcome"] not in ("exit 0", "exit 1", "exit 2")]
    assert bad == [], told
    assert len(results) >= 70
    tried = {(line[0] if line[0] in COMMANDS else "build", a) for line in (r["line"] for r in results) for a in line}
    assert {("build", o) for o in ("--report", "--junit", "--markdown", "-j", "--step-timeout", "--remote-timeout")} | \
        {("gc", o) for o in ("--keep-last", "--older-than", "--max-size", "--grace")} <= tried, told
    for device in ("null", "full"):  # written into, never replaced
        assert stat.S_ISCHR(os.lstat(tmp_path / device).st_mode)
    assert (tmp_path / "folder").is_dir()  # a report never replaces a folder
