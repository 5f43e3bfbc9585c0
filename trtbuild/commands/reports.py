"""Build reports: JSON for scripts, JUnit XML for CI dashboards, Markdown for a CI job summary."""

from __future__ import annotations

import json
from collections import Counter


def write_reports(args, results, problems: list[str], seconds: float, exit_code: int, cache_dir) -> bool:
    """The reports the command line asked for (--report, --junit, --markdown), each written atomically;
    whether all were (one that cannot be is one line on stderr: something asked for and not delivered)."""
    import sys

    from trtbuild.store.fsutil import atomic_write

    written = True
    for option, path, make in (
            ("--report", args.report, lambda: json_report(results, problems, ok=exit_code == 0, exit_code=exit_code,
                                                          dry_run=args.dry_run, seconds=round(seconds, 3),
                                                          cache_dir=str(cache_dir))),
            ("--junit", args.junit, lambda: junit_xml(results, problems, seconds)),
            ("--markdown", args.markdown, lambda: markdown(results, problems, seconds))):
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


def json_report(results, problems: list[str], **extra) -> str:
    return json.dumps(extra | {"recipe_errors": problems, "steps": [r.to_json() for r in results]}, indent=2) + "\n"


def junit_xml(results, problems: list[str], seconds: float) -> str:
    """One testsuite per recipe, one testcase per step (and target); recipe errors are failures too."""
    import xml.etree.ElementTree as ET  # here: only --junit writes XML

    root = ET.Element("testsuites", name="trtbuild", time=f"{seconds:.3f}")
    suites: dict[str, ET.Element] = {}
    for r in results:
        recipe = r.step.recipe.recipe.name
        suite = suites.get(recipe)
        if suite is None:
            suite = suites[recipe] = ET.SubElement(root, "testsuite", name=recipe)
        name = r.step.name + (f" [{r.step.target.id}]" if r.step.target else "")
        case = ET.SubElement(suite, "testcase", classname=recipe, name=name, time=f"{r.seconds:.3f}")
        if r.status == "failed" or r.error:  # an error on a built step: built, not delivered (not in out/)
            ET.SubElement(case, "failure", message=(r.error or "").splitlines()[0][:200]).text = r.error
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.reason)
        elif r.status == "interrupted":
            ET.SubElement(case, "error", message=r.reason)
        if r.node:
            ET.SubElement(ET.SubElement(case, "properties"), "property", name="node", value=node_name(r.node))
        ET.SubElement(case, "system-out").text = f"{r.status}: {r.reason}" + (f" (on {node_name(r.node)})" if r.node else "")
    if problems:
        suite = ET.SubElement(root, "testsuite", name="recipes")
        for problem in problems:
            case = ET.SubElement(suite, "testcase", classname="recipes", name=problem.split(": ")[0])
            ET.SubElement(case, "failure", message=problem[:200]).text = problem
    for suite in root:
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def markdown(results, problems: list[str], seconds: float) -> str:
    counts = Counter(r.status for r in results)
    failures = [r for r in results if r.status == "failed" or r.error]  # or built and not delivered
    verdict = ("INTERRUPTED" if counts["interrupted"] else
               "FAILED" if problems or failures else "ok")
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    farm = any(r.node for r in results)  # a node column when steps ran on a cluster
    lines = [f"## trtbuild: {verdict}", "",
             f"{len(results)} steps: {summary or 'none'} in {seconds:.1f} s", "",
             "| recipe | step | target | status | time | reason |" + (" node |" if farm else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- |" if farm else "")]
    for r in results:
        status = {"failed": "**failed**"}.get(r.status, r.status)
        target = r.step.target.id if r.step.target else ""
        lines.append(f"| {r.step.recipe.recipe.name} | {r.step.name} | {target} | {status} | "
                     f"{r.seconds:.2f} s | {_cell(r.reason)} |" + (f" {node_name(r.node)} |" if farm else ""))
    if results:  # the step graph, coloured by status: GitHub renders Mermaid in job summaries
        from trtbuild.commands.dag import mermaid

        lines += ["", "<details><summary>Step graph</summary>", "", "```mermaid",
                  mermaid(results, [(r.status, r.reason) for r in results]).rstrip(), "```", "", "</details>"]
    if problems or failures:
        lines += ["", "### Failures", ""]
        for problem in problems:
            lines.append(f"- {_cell(problem)}")
        for r in failures:
            lines += [f"**{r.step.label}**" + (f" `{r.step.target.id}`" if r.step.target else ""), "", "```",
                      r.error or "", "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def node_name(node: dict | None) -> str:
    """A cluster node as reports show it: its address and the start of its Ray node id."""
    return f"{node['address']} {node['id'][:8]}" if node else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
