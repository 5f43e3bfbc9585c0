"""Third-party models through trtbuild, against a plain TensorRT-RTX script.

ONNX corpus: every model in the installed onnx package's backend test data (folders
pytorch-converted, pytorch-operator and simple: each test's model.onnx; light: light_*.onnx),
built twice, each in a process of its own with a timeout:

  plain     the calls a hand-written script makes: trt.Builder, create_network(STRONGLY_TYPED),
            OnnxParser.parse_from_file, a builder config (1 GiB workspace, optimization level 0),
            an optimization profile when an input is dynamic, build_serialized_network.
            "Builds" means the parse succeeded and the plan is not None.
  trtbuild  a recipe with only name, source, the ranges of dynamic dims, backend tensorrt-rtx and
            optimization_level 0, built into a fresh cache; "builds" means exit code 0 with the
            engine step built.

Dynamic dims (a dim_param or no dim_value, and what TensorRT reports as -1) get the same range in
both: min 1, opt the dim in the test's test_data_set_0 input (1 if there is none), max max(4, opt).

Zoo (bench/zoo.py): models made from libraries' own code with random weights (torchvision, timm,
transformers, Keras applications, a TF SavedModel), exported by trtbuild with its default exporter
and opset.

    python bench/corpus.py [--onnx] [--zoo] [--limit N] [--jobs 2] [--only SUBSTRING] [--out results.json]

Neither --onnx nor --zoo runs both. Results (every model, every step) go to --out (default
bench/corpus-results.json); the tables are printed as Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from common import REPO, compile_bytecode
from corpus_tables import FOLDERS, first_line, markdown


PLAIN_SCRIPT = Path(__file__).with_name("plain_build.py")


# ---------------------------------------------------------------------------------------- processes

def run_process(cmd: list[str], timeout: float, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run cmd in a session of its own; on timeout kill the whole group (trtbuild's workers too)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        timed_out = True
    return {"rc": proc.returncode, "timed_out": timed_out, "stdout": out, "stderr": err,
            "wall": round(time.perf_counter() - started, 2)}


def signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"



# ---------------------------------------------------------------------------------------- ONNX corpus

def onnx_data_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data"


def onnx_models(data: Path) -> list[dict]:
    models = []
    for folder in FOLDERS:
        if folder == "light":
            paths = sorted((data / folder).glob("light_*.onnx"))
            models += [{"folder": folder, "name": p.stem, "path": str(p)} for p in paths]
        else:
            paths = sorted((data / folder).glob("*/model.onnx"))
            models += [{"folder": folder, "name": p.parent.name, "path": str(p)} for p in paths]
    return models


def _test_data(model: dict, kind: str) -> list:
    """test_data_set_0's input_*.pb / output_*.pb (light: <name>_output_0.pb beside the model) as
    TensorProtos; None where a file holds something else (a sequence)."""
    import onnx

    path = Path(model["path"])
    if model["folder"] == "light":
        files = sorted(path.parent.glob(f"{path.stem}_{kind}_*.pb"))
    else:
        files = sorted((path.parent / "test_data_set_0").glob(f"{kind}_*.pb"),
                       key=lambda p: int(p.stem.split("_")[-1]))
    protos = []
    for f in files:
        tensor = onnx.TensorProto()
        try:
            tensor.ParseFromString(f.read_bytes())
            protos.append(tensor if tensor.dims or tensor.raw_data or tensor.data_type else None)
        except Exception:
            protos.append(None)
    return protos


def describe_model(model: dict) -> None:
    """Adds the model's inputs, dynamic ranges, opset and reference output shapes."""
    import onnx

    m = onnx.load(model["path"], load_external_data=False)
    model["opset"] = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    model["ir_version"] = m.ir_version
    initializers = {i.name for i in m.graph.initializer}
    data_inputs = _test_data(model, "input")
    ranges, inputs = {}, []
    for index, value in enumerate(i for i in m.graph.input if i.name not in initializers):
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            inputs.append({"name": value.name, "type": kind})
            continue
        tt = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim] if tt.HasField("shape") else None
        inputs.append({"name": value.name, "type": onnx.TensorProto.DataType.Name(tt.elem_type), "shape": dims})
        if dims and any(d <= 0 for d in dims):
            sample = data_inputs[index] if index < len(data_inputs) else None
            sample_dims = list(sample.dims) if sample is not None and len(sample.dims) == len(dims) else None
            lo, mid, hi = [], [], []
            for i, d in enumerate(dims):
                if d > 0:
                    lo.append(d), mid.append(d), hi.append(d)
                else:
                    opt = sample_dims[i] if sample_dims and sample_dims[i] > 0 else 1
                    lo.append(1), mid.append(opt), hi.append(max(4, opt))
            ranges[value.name] = {"min": lo, "opt": mid, "max": hi}
    model["inputs"], model["ranges"] = inputs, ranges
    model["expected_outputs"] = [{"shape": list(t.dims), "dtype": onnx.TensorProto.DataType.Name(t.data_type)}
                                 if t is not None else None for t in _test_data(model, "output")]


