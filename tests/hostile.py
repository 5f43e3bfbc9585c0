"""Generated hostile recipes and models for tests/test_fuzz.py: a fixed seed gives the same cases each run.

`world(folder)` lays out what the cases point at (a model, a FIFO, a socket, a link loop, a link to
/dev/zero, a folder, calibration data, a file outside). `recipe_cases` and `model_cases` return cases:
{"id", "recipe" (a path), "kind" ("recipe" | "model"), "build" (a real build, not --dry-run)}.
"""

from __future__ import annotations

import copy
import math
import os
import random
import socket
from pathlib import Path

import numpy as np
import onnx
import yaml
from conftest import conv_model, recipe_dict
from onnx import TensorProto, helper, numpy_helper

SEED = 24

# Values no recipe field should choke on: wrong types, absurd numbers, odd strings and paths.
VALUES = [
    None, True, False, 0, -1, 1, 3, 2**31, 2**63, -2**63, 2**64, 10**40, 0.5, -0.0, 1e308, math.inf, -math.inf,
    math.nan, "", " ", ".", "..", "/", "a\0b", "\t", "x" * 300, "é" * 200, "/etc/passwd", "/etc/*", "**",
    "../" * 40 + "etc/passwd", "fifo", "zero", "loop1", "sock", "folder", "/dev/zero", "/dev/urandom", "16EiB",
    "-1GiB", "1e400", "NaN", "sm86", "tensorrt-rtx:sm" + "9" * 40, "tensorrt-rtx:sm86" + "+sm86" * 40, "auto",
    "/proc/self/mem", "/proc/self/status", "m.onnx", "calib/*.npy", "torchvision.models:resnet18", "a:b", "fp8", "int8", [], {}, [None], [[1]], [1] * 100,
    list(range(70)), {"a": 1}, {"x" * 50: 1}, ["fifo"], ["/etc/*"], ["**"], [""], [-1, 3, 16, 16], [2**63, 3, 16, 16],
    [True, "1", 1.0, 16], [0, 0, 0, 0], [1, 3, 16],
]
# Numbers of the right type at and past the edges of what the backends accept: many of these recipes
# are valid, and are built for real.
NUMBERS = {
    ("inputs", "x", "max"): [[v, 3, 16, 16] for v in (2, 4, 64, 2**31 - 1, 2**31, 2**62)],
    ("inputs", "x", "opt"): [[v, 3, 16, 16] for v in (1, 4, 5)],
    ("engine", "workspace"): [1, 1024, 2**20, 2**60, 2**60 + 1, 2**62, "1KiB", "1EiB", "2EiB"],
    ("engine", "optimization_level"): [0, 5, 6, -1], ("onnx", "opset"): [6, 7, 23, 24],
    ("parity", "seed"): [0, 2**64 - 1, 2**64], ("parity", "atol"): [0.0, 1e308], ("parity", "rtol"): [0, 1e-300],
    ("step_timeout",): [1e9, 1e10, 1e-3, 30], ("precision", "max_relative_error"): [1e-300, 1e300],
}
FIELDS = [
    ("name",), ("source",), ("source", "framework"), ("source", "path"), ("source", "checkpoint"),
    ("source", "entrypoint"), ("source", "args"), ("source", "kwargs"), ("source", "python_path"), ("source", "deps"),
    ("source", "outputs"), ("source", "inputs_as_nchw"), ("source", "exporter"), ("inputs",), ("inputs", "x"),
    ("inputs", "x", "shape"), ("inputs", "x", "min"), ("inputs", "x", "opt"), ("inputs", "x", "max"),
    ("inputs", "x", "dtype"), ("inputs", "y"), ("onnx",), ("onnx", "opset"), ("onnx", "simplify"),
    ("onnx", "simplify_check"), ("parity", "seed"), ("parity", "atol"), ("parity", "rtol"), ("parity", "data"),
    ("parity", "enabled"), ("precision", "calibration"), ("precision", "calibration", "data"),
    ("precision", "calibration", "batches"), ("precision", "calibration", "loader"), ("precision", "keep_fp32"),
    ("precision", "max_relative_error"), ("engine",), ("engine", "workspace"), ("engine", "optimization_level"),
    ("engine", "precision"), ("engine", "backend"), ("step_timeout",), ("targets",), ("unknown",),
]


