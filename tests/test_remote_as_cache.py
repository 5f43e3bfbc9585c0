"""A remote is a cache, not a switch: a missing or bad object costs one step, which builds here and is
pushed back; --force replaces the remote record; a stalled S3 (a real S3 API, moto's server in its
own process, stopped with SIGSTOP) costs seconds, and SIGTERM ends the run within seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, Project, conv_model, recipe_dict, statuses
from helpers import second_machine
from trtbuild.store.hashing import digest_file

pytestmark = pytest.mark.slow


def _remote_records(remote) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (remote / "actions").glob("*/*.json")}


def _record(remote, step: str) -> dict:
    [record] = [r for r in _remote_records(remote).values() if r["step"].startswith(step)]
    return record


def _object(remote, digest: str):
    return remote / "objects" / digest[:2] / digest


def test_a_missing_remote_object_costs_one_step_and_is_put_back(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    url = remote.as_uri()
    assert project.build("--remote", url)[0] == 0
    simplified = _record(remote, "simplify")["outputs"]["model.onnx"]["digest"]
    _object(remote, simplified).unlink()
    other = second_machine(project)
    capsys.readouterr()
    code, second = other.build("--remote", url)
    err = capsys.readouterr().err
    assert code == 0 and "unavailable" not in err  # the remote stays on for the other steps
    assert "is missing; building locally" in err
    reasons = {s["step"]: s["reason"] for s in second["steps"]}
    assert reasons["check"] == "pulled from the remote cache" and reasons["engine"] == "pulled from the remote cache"
    assert statuses(second)["simplify"] == "built"
    assert digest_file(_object(remote, simplified)) == simplified  # healed: the push put it back
    third = Project(tmp_path / "machine-c")
    third.root.mkdir()
    third.write_model(conv_model())
    third.write_recipe(recipe_dict("conv.onnx"))
    code, pulled = third.build("--remote", url)
    assert code == 0 and set(statuses(pulled).values()) == {"cached"}


def test_a_corrupt_remote_object_is_replaced_by_the_next_push(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    url = remote.as_uri()
    assert project.build("--remote", url)[0] == 0
    check = _record(remote, "check")["outputs"]["io.json"]["digest"]
    _object(remote, check).chmod(0o644)
    _object(remote, check).write_bytes(b"tampered")
    other = second_machine(project)
    capsys.readouterr()
    code, second = other.build("--remote", url)
    err = capsys.readouterr().err
    assert code == 0 and statuses(second)["check"] == "built" and "unavailable" not in err
    assert digest_file(_object(remote, check)) == check


def test_force_replaces_a_bad_remote_record(project, tmp_path):
    remote = tmp_path / "remote"
    url = remote.as_uri()
    assert project.build("--remote", url)[0] == 0
    [path] = [p for p in (remote / "actions").glob("*/*.json") if '"step":"engine@' in p.read_text()]
    record = json.loads(path.read_text())
    record["outputs"]["model.plan"]["digest"] = "0" * 64  # well formed, names an object nobody has
    path.write_text(json.dumps(record))
    code, forced = project.build("--remote", url, "--force", "engine")
    assert code == 0 and statuses(forced)["engine"] == "built"
    pushed = json.loads(path.read_text())
    assert pushed["outputs"]["model.plan"]["digest"] == digest_file(
        next(s for s in forced["steps"] if s["step"] == "engine")["outputs"]["model.plan"])
    code, pulled = second_machine(project).build("--remote", url)
    assert code == 0 and set(statuses(pulled).values()) == {"cached"}


@pytest.fixture
def s3_process(tmp_path):
    """An S3 API (moto's server) in a process of its own, so the test can stop it with SIGSTOP."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}
    try:
        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                             region_name="us-east-1").create_bucket(Bucket="engines")
                break
            except Exception:
                time.sleep(0.1)
        yield server, env
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()


def _cli(project, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trtbuild", str(project.recipe), "--cache-dir", str(project.cache),
                             *args], env=os.environ | env | {"PYTHONPATH": str(REPO)}, cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_stalled_s3_remote_costs_seconds(project, s3_process):
    server, env = s3_process
    first = _cli(project, env, "--remote", "s3://engines/nightly")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    other = second_machine(project)
    os.kill(server.pid, signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
    started = time.monotonic()
    run = _cli(other, env, "--remote", "s3://engines/nightly", "--remote-timeout", "1")
    out, err = run.communicate(timeout=300)
    seconds = time.monotonic() - started
    assert run.returncode == 0 and "Traceback" not in err, err
    assert err.count("remote cache s3://engines/nightly unavailable") == 1
    assert "built      conv/engine" in err
    assert seconds < 60, seconds  # the build alone takes a few seconds; a stall costs a few more, once


def test_sigterm_ends_a_run_stalled_on_the_remote_within_seconds(project, s3_process):
    server, env = s3_process
    os.kill(server.pid, signal.SIGSTOP)
    run = _cli(project, env, "--remote", "s3://engines/nightly", "--remote-timeout", "120")
    time.sleep(8)  # planning done, the first lookup waiting on the stalled remote
    assert run.poll() is None
    sent = time.monotonic()
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert run.returncode == 130 and "Traceback" not in err, err
