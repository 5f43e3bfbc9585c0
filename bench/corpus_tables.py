"""The Markdown tables of bench/corpus.py's results."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

FOLDERS = ("pytorch-converted", "pytorch-operator", "simple", "light")  # the onnx package's test data

def first_line(text: str | None) -> str:
    """The error's first line; when it ends with a colon (a heading), the next line (of a table, the first
    failing row) with it."""
    lines = [" ".join(line.split()) for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        failing = [line for line in lines[1:] if line.endswith("FAIL")]  # a table (parity, accuracy): its failing row
        return f"{lines[0]} {(failing or lines[1:])[0]}"
    return lines[0]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _warning_kind(warning: str) -> str:
    """A check warning without what names the model's own tensors and nodes (quoted names, numbers)."""
    text = re.sub(r"'[^']*'", "'…'", first_line(warning))
    text = re.sub(r"\b_?v_\d+\b", "…", text)  # onnx-simplifier's names for a model's values
    return re.sub(r"\b\d+\b", "N", text)


def cause(r: dict) -> str:
    return f"{r.get('failed_step')}: {r.get('error')}"


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"Run {env['date']}, trtbuild at {env['git_commit']}"
             + (f" with uncommitted changes in {len(env['trtbuild_uncommitted_files'])} trtbuild files"
                if env["trtbuild_uncommitted_files"] else "")
             + f"; TensorRT-RTX {env['versions']['tensorrt_rtx']}, {env['cpus']} CPUs; {results.get('seconds')} s.", ""]
    models = results.get("onnx")
    if models:
        models = [m for m in models if "trtbuild" in m]
        lines += ["### ONNX backend-test models", "",
                  "| folder | models | plain builds | trtbuild builds | false rejections | trtbuild-only builds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        total = Counter()
        for folder in FOLDERS:
            rows = [m for m in models if m["folder"] == folder]
            if not rows:
                continue
            c = Counter(models=len(rows), plain=sum(bool(m["plain"].get("built")) for m in rows),
                        trtbuild=sum(bool(m["trtbuild"]["built"]) for m in rows),
                        false=sum(bool(m["plain"].get("built")) and not m["trtbuild"]["built"] for m in rows),
                        only=sum(not m["plain"].get("built") and bool(m["trtbuild"]["built"]) for m in rows))
            total.update(c)
            lines.append(f"| {folder} | {c['models']} | {c['plain']} | {c['trtbuild']} | {c['false']} | {c['only']} |")
        lines.append(f"| **all** | {total['models']} | {total['plain']} | {total['trtbuild']} | {total['false']} "
                     f"| {total['only']} |")

        false = [m for m in models if m["plain"].get("built") and not m["trtbuild"]["built"]]
        if false:
            lines += ["", "False rejections (the plain script builds, trtbuild refuses), by cause:", ""]
            groups = defaultdict(list)
            for m in false:
                groups[cause(m["trtbuild"])].append(f"{m['folder']}/{m['name']}")
            for text, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                lines.append(f"- `{_cell(text)[:300]}` x {len(names)}: {', '.join(names)}")
        only = [m for m in models if not m["plain"].get("built") and m["trtbuild"]["built"]]
        if only:
            lines += ["", "trtbuild-only builds (the plain script fails):", ""]
            for m in only:
                lines.append(f"- {m['folder']}/{m['name']}: plain {_cell(m['plain'].get('error'))[:200]}")
        both = [m for m in models if not m["plain"].get("built") and not m["trtbuild"]["built"]]
        if both:
            lines += ["", "Neither builds (plain script's reason):", ""]
            groups = defaultdict(list)
            for m in both:
                groups[m["plain"].get("error") or "?"].append(f"{m['folder']}/{m['name']}")
            for text, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                lines.append(f"- `{_cell(text)[:200]}` x {len(names)}: {', '.join(names)}")
        warned = defaultdict(list)
        for m in models:
            for warning in m["trtbuild"].get("warnings") or []:
                warned[_warning_kind(warning)].append(f"{m['folder']}/{m['name']}")
        if warned:
            lines += ["", "trtbuild warnings (printed and kept in the report; the build goes on):", ""]
            for text, names in sorted(warned.items(), key=lambda kv: -len(kv[1])):
                lines.append(f"- `{_cell(text)[:200]}` x {len(names)}: {', '.join(names[:8])}"
                             + (f" and {len(names) - 8} more" if len(names) > 8 else ""))
        odd = [m for m in models if m["plain"].get("odd")]
        if odd:
            lines += ["", "Plans the plain script built that look wrong:", ""]
            for m in odd:
                lines.append(f"- {m['folder']}/{m['name']}: {_cell('; '.join(m['plain']['odd']))[:300]}")
    if results.get("zoo"):
        lines += ["", "### Zoo (random weights; trtbuild's default exporter and opset)", "",
                  "| model | library | trtbuild | exporter, opset | parity max abs err | steps (s) | failing step: error |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["zoo"]:
            t = r.get("trtbuild", {})
            steps = ", ".join(f"{s['step']} {s['seconds']:.1f}" for s in t.get("steps", [])
                              if s.get("status") in ("built", "failed") and s.get("seconds") is not None)
            verdict = "builds" if t.get("built") else "**fails**"
            error = "" if t.get("built") else _cell(cause(t))[:300]
            exporter = ", ".join(str(x) for x in (t.get("exporter"), t.get("opset")) if x is not None)
            parity = ", ".join(f"{o['max_abs']:.1e}" for o in t.get("parity") or [] if o.get("max_abs") is not None)
            lines.append(f"| {r['name']} | {r['library']} | {verdict} | {exporter} | {parity} | {steps} | {error} |")
    return "\n".join(lines) + "\n"

