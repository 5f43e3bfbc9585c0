"""Build reports: JSON for scripts, JUnit XML for CI dashboards, Markdown for a CI job summary.

Each is a view of one trtbuild.commands.outcome.Outcome: its exit code, its failures. A run that
exits non-zero has a failure in every report: a failed test case in JUnit, a failure line under the
Markdown heading, `ok: false` and the failure in the JSON."""

from __future__ import annotations

import json
from collections import Counter

from trtbuild.commands.outcome import Outcome


def write_reports(args, outcome: Outcome, cache_dir) -> bool:
    """The reports the command line asked for (--report, --junit, --markdown), each written atomically;
    whether all were (one that cannot be is one line on stderr: something asked for and not delivered)."""
    import sys

    from trtbuild.store.fsutil import atomic_write

    written = True
    for option, path, make in (
            ("--report", args.report, lambda: json_report(outcome, cache_dir=str(cache_dir))),
            ("--junit", args.junit, lambda: junit_xml(outcome)),
            ("--markdown", args.markdown, lambda: markdown(outcome))):
        if path:
            try:
                _write(path, make().encode(), atomic_write)
            except OSError as exc:
                print(f"trtbuild: error: {option} {path}: cannot write it ({exc.strerror or exc})", file=sys.stderr)
                written = False
    return written


def _write(path, data: bytes, atomic_write) -> None:
    """A regular file (or none yet) is replaced atomically; anything else the user named (/dev/null, a
    FIFO with a reader, /dev/stdout) is written into, never replaced: renaming over /dev/null as root
    would replace the device for every process on the machine."""
    import errno
    import os
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        atomic_write(path, data)
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO nobody reads: ENXIO, not a hang
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def json_report(outcome: Outcome, **extra) -> str:
    data = {"ok": outcome.ok, "exit_code": outcome.exit_code, "dry_run": outcome.dry_run,
            "seconds": round(outcome.seconds, 3)} | extra
    data |= {"failures": [f.to_json() for f in outcome.failures], "recipe_errors": outcome.problems,
             "steps": [r.to_json() for r in outcome.results]}
    return json.dumps(data, indent=2) + "\n"


def junit_xml(outcome: Outcome) -> str:
    """One testsuite per recipe, one testcase per step (and target); every failure of the outcome is a
    failed test case (recipe errors in a suite of their own)."""
    import xml.etree.ElementTree as ET  # here: only --junit writes XML

    root = ET.Element("testsuites", name="trtbuild", time=f"{outcome.seconds:.3f}")
    suites: dict[str, ET.Element] = {}
    for r in outcome.results:
        recipe = r.step.recipe.recipe.name
        suite = suites.get(recipe)
        if suite is None:
            suite = suites[recipe] = ET.SubElement(root, "testsuite", name=recipe)
        name = r.step.name + (f" [{r.step.target.id}]" if r.step.target else "")
        case = ET.SubElement(suite, "testcase", classname=recipe, name=name, time=f"{r.seconds:.3f}")
        failure = outcome.failure_of(r)
        if failure is not None:
            ET.SubElement(case, "failure", message=failure.message[:200], type=failure.kind).text = \
                failure.detail or failure.message
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.reason)
        elif r.status == "interrupted":
            ET.SubElement(case, "error", message=r.reason)
        if r.node:
            ET.SubElement(ET.SubElement(case, "properties"), "property", name="node", value=node_name(r.node))
        ET.SubElement(case, "system-out").text = f"{r.status}: {r.reason}" + (f" (on {node_name(r.node)})" if r.node else "")
    recipe_errors = [f for f in outcome.failures if f.result is None]
    if recipe_errors:
        suite = ET.SubElement(root, "testsuite", name="recipes")
        for f in recipe_errors:
            case = ET.SubElement(suite, "testcase", classname="recipes", name=f.label)
            ET.SubElement(case, "failure", message=f.message[:200], type=f.kind).text = f.message
    for suite in root:
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    for count in ("tests", "failures", "skipped", "errors"):
        root.set(count, str(sum(int(suite.get(count)) for suite in root)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def markdown(outcome: Outcome) -> str:
    """The verdict and every failure first (what a job page shows above the fold), then the steps, the
    failures' full text and the step graph."""
    results = outcome.results
    counts = Counter(r.status for r in results)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines = [f"## trtbuild: {outcome.verdict} (exit code {outcome.exit_code})", ""]
    if outcome.failures:
        lines += [f"{len(outcome.failures)} failure(s):", ""]
        lines += [f"- **{_cell(f.label)}**: {_cell(f.message)}" for f in outcome.failures]
        lines.append("")
    lines += [f"{len(results)} steps: {summary or 'none'} in {outcome.seconds:.1f} s", ""]
    if results:
        farm = any(r.node for r in results)  # a node column when steps ran on a cluster
        lines += ["| recipe | step | target | status | time | reason |" + (" node |" if farm else ""),
                  "| --- | --- | --- | --- | --- | --- |" + (" --- |" if farm else "")]
        for r in results:
            failure = outcome.failure_of(r)
            status = "**failed**" if failure is not None else r.status
            reason = failure.message if failure is not None else r.reason
            target = r.step.target.title if r.step.target else ""
            lines.append(f"| {r.step.recipe.recipe.name} | {r.step.name} | {target} | {status} | "
                         f"{r.seconds:.2f} s | {_cell(reason)} |" + (f" {node_name(r.node)} |" if farm else ""))
        lines.append("")
    detailed = [f for f in outcome.failures if f.detail and f.detail.strip() != f.message]
    if detailed:
        lines += ["### Failures", ""]
        for f in detailed:
            lines += [f"**{_cell(f.label)}**", "", "```", f.detail.rstrip(), "```", ""]
    if results:  # the step graph, coloured by status: GitHub renders Mermaid in job summaries
        from trtbuild.commands.dag import mermaid

        states = [("failed", f.message) if (f := outcome.failure_of(r)) else (r.status, r.reason) for r in results]
        lines += ["<details><summary>Step graph</summary>", "", "```mermaid", mermaid(results, states).rstrip(),
                  "```", "", "</details>"]
    return "\n".join(lines).rstrip() + "\n"


def node_name(node: dict | None) -> str:
    """A cluster node as reports show it: its address and the start of its Ray node id."""
    return f"{node['address']} {node['id'][:8]}" if node else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