def plain_build(model: dict, timeout: float) -> dict:
    done = run_process([sys.executable, str(PLAIN_SCRIPT), model["path"], json.dumps(model["ranges"])], timeout)
    result = {"wall": done["wall"], "rc": done["rc"]}
    marker = [line for line in done["stdout"].splitlines() if line.startswith("@@RESULT ")]
    if marker:
        result.update(json.loads(marker[-1][len("@@RESULT "):]))
    if done["timed_out"]:
        result.update(built=False, error=f"timeout after {timeout:.0f} s")
    elif done["rc"] != 0:
        tail = [line for line in done["stderr"].splitlines() if line.strip()][-3:]
        what = f"killed by {signal_name(done['rc'])}" if done["rc"] < 0 else f"exit code {done['rc']}"
        result.update(built=False, error=f"crashed ({what})" + (": " + " | ".join(tail) if tail else ""))
    elif not result.get("parsed"):
        result["error"] = "parse: " + (result["parser_errors"][0] if result["parser_errors"] else
                                       first_line("\n".join(result["log_errors"])) or "parse_from_file returned False")
    elif not result.get("built"):
        result["error"] = "build: " + (first_line(result["log_errors"][0]) if result["log_errors"] else
                                       "build_serialized_network returned None")
    result["odd"] = plain_oddities(model, result)
    return result


def plain_oddities(model: dict, result: dict) -> list[str]:
    """What looks wrong about a plan the plain script built: outputs that disagree with the test's
    reference outputs in number, shape or type, parser errors next to a successful parse."""
    if not result.get("built"):
        return []
    odd = []
    if result.get("parser_errors"):
        odd.append("parse returned True with errors: " + result["parser_errors"][0])
    outputs, expected = result.get("outputs", []), model.get("expected_outputs", [])
    if not outputs:
        odd.append("network has no outputs")
    if expected and len(outputs) != len(expected):
        odd.append(f"{len(outputs)} network outputs, the test has {len(expected)} reference outputs")
    trt_types = {"FLOAT": "FLOAT", "HALF": "FLOAT16", "BF16": "BFLOAT16", "INT32": "INT32", "INT64": "INT64",
                 "INT8": "INT8", "UINT8": "UINT8", "BOOL": "BOOL", "FP8": "FLOAT8E4M3FN", "DOUBLE": "DOUBLE"}
    for out, ref in zip(outputs, expected):
        if ref is None:
            continue
        shape = out["shape"]
        if -1 not in shape and shape != ref["shape"]:
            odd.append(f"output {out['name']!r} has shape {shape}, the reference {ref['shape']}")
        if trt_types.get(out["dtype"], out["dtype"]) != ref["dtype"]:
            odd.append(f"output {out['name']!r} is {out['dtype']}, the reference {ref['dtype']}")
    for inp in result.get("inputs", []):
        if inp.get("shape_tensor"):
            odd.append(f"input {inp['name']!r} is a shape tensor (the profile gave it no values)")
    return odd


