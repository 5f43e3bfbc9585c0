"""The build farm on a real multi-node Ray cluster on this host (raylets on this host, a file:// remote):
steps spread over the nodes, route by what a node offers, fail fast when no node offers a target,
and a node that dies mid-step ends its recipe with a clear result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, conv_model, recipe_dict

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

def _this_code() -> dict[str, float]:
    from trtbuild.execution.farm import code_resource
    from trtbuild.steps.action import toolchain

    return {code_resource(toolchain()): 1000.0}


# A node as `trtbuild ray-node` would offer it on a machine with full TensorRT and an sm_86 GPU.
SM86 = {"trtbuild-build-tensorrt-10.13.3.9-sm86": 1, "trtbuild-gpu-sm86": 1} | _this_code()


@pytest.fixture(scope="module")
def cluster():
    """A head that runs no steps (as a KubeRay head is usually set up) and two worker nodes that build
    TensorRT-RTX engines, as `trtbuild ray-node` would offer them on this machine."""
    from ray.cluster_utils import Cluster

    from trtbuild.execution.farm import this_node

    small = {"object_store_memory": 80 * 2**20}
    farm = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **small})
    workers = [farm.add_node(num_cpus=1, resources=this_node(), **small) for _ in range(2)]
    farm.wait_for_nodes()
    farm.workers = workers
    yield farm
    farm.shutdown()


def node_ids(farm) -> list[str]:
    return [node.node_id for node in farm.workers]


def build(folder: Path, address: str, *args: str, remote: Path | None = None, wait: bool = True):
    """The real CLI in a process of its own (a Ray driver), on every recipe in `folder`."""
    report = folder / "report.json"
    report.unlink(missing_ok=True)
    command = [sys.executable, "-m", "trtbuild", "build", str(folder), "--cache-dir", str(folder / "cache"),
               "--report", str(report), "--junit", str(folder / "junit.xml"), "--markdown", str(folder / "summary.md"),
               "--executor", "ray", "--ray-address", address,
               *(["--remote", remote.as_uri()] if remote else []), *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    return process.returncode, json.loads(report.read_text()) if report.exists() else None, err


def write_recipes(folder: Path, count: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        import onnx

        onnx.save(conv_model(seed=i), folder / f"m{i}.onnx")
        data = recipe_dict(f"m{i}.onnx")
        data["name"] = f"m{i}"
        (folder / f"m{i}.yaml").write_text(yaml.safe_dump(data))


def test_a_folder_of_recipes_builds_over_the_nodes_and_reruns_cached(cluster, tmp_path):
    write_recipes(tmp_path / "recipes", 3)
    code, report, err = build(tmp_path / "recipes", cluster.address, remote=tmp_path / "remote")
    assert code == 0, err
    ran = [s for s in report["steps"] if s["status"] == "built"]
    assert {s["step"].split("@")[0] for s in ran} == {"check", "simplify", "engine"} and len(ran) == 9
    assert {s["node"]["id"] for s in ran} == set(node_ids(cluster))  # spread over both workers
    first = f'{ran[0]["node"]["address"]} {ran[0]["node"]["id"][:8]}'
    assert f'<property name="node" value="{first}"' in (tmp_path / "recipes" / "junit.xml").read_text()
    assert f"| {first} |" in (tmp_path / "recipes" / "summary.md").read_text()
    assert len(list((tmp_path / "remote" / "actions").glob("*/*.json"))) == 9  # shared with the next machine
    plans = list((tmp_path / "recipes" / "cache" / "out").glob("m*/tensorrt-rtx-*/model.plan"))
    assert len(plans) == 3 and all(p.stat().st_size > 1000 for p in plans)
    code, report, err = build(tmp_path / "recipes", cluster.address, remote=tmp_path / "remote")
    assert code == 0, err
    assert {s["status"] for s in report["steps"] if s["step"] != "verify"} == {"cached"}


def test_a_multi_node_cluster_without_a_remote_is_a_usage_error(cluster, tmp_path):
    write_recipes(tmp_path / "recipes", 1)
    code, report, err = build(tmp_path / "recipes", cluster.address)
    assert code == 2 and "nodes, which share steps' files through a remote cache: add --remote URL" in err


def test_an_sm86_engine_goes_to_the_node_that_offers_sm86_and_an_unoffered_target_fails_fast(cluster, tmp_path,
                                                                                             monkeypatch):
    # A node that says it has an sm_86 GPU and full TensorRT (neither exists here): Ray takes its word.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, resources=SM86, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    try:
        write_recipes(tmp_path / "recipes", 1)
        code, report, err = build(tmp_path / "recipes", cluster.address, "--target", "tensorrt:sm86",
                                  "--dry-run", remote=tmp_path / "remote")
        assert code == 0, err  # the cluster's TensorRT version names the target, as in the build
        assert [(s["target"], s["status"]) for s in report["steps"] if s["step"] == "engine"] == \
            [("tensorrt-10.13.3.9-sm86", "would-run")]
        status = subprocess.run([sys.executable, "-m", "trtbuild", "status", str(tmp_path / "recipes"), "--json",
                                 "--cache-dir", str(tmp_path / "recipes" / "cache"), "--target", "tensorrt:sm86",
                                 "--executor", "ray", "--ray-address", cluster.address, "--remote",
                                 (tmp_path / "remote").as_uri()], capture_output=True, text=True, timeout=120)
        assert [r["target"] for r in json.loads(status.stdout)["steps"] if r["step"] == "engine"] == \
            ["tensorrt-10.13.3.9-sm86"], status.stderr
        code, report, err = build(tmp_path / "recipes", cluster.address, "--target", "tensorrt:sm86",
                                  "--target", "tensorrt:sm89", remote=tmp_path / "remote")
    finally:
        cluster.remove_node(gpu_node)
    engines = {s["target"]: s for s in report["steps"] if s["step"].startswith("engine")}
    sm86 = engines["tensorrt-10.13.3.9-sm86"]
    assert sm86["node"]["id"] == gpu_node.node_id  # the node said it has TensorRT; it has not
    assert sm86["status"] == "failed" and "tensorrt cannot be imported on this machine" in sm86["error"]
    sm89 = engines["tensorrt-none-sm89"]
    assert sm89["status"] == "failed" and sm89["seconds"] < 5
    assert "no node of the Ray cluster can run m0/engine for tensorrt:sm89: it needs a node with full TensorRT " \
           "and an sm_89 GPU" in sm89["error"]
    assert code == 1


def slow_export(folder: Path, started: Path) -> None:
    """A PyTorch recipe whose model takes a minute to build; it writes its process id to `started`."""
    folder.mkdir()
    (folder / "slownet.py").write_text(
        "import os, pathlib, time\nimport torch\n\n"
        "def build():\n"
        f"    pathlib.Path({str(started)!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "    return torch.nn.Conv2d(3, 4, 3)\n")
    data = recipe_dict("unused")
    data["name"] = "slow"
    data["source"] = {"framework": "pytorch", "entrypoint": "slownet:build", "outputs": ["y"]}
    (folder / "slow.yaml").write_text(yaml.safe_dump(data))


def wait_for(path: Path, process) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() or not path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_cancels_the_running_tasks(cluster, tmp_path):
    started = tmp_path / "export-started"
    slow_export(tmp_path / "recipes", started)
    process = build(tmp_path / "recipes", cluster.address, remote=tmp_path / "remote", wait=False)
    wait_for(started, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    report = json.loads((tmp_path / "recipes" / "report.json").read_text())
    assert next(s for s in report["steps"] if s["step"] == "export")["status"] == "interrupted"
    assert gone(int(started.read_text()), within=15)  # the export on the node stopped too


def test_a_node_killed_mid_step_ends_its_recipe_with_a_clear_result(cluster, tmp_path):
    """A PyTorch export that takes a while runs on a node of its own; that node is killed under it.
    No other node offers a CPU, so the step fails at once, naming why; the run ends."""
    folder = tmp_path / "recipes"
    started = tmp_path / "export-started"
    slow_export(folder, started)
    lone = cluster.add_node(num_cpus=1, resources={"lone": 1}, object_store_memory=80 * 2**20)
    for node in cluster.workers:  # only the lone node offers a CPU while the export runs
        cluster.remove_node(node)
    try:
        process = build(folder, cluster.address, remote=tmp_path / "remote", wait=False)
        wait_for(started, process)
        cluster.remove_node(lone)
        out, err = process.communicate(timeout=120)
    finally:  # the workers back, for any test after this one
        from trtbuild.execution.farm import this_node

        cluster.workers = [cluster.add_node(num_cpus=1, resources=this_node(), object_store_memory=80 * 2**20)
                           for _ in cluster.workers]
    report = json.loads((folder / "report.json").read_text())
    export = next(s for s in report["steps"] if s["step"] == "export")
    assert process.returncode == 1
    assert export["status"] == "failed"
    assert "left the cluster" in export["error"] or "died" in export["error"], export["error"]
    assert gone(int(started.read_text()), within=15)  # no export left running for nobody
    assert {s["status"] for s in report["steps"] if s["step"] != "export"} == {"skipped"}


def test_without_a_cluster_a_local_ray_instance_builds_and_leaves_nothing_behind(tmp_path):
    write_recipes(tmp_path / "recipes", 1)
    report = tmp_path / "recipes" / "report.json"
    done = subprocess.run([sys.executable, "-m", "trtbuild", "build", str(tmp_path / "recipes"), "--executor", "ray",
                           "--cache-dir", str(tmp_path / "cache"), "--report", str(report)],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    ran = [s for s in json.loads(report.read_text())["steps"] if s["status"] == "built"]
    assert len(ran) == 3 and len({s["node"]["id"] for s in ran}) == 1
    assert not (tmp_path / "cache" / "farm-store").exists()  # the files' way between driver and task


def test_ray_node_prints_what_this_machine_offers(capsys):
    from trtbuild.commands.cli import main
    from trtbuild.backends.target import installed_version

    assert main(["ray-node", "--address", "10.0.0.1:6379"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("ray start --address=10.0.0.1:6379 --resources='")
    offers = json.loads(line.split("--resources=", 1)[1].strip("'"))
    assert offers[f"trtbuild-build-tensorrt-rtx-{installed_version('tensorrt-rtx')}"] == os.cpu_count()


def test_a_node_running_other_trtbuild_code_refuses_the_step_and_nothing_is_stored(tmp_path, monkeypatch):
    """A node whose simplify step is another version than the driver's: the step fails naming the
    difference; no result is stored under the driver's key, locally or on the remote."""
    import shutil

    from ray.cluster_utils import Cluster

    from trtbuild.execution.farm import this_node

    other = tmp_path / "other"
    shutil.copytree(Path(__file__).resolve().parents[1] / "trtbuild", other / "trtbuild",
                    ignore=shutil.ignore_patterns("__pycache__"))
    simplify = other / "trtbuild" / "steps" / "simplify.py"
    simplify.write_text(simplify.read_text() + "\nFIXED_POINT_ITERATIONS = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(other))  # the node's processes import this trtbuild
    small = {"object_store_memory": 80 * 2**20}
    farm = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **small})
    try:
        farm.add_node(num_cpus=1, resources=this_node(), **small)
        farm.wait_for_nodes()
        monkeypatch.setenv("PYTHONPATH", str(REPO))  # the driver imports this checkout's trtbuild, not an installed one
        monkeypatch.chdir(tmp_path)  # Ray puts the driver's folder first on its workers' path
        write_recipes(tmp_path / "recipes", 1)
        code, report, err = build(tmp_path / "recipes", farm.address, remote=tmp_path / "remote")
    finally:
        farm.shutdown()
    assert code == 1, err
    steps = {s["step"].split("@")[0]: s for s in report["steps"]}
    assert steps["check"]["status"] == "built"  # its code is the same on both sides
    assert steps["simplify"]["status"] == "failed"
    assert steps["simplify"]["error"].startswith("not built here: this worker would build another action")
    assert "trtbuild's code of the simplify step (trtbuild.steps.simplify)" in steps["simplify"]["error"]
    remote_steps = [json.loads(p.read_text())["step"] for p in (tmp_path / "remote" / "actions").glob("*/*.json")]
    local_steps = [json.loads(p.read_text())["step"] for p in (tmp_path / "recipes" / "cache" / "actions").glob("*/*.json")]
    assert remote_steps == local_steps == ["check"]