def world(folder: Path) -> list:
    """The files cases point at, beside the recipes; returns what must stay alive (the socket)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(conv_model(), folder / "m.onnx")
    os.mkfifo(folder / "fifo")
    (folder / "zero").symlink_to("/dev/zero")
    (folder / "loop1").symlink_to("loop2")
    (folder / "loop2").symlink_to("loop1")
    (folder / "folder").mkdir()
    (folder / "calib").mkdir()
    for i in range(2):
        np.save(folder / "calib" / f"{i}.npy", np.random.default_rng(i).standard_normal((2, 3, 16, 16), np.float32))
    server = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(folder)  # a socket's path is limited to 108 bytes
    try:
        server.bind("sock")
    finally:
        os.chdir(here)
    return [server]


def _set(data: dict, path: tuple, value) -> None:
    for part in path[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[path[-1]] = value


def _mutated(rng: random.Random) -> dict:
    data = recipe_dict("m.onnx")
    data["engine"].pop("backend")  # the default: auto
    if rng.random() < 0.25:
        for _ in range(rng.choice((1, 2))):
            path = rng.choice(list(NUMBERS))
            _set(data, path, rng.choice(NUMBERS[path]))
        return data
    for _ in range(rng.choice((1, 1, 2, 3))):
        path = rng.choice(FIELDS)
        value = copy.deepcopy(rng.choice(VALUES))  # the next mutation may write into it
        if path[-1] in ("shape", "min", "opt", "max") and rng.random() < 0.5:
            value = [1, rng.choice(VALUES), 16, 16]
        _set(data, path, value)
    return data


def _structural(rng: random.Random) -> list[tuple[str, bytes]]:
    """YAML that attacks the reader: bombs, recursion, depth, size, encodings, tags, odd documents."""
    def bomb(depth: int, width: int = 9) -> str:
        lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth + 1)]
        return "\n".join(lines) + "\n"

    texts = [(f"bomb{d}", bomb(d)) for d in range(1, 11)]
    texts += [("bomb-in-inputs", "name: x\nsource: {framework: onnx, path: m.onnx}\ninputs:\n  " + bomb(6).replace("\n", "\n  "))]
    texts += [("recursive-map", "name: x\nengine: &e {x: *e}\n"), ("recursive-list", "a: &l [1, [2, *l]]\n"),
              ("recursive-deep", "name: &n {a: {b: {c: [*n]}}}\n"), ("undefined-alias", "name: *nope\n"),
              ("merge", "base: &b {framework: onnx, path: m.onnx}\nname: x\nsource: {<<: *b}\n"),
              ("merge-bomb", "a: &a {x: 1}\nb: &b {<<: [*a, *a, *a]}\nname: x\nsource: {<<: [*b, *b]}\n")]
    for depth in (10, 63, 64, 65, 1000, 100_000):
        texts.append((f"deep-list{depth}", "name: x\nsource: " + "[" * depth + "]" * depth + "\n"))
        texts.append((f"deep-map{depth}", "name: x\nsource: " + "{a: " * depth + "1" + "}" * depth + "\n"))
    texts += [(f"deep-block{d}", "name: x\n" + "".join(f"{' ' * i}k{i}:\n" for i in range(d)) + " " * d + "v\n")
              for d in (50, 70, 300)]
    texts += [("empty", ""), ("scalar", "just text\n"), ("list", "- a\n- b\n"), ("null", "~\n"), ("multi", "a: 1\n---\nb: 2\n"),
              ("complex-key", "? [a, b]\n: 1\nname: x\n"), ("map-key", "{a: 1}: 2\n"), ("dup", "name: a\nname: b\n"),
              ("python-tag", "name: !!python/object/apply:os.system ['true']\n"), ("binary", "name: !!binary aGVsbG8=\n"),
              ("set", "name: !!set {a, b}\n"), ("date", "name: 2024-01-01\nsource: {framework: onnx, path: m.onnx}\n"),
              ("timestamp-kwargs", "name: x\nsource: {framework: pytorch, entrypoint: 'a:b', kwargs: {t: 2024-01-01}}\n"),
              ("tab", "name:\tx\n\tsource: 1\n"), ("unterminated", 'name: "x\n'), ("bad-indent", "name: x\n  source: 1\n"),
              ("long-line", "name: " + "x" * 500_000 + "\n"), ("many-keys", "".join(f"k{i}: {i}\n" for i in range(20_000))),
              ("many-items", "name: x\nsource: {framework: pytorch, entrypoint: 'a:b', args: [" + "1, " * 60_000 + "1]}\n"),
              ("bom", "\ufeffname: x\n"), ("directive", "%YAML 1.1\n%TAG ! tag:evil:\n--- !x\nname: x\n"),
              ("int-4301", "name: x\nsource: {framework: onnx, path: m.onnx}\nengine: {workspace: " + "9" * 4301 + "}\n"),
              ("step-timeout-bool", "name: x\nsource: {framework: onnx, path: m.onnx}\nstep_timeout: true\n"),
              ("int-keys", "1: a\n2: b\n"), ("null-key", "~: a\nname: x\n"), ("bool-key", "true: a\n")]
    raw = [(name, text.encode()) for name, text in texts]
    raw += [("invalid-utf8", b"name: \xff\xfe\n"), ("nul", b"name: x\x00y\n"), ("latin1", "name: café\n".encode("latin-1")),
            ("utf16", "name: x\n".encode("utf-16")), ("too-big", b"name: x\n" + b"#" * (1 << 20)),
            ("random-bytes", rng.randbytes(4096)), ("control", bytes(range(32)) + b"\n")]
    return raw


def recipe_cases(folder: Path, count: int) -> list[dict]:
    """`count` mutated recipes plus every structural one and recipe files that are not regular files."""
    rng = random.Random(SEED)
    cases = []
    for name, data in _structural(rng):
        (folder / f"s-{name}.yaml").write_bytes(data)
        cases.append(f"s-{name}.yaml")
    for i in range(count):
        text = yaml.safe_dump(_mutated(rng), sort_keys=False, allow_unicode=True)
        (folder / f"m{i:03d}.yaml").write_text(text, encoding="utf-8")
        cases.append(f"m{i:03d}.yaml")
    for name, target in (("zero", "/dev/zero"), ("urandom", "/dev/urandom"), ("fifo", "fifo"), ("sock", "sock"),
                         ("loop", "loop1"), ("folder", "folder"), ("missing", "nothing-here")):
        (folder / f"f-{name}.yaml").symlink_to(target)
        cases.append(f"f-{name}.yaml")
    return [{"id": name, "recipe": str(folder / name), "kind": "recipe", "build": False} for name in cases]


def _model_variants(rng: random.Random, outside: Path) -> list[tuple[str, object]]:
    """(name, model): a ModelProto, raw bytes, or a callable(folder) that writes model.onnx and more."""
    good = conv_model()
    data = good.SerializeToString()
    variants: list[tuple[str, object]] = [
        ("empty", b""), ("one-byte", b"\x08"), ("random-100", rng.randbytes(100)), ("random-64k", rng.randbytes(65536)),
        ("text", b"name: not a model\n"),
    ]
    variants += [(f"truncated-{n}", data[:n]) for n in sorted(rng.sample(range(1, len(data)), 4))]
    flipped = bytearray(data)
    for _ in range(20):
        flipped[rng.randrange(len(flipped))] = rng.randrange(256)
    variants.append(("flipped", bytes(flipped)))

    def edited(change):
        model = onnx.ModelProto()
        model.CopyFrom(good)
        change(model)
        return model

    dims = lambda v: lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[1], "dim_value", v)
    variants += [
        ("ir-99", edited(lambda m: setattr(m, "ir_version", 99))), ("ir-0", edited(lambda m: setattr(m, "ir_version", 0))),
        ("opset-9999", edited(lambda m: setattr(m.opset_import[0], "version", 9999))),
        ("opset-0", edited(lambda m: setattr(m.opset_import[0], "version", 0))),
        ("dim-huge", edited(dims(2**62))), ("dim-negative", edited(dims(-5))), ("dim-zero", edited(dims(0))),
        ("no-outputs", edited(lambda m: m.graph.ClearField("output"))),
        ("no-nodes", edited(lambda m: m.graph.ClearField("node"))),
        ("evil-op", edited(lambda m: m.graph.node.append(helper.make_node("Foo", ["y"], ["z"], domain="evil")))),
        ("cycle", edited(_cycle)),
        ("long-names", edited(lambda m: [setattr(n, "name", "n" * 5000) for n in m.graph.node])),
        ("weight-type", edited(lambda m: setattr(m.graph.initializer[0], "data_type", TensorProto.STRING))),
        ("deep-if", _deep_if(30)),
    ]

    def external(location, make=None):
        def write(folder: Path):
            model = onnx.ModelProto()
            model.CopyFrom(good)
            onnx.save(model, folder / "model.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
            if make:
                make(folder)
            if location != "w.data":
                proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
                for tensor in proto.graph.initializer:
                    for entry in tensor.external_data:
                        if entry.key == "location":
                            entry.value = location
                onnx.save(proto, folder / "model.onnx")
        return write

    def moved_out(folder: Path):
        os.replace(folder / "w.data", outside / f"{folder.name}.data")
        (folder / "w.data").symlink_to(outside / f"{folder.name}.data")

    def folder_out(folder: Path):
        (outside / folder.name).mkdir()
        os.replace(folder / "w.data", outside / folder.name / "w.data")
        (folder / "sub").symlink_to(outside / folder.name)

    def replaced(kind):
        def make(folder: Path):
            (folder / "w.data").unlink()
            if kind == "fifo":
                os.mkfifo(folder / "w.data")
            else:
                (folder / "w.data").symlink_to(kind)
        return make

    variants += [
        ("ext-inside", external("w.data")), ("ext-link-out", external("w.data", moved_out)),
        ("ext-folder-out", external("sub/w.data", folder_out)), ("ext-up", external("../../outside/secret.data")),
        ("ext-absolute", external(str(outside / "secret.data"))), ("ext-etc", external("/etc/passwd")),
        ("ext-fifo", external("w.data", replaced("fifo"))), ("ext-zero", external("w.data", replaced("/dev/zero"))),
        ("ext-missing", external("gone.data")), ("ext-empty", external("")), ("ext-dot", external(".")),
        ("ext-long", external("d" * 300)), ("ext-nul", external("w.data\0x")),
        ("ext-offset", _external_field("offset", str(2**62))), ("ext-length", _external_field("length", str(2**40))),
        ("ext-bad-number", _external_field("offset", "-7")), ("ext-abc", _external_field("offset", "abc")),
    ]
    return variants


def _cycle(model) -> None:
    """y feeds the first node's input: the graph loops."""
    model.graph.node.append(helper.make_node("Relu", ["y"], ["looped"], name="back"))
    model.graph.node[0].input[0] = "looped"


