"""The hidden zoo: architectures nobody tuned trtbuild for, each built by trtbuild's CLI in fp32, fp16 and
int8 into a fresh cache (the three precisions of a model share it, and so its export).

    python bench/hidden_zoo.py [--only NAME,...] [--precisions fp32,fp16,int8] [--out results.json]
                               [--ultralytics DIR] [--work DIR]

Hugging Face families from their `*Config` (BERT, GPT-2, Llama, a Qwen2 decode step over a KV cache,
Whisper's encoder, ViT, CLIP with a `source.outputs` subset), timm models (pretrained=False), torchvision
RetinaNet / FCOS without post-processing, Keras applications (.keras, tf2onnx) and YOLO11 exported to
ONNX by ultralytics from yolo11n.yaml. Random weights everywhere; nothing is downloaded (the processes
run with the hubs offline and an unreachable proxy). Engines: TensorRT-RTX, optimization level 0, one
step at a time (--jobs 1). int8 calibrates on random .npz shards at each input's min, opt and max.

ultralytics may sit outside the environment (`pip install --target DIR --no-deps ultralytics ...`, so
the pinned packages stay): --ultralytics DIR puts DIR on the path of the process that exports YOLO11.
Prints one Markdown row per model and precision; every step's record goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, compile_bytecode
from corpus import environment, run_process
from hidden_zoo_entries import BY_NAME, ENTRIES, OFFLINE, PREPARED, calibration

HERE = Path(__file__).resolve().parent
ENGINE = {"backend": "tensorrt-rtx", "optimization_level": 0, "workspace": "2GiB"}


def prepare(entry, work: Path, env: dict, args) -> dict:
    """The entry's source and inputs: as written, or made by hidden_zoo_entries.py in a process of its own."""
    if not entry.name.startswith(PREPARED):
        shutil.copy(HERE / "hidden_zoo_models.py", work / "hidden_zoo_models.py")
        return {"source": entry.source, "inputs": entry.inputs, "seconds": 0.0}
    if args.ultralytics and entry.name.startswith("yolo"):  # on this process's path only
        env = {**env, "PYTHONPATH": os.pathsep.join([str(args.ultralytics.resolve()), env["PYTHONPATH"]])}
    done = run_process([sys.executable, str(HERE / "hidden_zoo_entries.py"), entry.name, str(work)], args.timeout,
                       env=env)
    made = work / "prepared.json"
    if done["rc"] != 0 or not made.exists():
        tail = [line.strip() for line in done["stderr"].splitlines() if line.strip()][-2:]
        return {"error": "making the model failed: " + " | ".join(tail), "seconds": done["wall"]}
    return {**json.loads(made.read_text()), "seconds": done["wall"]}


def recipe_for(entry, made: dict, precision: str, work: Path) -> Path:
    data = {"name": f"{entry.name}_{precision}", "source": made["source"], "inputs": made["inputs"],
            "engine": {**ENGINE, "precision": precision}}
    if precision in ("int8", "fp8"):
        data["precision"] = {"calibration": {"data": calibration(made["inputs"], work / "calib")}}
    path = work / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def summarise(report: dict | None, done: dict) -> dict:
    """What the table shows of one build: outcome, parity and gate numbers, the seconds of the steps that ran."""
    row = {"exit_code": done["rc"], "wall": done["wall"]}
    if report is None:
        tail = [line.strip() for line in done["stderr"].splitlines() if line.strip()]
        return {**row, "result": f"no report (exit {done['rc']}): " + (tail[-1] if tail else "no output")}
    steps = report["steps"]
    row["steps"] = {s["step"]: s["seconds"] for s in steps if s["status"] in ("built", "failed") and s.get("seconds")}
    row["warnings"] = [f"{s['step']}: {w}" for s in steps for w in (s.get("meta") or {}).get("warnings") or []]
    failed = next((s for s in steps if s["status"] == "failed"), None)
    if failed is not None:
        verdict = "refused" if done["rc"] == 2 else "failed"
        row["result"] = f"{verdict} at {failed['step']}: {first_line(failed.get('error'))}"
        row["error"] = (failed.get("error") or "")[:4000]
    elif report.get("recipe_errors"):
        row["result"] = "recipe error: " + first_line(report["recipe_errors"][0])
    else:
        engine = [s for s in steps if s["step"] == "engine"]
        row["result"] = "built" if done["rc"] == 0 and engine and all(
            s["status"] in ("built", "cached") for s in engine) else f"not built (exit {done['rc']})"
    for s in steps:
        meta = s.get("meta") or {}
        if s["step"] == "parity" and meta.get("parity"):
            errors = [o.get("max_abs") for o in meta["parity"].get("outputs", []) if o.get("max_abs") is not None]
            row["parity_max_abs"] = max(errors) if errors else None
        elif s["step"] == "accuracy" and meta.get("accuracy"):
            errors = [o.get("rel_l2") for o in meta["accuracy"].get("outputs", []) if o.get("rel_l2") is not None]
            row["gate_rel_l2"] = max(errors) if errors else None
        elif s["step"] == "engine" and meta:
            row["engine_outputs"] = [o.get("name") for o in meta.get("outputs") or []]
            row["plan_bytes"] = meta.get("plan_bytes")
    return row