def test_steps_go_to_the_nodes_running_the_drivers_trtbuild(tmp_path, monkeypatch):
    """Two nodes: one advertises another trtbuild code version (an older node of the farm), one this
    one's. Every step lands on the matching node and the build succeeds; with only the other node, each
    step fails at once saying what the nodes run."""
    from ray.cluster_utils import Cluster

    from trtbuild.execution.farm import code_resource, this_node
    from trtbuild.steps.action import toolchain

    small = {"object_store_memory": 80 * 2**20}
    older = {name: amount for name, amount in this_node().items() if not name.startswith("trtbuild-code-")}
    older[code_resource("0" * 16)] = 1000.0
    farm = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **small})
    try:
        farm.add_node(num_cpus=1, resources=older, **small)
        farm.wait_for_nodes()
        write_recipes(tmp_path / "alone", 1)
        code, report, err = build(tmp_path / "alone", farm.address, remote=tmp_path / "remote")
        assert code == 1, err
        check = next(s for s in report["steps"] if s["step"] == "check")
        assert check["error"] == (f"no node of the Ray cluster runs this trtbuild (code version {toolchain()}; the "
                                  f"nodes run {'0' * 16}): install the same trtbuild and tools on the nodes and start "
                                  "them with the options `trtbuild ray-node` prints")
        current = farm.add_node(num_cpus=1, resources=this_node(), **small)
        farm.wait_for_nodes()
        write_recipes(tmp_path / "recipes", 2)
        code, report, err = build(tmp_path / "recipes", farm.address, remote=tmp_path / "remote")
        assert code == 0, err
        ran = [s for s in report["steps"] if s["status"] == "built"]
        assert len(ran) == 6 and {s["node"]["id"] for s in ran} == {current.node_id}
    finally:
        farm.shutdown()