def _external_field(key: str, value: str):
    def write(folder: Path):
        onnx.save(conv_model(), folder / "model.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
        proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        proto.graph.initializer[0].external_data.add(key=key, value=value)
        onnx.save(proto, folder / "model.onnx")
    return write


def _deep_if(depth: int) -> bytes:
    """If nodes nested `depth` deep (protobuf refuses to build much deeper)."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    leaf = helper.make_graph([helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(1, np.float32)))],
                             "leaf", [], [out])
    graph = leaf
    for _ in range(depth):
        node = helper.make_node("If", ["cond"], ["y"], then_branch=graph, else_branch=leaf)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def model_cases(folder: Path, builds: tuple[str, ...]) -> list[dict]:
    """One folder per hostile model with its recipe, planned (--dry-run); those named in `builds` are also
    built for real."""
    rng = random.Random(SEED + 1)
    outside = folder / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.data").write_bytes(b"SECRET" * 1000)
    cases = []
    for name, model in _model_variants(rng, outside):
        here = folder / name
        here.mkdir()
        if isinstance(model, bytes):
            (here / "model.onnx").write_bytes(model)
        elif isinstance(model, onnx.ModelProto):
            (here / "model.onnx").write_bytes(model.SerializeToString())
        else:
            model(here)
        recipe = recipe_dict("model.onnx") | {"name": "hostile", "onnx": {"simplify": rng.random() < 0.5}}
        recipe["engine"]["workspace"] = "64MiB"
        (here / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        cases.append({"id": name, "recipe": str(here / "recipe.yaml"), "kind": "model", "build": False})
    return cases + [case | {"build": True} for case in cases if case["id"] in builds]