def trtbuild_build(name: str, recipe: dict, work: Path, timeout: float, keep: bool) -> dict:
    """Writes recipe.yaml into work (beside whatever the recipe needs) and builds it into a fresh cache."""
    work.mkdir(parents=True, exist_ok=True)
    recipe_path, report_path, cache = work / "recipe.yaml", work / "report.json", work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    report_path.unlink(missing_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    done = run_process([sys.executable, "-m", "trtbuild", str(recipe_path), "--cache-dir", str(cache),
                        "--report", str(report_path), "-q"], timeout, cwd=work)
    result = {"exit_code": done["rc"], "wall": done["wall"], "recipe": recipe}
    report = None
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            pass
    if report is not None:
        result["steps"] = [{k: s.get(k) for k in ("step", "target", "status", "seconds", "error")} for s in report["steps"]]
        result["warnings"] = [f"{s['step']}: {w}" for s in report["steps"] for w in (s.get("meta") or {}).get("warnings") or []]
        for s in report["steps"]:
            meta = s.get("meta") or {}
            if s["step"] == "export":
                result["exporter"] = meta.get("exporter") or ("tf2onnx" if "tf2onnx" in meta else None)
            elif s["step"] == "check":
                result["opset"] = meta.get("opset")
            elif s["step"] == "parity" and meta.get("parity"):
                result["parity"] = [{k: o.get(k) for k in ("output", "shape", "ok", "max_abs", "rel_l2", "mismatched")}
                                    for o in meta["parity"].get("outputs", [])]
        result["recipe_errors"] = report.get("recipe_errors", [])
        engine = [s for s in report["steps"] if s["step"] == "engine"]
        result["built"] = done["rc"] == 0 and bool(engine) and all(s["status"] in ("built", "cached") for s in engine)
        if engine and engine[0].get("meta"):
            result["plan_bytes"] = engine[0]["meta"].get("plan_bytes")
        failed = next((s for s in report["steps"] if s["status"] == "failed"), None)
        if failed is not None:
            result["failed_step"], result["error"] = failed["step"], first_line(failed.get("error"))
            result["error_full"] = (failed.get("error") or "")[:4000]
        elif result["recipe_errors"]:
            result["failed_step"], result["error"] = "recipe", first_line(result["recipe_errors"][0])
            result["error_full"] = "\n".join(result["recipe_errors"])[:4000]
    else:
        result["built"] = False
    if done["timed_out"]:
        result.update(built=False, failed_step=result.get("failed_step") or "timeout",
                      error=f"timeout after {timeout:.0f} s")
    elif not result["built"] and "error" not in result:
        tail = [line.strip() for line in done["stderr"].splitlines() if line.strip()]
        what = f"killed by {signal_name(done['rc'])}" if done["rc"] < 0 else f"exit code {done['rc']}"
        where = "no failed step in the report" if report is not None else "no report"
        result.update(failed_step="trtbuild", error=f"{what}, {where}: " + (tail[-1] if tail else "no output"))
    if not result["built"]:
        result["stderr_tail"] = done["stderr"][-2000:]
    if not keep:
        shutil.rmtree(cache, ignore_errors=True)
    return result


def run_onnx_model(model: dict, work: Path, args) -> dict:
    try:
        describe_model(model)
    except Exception as e:  # a file onnx cannot load: both builds still run
        model.update(inputs=[], ranges={}, expected_outputs=[], describe_error=f"{type(e).__name__}: {e}")
    model["plain"] = plain_build(model, args.plain_timeout)
    recipe = {"name": re.sub(r"[^A-Za-z0-9_.-]", "_", model["name"]),
              "source": {"framework": "onnx", "path": model["path"]}}
    if model["ranges"]:
        recipe["inputs"] = model["ranges"]
    recipe["engine"] = {"backend": "tensorrt-rtx", "optimization_level": 0}
    model["trtbuild"] = trtbuild_build(model["name"], recipe, work / model["folder"] / model["name"],
                                       args.trtbuild_timeout, args.keep)
    return model


# ---------------------------------------------------------------------------------------- driver

class Progress:
    def __init__(self, total: int, results: dict, out: Path):
        self.total, self.done, self.results, self.out = total, 0, results, out
        self.lock, self.started = threading.Lock(), time.perf_counter()

    def finished(self, label: str, line: str) -> None:
        with self.lock:
            self.done += 1
            print(f"[{self.done}/{self.total} {time.perf_counter() - self.started:6.0f}s] {label}: {line}",
                  file=sys.stderr, flush=True)
            save(self.results, self.out)


def save(results: dict, out: Path) -> None:
    for _ in range(10):  # other threads may be filling in their model's record meanwhile
        try:
            text = json.dumps(results, indent=1, default=str) + "\n"
            break
        except RuntimeError:
            time.sleep(0.1)
    else:
        return
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)


