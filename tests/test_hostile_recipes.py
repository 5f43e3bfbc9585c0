"""Hostile and broken recipes: each is refused at file:line with exit 2, before anything blocks, recurses
or expands without bound (tests/test_fuzz.py runs a few hundred generated ones under time and memory limits)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from trtbuild.commands.cli import main
from trtbuild.errors import RecipeError
from trtbuild.recipes.loader import load_recipe

BASE = "name: x\nsource: {framework: onnx, path: m.onnx}\n"


def problems(tmp_path, text: str, name: str = "r.yaml") -> list[str]:
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value.problems


def billion_laughs(depth: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("depth", [7, 8, 12])
def test_yaml_alias_bomb_is_refused_at_its_line(tmp_path, depth):
    text = billion_laughs(depth)
    assert len(text) < 1000
    [problem] = problems(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'r.yaml'}:6: the recipe expands to more than 100000 values")


def test_aliases_within_the_limit_still_work(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "r.yaml").write_text(BASE + "inputs:\n  a: {shape: &s [1, 3, 8, 8]}\n  b: {shape: *s}\n")
    assert load_recipe(tmp_path / "r.yaml").recipe.inputs["b"].shape == [1, 3, 8, 8]


def test_recursive_alias_is_refused(tmp_path):
    [problem] = problems(tmp_path, "name: x\nengine: &e {x: *e}\n")
    assert problem == (f"{tmp_path / 'r.yaml'}:2: YAML alias *e is inside the node &e it names (a recursive alias): "
                       "write the values out")


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_is_refused(tmp_path, depth):
    [problem] = problems(tmp_path, "name: x\nsource: " + "[" * depth + "]" * depth + "\n")
    assert problem == f"{tmp_path / 'r.yaml'}:2: YAML nested more than 64 levels deep"


def test_recipe_files_that_are_not_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "big.yaml").write_bytes(b"name: x\n" + b"#" * (2 << 20))
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    expected = {
        "fifo.yaml": "cannot read recipe: a FIFO, not a recipe file",
        "dir.yaml": "cannot read recipe: a directory, not a recipe file",
        "zero.yaml": "cannot read recipe: a character device, not a recipe file",
        "/dev/urandom": "cannot read recipe: a character device, not a recipe file",
        "big.yaml": "recipe file is larger than 1 MiB; is it a recipe?",
    }
    for name, message in expected.items():
        path = tmp_path / name
        with pytest.raises(RecipeError) as info:
            load_recipe(path)
        assert info.value.problems == [f"{path}: {message}"]


def test_cli_exits_2_on_a_fifo_recipe_without_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "r.yaml")
    assert main([str(tmp_path / "r.yaml"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "a FIFO, not a recipe file" in err and "Traceback" not in err


@pytest.fixture
def odd_files(tmp_path, monkeypatch):
    """A link loop, a socket, a FIFO, a link to /dev/zero and a folder, beside the recipe."""
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "folder").mkdir()
    server = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(tmp_path)  # a socket's path is limited to 108 bytes: bind by a short relative name
    server.bind("sock")
    yield tmp_path
    server.close()


@pytest.mark.parametrize("value, message", [
    ('""', "empty path: name a file relative to the recipe"),
    ('"."', "{dir} is a directory; expected a file"),
    ('"folder"', "{dir}/folder is a directory; expected a file"),
    ('"a\\0b"', "the path contains a NUL byte"),
    ("loop1", "cannot use 'loop1': Too many levels of symbolic links"),
    ("sock", "{dir}/sock is a socket; expected a file"),
    ("fifo", "{dir}/fifo is a FIFO; expected a file"),
    ("zero", "/dev/zero is a character device; expected a file"),
    ("x" * 300, f"cannot use '{'x' * 300}': File name too long"),
])
def test_source_path_is_checked_before_use(odd_files, value, message):
    found = problems(odd_files, f"name: x\nsource: {{framework: onnx, path: {value}}}\n")
    assert found == [f"{odd_files / 'r.yaml'}:2: source.path: {message.format(dir=odd_files)}"]


def test_checkpoint_parity_data_and_python_path_are_checked(odd_files):
    text = """\
        name: x
        source: {framework: pytorch, entrypoint: "m:f", checkpoint: fifo, python_path: [".", zero]}
        inputs: {x: {shape: [1]}}
        parity: {data: folder}
    """
    recipe = odd_files / "r.yaml"
    assert problems(odd_files, text) == [
        f"{recipe}:2: source.checkpoint: {odd_files}/fifo is a FIFO; expected a file",
        f"{recipe}:4: parity.data: {odd_files}/folder is a directory; expected a file",
        f"{recipe}:2: source.python_path[1]: /dev/zero is a character device; expected a directory",
    ]


@pytest.mark.parametrize("pattern, message", [
    ('"/etc/*"', "'/etc/*': globs are relative to the recipe; write the path from the recipe's folder"),
    ('""', "empty glob: name files relative to the recipe, e.g. 'calib/*.npy'"),
    ('"**"', "'**' matches no file under {dir}"),
    ('"fi*"', "'fi*' matches no file under {dir}"),  # the FIFO is no file to read
])
def test_globs_are_relative_and_match_regular_files(odd_files, pattern, message):
    recipe = odd_files / "r.yaml"
    text = f"{BASE}engine: {{precision: int8}}\nprecision: {{calibration: {{data: {pattern}}}}}\n"
    assert problems(odd_files, text) == [f"{recipe}:4: precision.calibration.data: {message.format(dir=odd_files)}"]
    text = f'name: x\nsource: {{framework: pytorch, entrypoint: "m:f", deps: [{pattern}]}}\ninputs: {{x: {{shape: [1]}}}}\n'
    assert problems(odd_files, text) == [f"{recipe}:2: source.deps[0]: {message.format(dir=odd_files)}"]


@pytest.mark.parametrize("setting, message", [
    ("inputs: {x: {shape: [-1, 3], min: [1, 3], opt: [1, 3], max: [9223372036854775808, 3]}}",
     "3: inputs.x.max[0]: Input should be less than or equal to 2147483647"),
    ("engine: {workspace: 16EiB}", "3: engine.workspace: workspace 16.0 EiB is more than TensorRT accepts (at most 1.0 EiB)"),
    ("engine: {workspace: 18446744073709551616}", "3: engine.workspace: workspace 16.0 EiB is more than TensorRT accepts "
     "(at most 1.0 EiB)"),
    ("engine: {workspace: true}", "3: engine.workspace: workspace True: expected a size such as 512MiB, 4GiB or a "
     "number of bytes"),
    ("parity: {seed: -9223372036854775808}", "3: parity.seed: Input should be greater than or equal to 0"),
    ("step_timeout: .inf", "3: step_timeout: Input should be a finite number"),
    ("step_timeout: 1e300", "3: step_timeout: Input should be less than or equal to 1000000000"),
    ("engine: {optimization_level: true}", "3: engine.optimization_level: Input should be a valid integer, not True"),
    ("onnx: {opset: '17'}", "3: onnx.opset: Input should be a valid integer, not '17'"),
    ("targets: [tensorrt-rtx:sm86" + "+sm86" * 20 + "]", "3: targets[0]: String should have at most 64 characters"),
])
def test_numbers_within_what_the_backend_accepts(tmp_path, setting, message):
    assert problems(tmp_path, f"{BASE}{setting}\n") == [f"{tmp_path / 'r.yaml'}:{message}"]


def test_whole_numbers_are_strict(tmp_path):
    found = problems(tmp_path, BASE + 'inputs: {x: {shape: [true, "1", 1.0]}}\n')
    assert found == [f"{tmp_path / 'r.yaml'}:3: inputs.x.shape[{i}]: Input should be a valid integer, not {v}"
                     for i, v in enumerate(["True", "'1'", "1.0"])]


def test_recipe_name_length_is_bounded(tmp_path):
    found = problems(tmp_path, "name: " + "n" * 240 + "\nsource: {framework: onnx, path: m.onnx}\n")
    assert found == [f"{tmp_path / 'r.yaml'}:1: name: String should have at most 100 characters"]


def test_step_timeout_option_refuses_infinity(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--step-timeout", "inf"])
    assert exit_.value.code == 2
    assert "'inf': expected a positive number of seconds, at most 1000000000" in capsys.readouterr().err


def test_onnxruntime_leaves_no_debug_log(tmp_path):
    """ONNX Runtime's telemetry writes TMPDIR/mat-debug-<pid>.log (and ~/.cache/Microsoft) from every process
    that imports it; a process that imported trtbuild first writes neither."""
    temp, home = tmp_path / "tmp", tmp_path / "home"
    temp.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"TMPDIR": str(temp), "HOME": str(home)}
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, check=True)
    written = [*temp.iterdir(), *home.iterdir()]
    if not written:
        pytest.skip("this ONNX Runtime writes no telemetry files")
    assert any(p.name.startswith("mat-debug-") for p in temp.iterdir())
    for path in written:
        subprocess.run(["rm", "-rf", str(path)], check=True)
    subprocess.run([sys.executable, "-c", "import trtbuild, onnxruntime"], env=env, check=True)
    assert [*temp.iterdir(), *home.iterdir()] == []