def build_entry(entry, args, env: dict) -> list[dict]:
    work = args.work / entry.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    made = prepare(entry, work, env, args)
    rows = []
    for precision in entry.precisions:
        base = {"model": entry.name, "family": entry.family, "precision": precision, "expect": entry.expect}
        if "error" in made:
            rows.append({**base, "result": made["error"], "prepare_seconds": made["seconds"]})
            continue
        report = work / f"report-{precision}.json"
        done = run_process([sys.executable, "-m", "trtbuild", str(recipe_for(entry, made, precision, work)),
                            "--cache-dir", str(work / "cache"), "--report", str(report), "--jobs", "1", "-q"],
                           args.timeout, cwd=work, env=env)
        data = json.loads(report.read_text()) if report.exists() else None
        rows.append({**base, **summarise(data, done), "prepare_seconds": made["seconds"]})
        if done["timed_out"]:
            rows[-1]["result"] = f"timeout after {args.timeout:.0f} s"
        print(f"{entry.name} {precision}: {rows[-1]['result'][:160]}", file=sys.stderr, flush=True)
    if not args.keep:
        shutil.rmtree(work / "cache", ignore_errors=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """One row per model: each precision's result (built, or the first line of what stopped it), parity of
    the export, the accuracy gate per precision, and the seconds of the steps each build ran."""
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    lines = ["| model | family | " + " | ".join(precisions) + " | parity max abs | gate rel L2 ("
             + " / ".join(p for p in precisions if p != "fp32") + ") | steps run, s (" + " / ".join(precisions) + ") |",
             "| --- | --- | " + "--- | " * len(precisions) + "--- | --- | --- |"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["precision"]: r for r in rows if r["model"] == model}
        cells, shown = [], None
        for p in precisions:
            result = mine[p]["result"] if p in mine else "not run"
            result = result if len(result) <= 200 else result[:197] + "..."
            cells.append("same" if result == shown and result not in ("built", "not run") else result.replace("|", "\\|"))
            shown = result
        parity = next((f"{r['parity_max_abs']:.1e}" for r in mine.values()
                       if "parity" in (r.get("steps") or {}) and r.get("parity_max_abs") is not None), "-")
        gates = " / ".join(f"{mine[p]['gate_rel_l2']:.1e}" if mine.get(p, {}).get("gate_rel_l2") is not None else "-"
                           for p in precisions if p != "fp32")
        steps = " / ".join(", ".join(f"{k} {v:.1f}" for k, v in (mine[p].get("steps") or {}).items()) or "-"
                           if p in mine else "-" for p in precisions)
        family = next(iter(mine.values()))["family"]
        lines.append(f"| {model} | {family} | " + " | ".join(cells) + f" | {parity} | {gates} | {steps} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated entry names (default: all)")
    parser.add_argument("--precisions", default="", help="override every entry's precisions, e.g. fp32")
    parser.add_argument("--ultralytics", type=Path, help="a folder holding ultralytics (pip install --target)")
    parser.add_argument("--work", type=Path, help="keep recipes and reports here (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep each model's cache (with --work)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per build (default 900)")
    parser.add_argument("--out", type=Path, default=HERE / "hidden-zoo-results.json")
    parser.add_argument("--tables", type=Path, metavar="RESULTS_JSON", help="print an earlier run's table")
    args = parser.parse_args()
    if args.tables:
        print(markdown(json.loads(args.tables.read_text())["rows"]))
        return
    entries = [BY_NAME[n] for n in args.only.split(",")] if args.only else ENTRIES
    if args.precisions:
        entries = [e.__class__(**{**e.__dict__, "precisions": tuple(args.precisions.split(","))}) for e in entries]
    compile_bytecode()
    temporary = args.work is None
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="trtbuild-hidden-zoo-"))).resolve()
    path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, **OFFLINE, "PYTHONPATH": os.pathsep.join(path)}
    results = {"environment": environment(), "rows": []}
    if args.ultralytics:
        found = [p.name.removesuffix(".dist-info") for p in args.ultralytics.glob("ultralytics-*.dist-info")]
        results["environment"]["versions"]["ultralytics"] = found[0].split("-")[1] if found else None
    started = time.perf_counter()
    try:
        for entry in entries:
            results["rows"] += build_entry(entry, args, env)
            results["seconds"] = round(time.perf_counter() - started, 1)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        if temporary:
            shutil.rmtree(args.work, ignore_errors=True)
    print(markdown(results["rows"]))
    print(f"results: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