def environment() -> dict:
    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.rstrip("\n")

    versions = {}
    for module in ("tensorrt_rtx", "onnx", "onnxruntime", "onnxsim", "torch", "torchvision", "timm", "transformers",
                   "tensorflow", "keras", "tf2onnx"):
        try:
            from importlib.metadata import version

            dist = {"tensorrt_rtx": "tensorrt_rtx", "tensorflow": "tensorflow_cpu"}.get(module, module)
            versions[module] = version(dist)
        except Exception:
            versions[module] = None
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "trtbuild").splitlines()]
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "versions": versions,
            "git_commit": git("rev-parse", "--short", "HEAD"), "trtbuild_uncommitted_files": dirty}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", action="store_true", help="the ONNX backend-test corpus")
    parser.add_argument("--zoo", action="store_true", help="the model zoo (bench/zoo.py)")
    parser.add_argument("--limit", type=int, help="only the first N models of each part")
    parser.add_argument("--only", action="append", default=[], help="models whose folder/name contains this (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="models built at once (default 2)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "corpus-results.json")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--work", type=Path, help="keep recipes, reports and caches here (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep each model's trtbuild cache (with --work)")
    parser.add_argument("--plain-timeout", type=float, default=300)
    parser.add_argument("--trtbuild-timeout", type=float, default=600)
    parser.add_argument("--zoo-timeout", type=float, default=1500)
    parser.add_argument("--tables", type=Path, metavar="RESULTS_JSON", help="print the tables of an earlier run; run nothing")
    args = parser.parse_args()
    if args.tables:
        print(markdown(json.loads(args.tables.read_text())))
        return
    if not args.onnx and not args.zoo:
        args.onnx = args.zoo = True

    compile_bytecode()
    work = args.work or Path(tempfile.mkdtemp(prefix="trtbuild-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.perf_counter()
    try:
        if args.onnx:
            models = [m for m in onnx_models(onnx_data_dir())
                      if not args.only or any(o in f"{m['folder']}/{m['name']}" for o in args.only)]
            if args.limit:
                models = models[:args.limit]
            results["onnx"] = models
            progress = Progress(len(models), results, args.out)

            def one(model):
                run_onnx_model(model, work / "onnx", args)
                p, t = model["plain"], model["trtbuild"]
                line = (f"plain {'built' if p.get('built') else 'FAILED (' + p.get('error', '')[:80] + ')'}, trtbuild "
                        + ("built" if t["built"] else f"FAILED {t.get('failed_step')}: {t.get('error', '')[:100]}"))
                progress.finished(f"{model['folder']}/{model['name']}", line)

            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(one, models))
            results["onnx_seconds"] = round(time.perf_counter() - started, 1)
        if args.zoo:
            import zoo

            zoo_started = time.perf_counter()
            entries = [e for e in zoo.ENTRIES if not args.only or any(o in e.name for o in args.only)]
            if args.limit:
                entries = entries[:args.limit]
            results["zoo"] = []
            progress = Progress(len(entries), results, args.out)

            def one_zoo(entry):
                record = {"name": entry.name, "library": entry.library, "description": entry.description}
                results["zoo"].append(record)
                model_work = work / "zoo" / entry.name
                prepared = zoo.prepare(entry, model_work, timeout=args.zoo_timeout)
                record["prepare"] = {k: v for k, v in prepared.items() if k != "recipe"}
                if prepared.get("recipe") is None:
                    record["trtbuild"] = {"built": False, "failed_step": "prepare", "error": prepared.get("error")}
                else:
                    record["trtbuild"] = trtbuild_build(entry.name, prepared["recipe"], model_work,
                                                        args.zoo_timeout, args.keep)
                t = record["trtbuild"]
                progress.finished(entry.name, "built" if t["built"] else
                                  f"FAILED {t.get('failed_step')}: {t.get('error', '')[:120]}")

            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(one_zoo, entries))
            order = {e.name: i for i, e in enumerate(entries)}
            results["zoo"].sort(key=lambda r: order[r["name"]])
            results["zoo_seconds"] = round(time.perf_counter() - zoo_started, 1)
    finally:
        results["seconds"] = round(time.perf_counter() - started, 1)
        save(results, args.out)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = markdown(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    print(f"results: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
