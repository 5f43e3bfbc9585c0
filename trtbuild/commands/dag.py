"""The step graph with each step's state, as Mermaid (renders in GitHub job summaries and READMEs)
or Graphviz dot, the way `dvc dag` and `ninja -t graph` draw theirs."""

from __future__ import annotations

# state -> fill color, shared by both formats
COLORS = {"fresh": "#d4edda", "cached": "#d4edda", "built": "#b7e4c7", "remote": "#cfe2ff", "would-pull": "#cfe2ff",
          "stale": "#fff3cd", "would-run": "#fff3cd", "missing": "#fde2c8", "failed": "#f8d7da",
          "skipped": "#e2e3e5", "interrupted": "#f8d7da"}


def graph(results, states: list[tuple[str, str]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(node id, label, state) per step and (from, to) per dependency, in the order of `results`;
    `states[i]` is (state, reason) of results[i]."""
    index = {r.step: i for i, r in enumerate(results)}
    nodes, edges = [], []
    for i, (r, (state, reason)) in enumerate(zip(results, states)):
        target = f" [{r.step.target.spec}]" if r.step.target else ""
        why = f": {reason}" if reason and state not in ("fresh", "cached") else ""
        nodes.append((f"n{i}", f"{r.step.label}{target}", state + why[:80]))
        edges += [(f"n{index[dep]}", f"n{i}") for dep in dict.fromkeys(r.step.deps) if dep in index]
    return nodes, edges


def mermaid(results, states: list[tuple[str, str]]) -> str:
    nodes, edges = graph(results, states)
    lines = ["flowchart LR"]
    for node, label, state in nodes:
        lines.append(f'  {node}["{_mermaid_text(label)}<br/>{_mermaid_text(state)}"]:::{_class(state)}')
    lines += [f"  {a} --> {b}" for a, b in edges]
    lines += [f"  classDef {_class(name)} fill:{color},stroke:#555" for name, color in COLORS.items()]
    return "\n".join(lines) + "\n"


def dot(results, states: list[tuple[str, str]]) -> str:
    nodes, edges = graph(results, states)
    lines = ["digraph trtbuild {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for node, label, state in nodes:
        color = COLORS.get(state.split(":")[0], "#ffffff")
        lines.append(f'  {node} [label="{_dot_text(label)}\\n{_dot_text(state)}", fillcolor="{color}"];')
    lines += [f"  {a} -> {b};" for a, b in edges]
    return "\n".join(lines + ["}"]) + "\n"


def _class(state: str) -> str:
    return state.split(":")[0].replace("-", "_")


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
