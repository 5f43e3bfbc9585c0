"""Remote cache: a second machine (a fresh local cache) pulls what the first pushed, byte for byte;
a remote that refuses or serves bad bytes degrades to a local build with a warning."""

from __future__ import annotations

import socket

import pytest

from conftest import statuses
from helpers import second_machine
from trtbuild.store.hashing import digest_file


def assert_same_outputs(a: dict, b: dict) -> None:
    for step_a, step_b in zip(a["steps"], b["steps"]):
        for name, path in step_a["outputs"].items():
            assert digest_file(path) == digest_file(step_b["outputs"][name]), name


def test_file_remote_shares_every_step(project, tmp_path):
    remote = f"file://{tmp_path / 'remote'}"
    code, first = project.build("--remote", remote)
    assert code == 0 and set(statuses(first).values()) == {"built"}
    other = second_machine(project)
    code, second = other.build("--remote", remote)
    assert code == 0
    assert statuses(second) == {"check": "cached", "simplify": "cached", "engine": "cached"}
    assert {s["reason"] for s in second["steps"] if s["step"] != "verify"} == {"pulled from the remote cache"}
    assert_same_outputs(first, second)
    code, third = other.build("--remote", remote)
    assert {s["reason"] for s in third["steps"] if s["step"] != "verify"} == {"up to date"}


def test_dry_run_and_status_see_what_the_remote_holds(project, tmp_path, capsys):
    import json

    from trtbuild.commands.cli import main

    remote = f"file://{tmp_path / 'remote'}"
    assert project.build("--remote", remote)[0] == 0
    other = second_machine(project)
    code, dry = other.build("--remote", remote, "--dry-run")
    # Every step, the engine included: its key comes from the remote records of the steps before it.
    assert code == 0 and set(statuses(dry).values()) == {"would-pull"}
    assert not (other.cache / "objects").exists()  # nothing was fetched
    capsys.readouterr()
    args = ["status", str(other.recipe), "--cache-dir", str(other.cache), "--json"]
    assert main([*args, "--remote", remote]) == 0
    [cell] = json.loads(capsys.readouterr().out)["matrix"]["conv"].values()
    assert cell["state"] == "remote"
    assert main(args) == 1  # without the remote, the engine would have to be built here
    [cell] = json.loads(capsys.readouterr().out)["matrix"]["conv"].values()
    assert cell["state"] == "missing"


def test_corrupt_remote_object_is_not_used(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    code, first = project.build("--remote", f"file://{remote}")
    plan_digest = first["steps"][2]["key"]
    for obj in (remote / "objects").glob("*/*"):
        obj.chmod(0o644)
        obj.write_bytes(b"tampered")
    other = second_machine(project)
    code, second = other.build("--remote", f"file://{remote}")
    assert code == 0 and set(statuses(second).values()) == {"built"}
    assert "does not match its digest; building locally" in capsys.readouterr().err
    assert second["steps"][2]["key"] == plan_digest


@pytest.mark.parametrize("tamper, problem", [
    (lambda r: r["outputs"].update({"../../../planted": r["outputs"].pop("io.json")}), "is not a plain file name"),
    (lambda r: r["outputs"]["io.json"].update(digest="../../etc/passwd"), "digest is not a SHA-256"),
    (lambda r: r.update(key="0" * 64), "its key is not the step's"),
])
def test_a_tampered_remote_record_is_rejected(project, tmp_path, capsys, tamper, problem):
    import json

    remote = tmp_path / "remote"
    assert project.build("--remote", f"file://{remote}")[0] == 0
    records = [p for p in (remote / "actions").glob("*/*.json") if "io.json" in json.loads(p.read_text())["outputs"]]
    [check] = records
    record = json.loads(check.read_text())
    tamper(record)
    check.write_text(json.dumps(record))
    other = second_machine(project)
    capsys.readouterr()
    code, second = other.build("--remote", f"file://{remote}")
    assert code == 0 and statuses(second)["check"] == "built"
    err = capsys.readouterr().err
    assert "remote record of step" in err and problem in err and "building locally" in err
    assert not list(tmp_path.rglob("planted"))  # nothing written outside the cache


def test_local_hits_are_pushed_once_the_remote_is_used(project, tmp_path):
    remote = f"file://{tmp_path / 'remote'}"
    assert project.build()[0] == 0  # built before the team adopted --remote
    code, hits = project.build("--remote", remote)
    assert code == 0 and set(statuses(hits).values()) == {"cached"}
    other = second_machine(project)
    code, pulled = other.build("--remote", remote)
    assert code == 0
    assert {s["reason"] for s in pulled["steps"] if s["step"] != "verify"} == {"pulled from the remote cache"}
    assert_same_outputs(hits, pulled)


@pytest.fixture
def s3(monkeypatch):
    """An S3 API on localhost (moto's server) with one bucket."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="engines")
    import fsspec

    fsspec.config.set_conf_env(fsspec.config.conf)  # pick up FSSPEC_S3_* set above
    yield "s3://engines/nightly"
    server.stop()


def test_s3_remote_shares_every_step(project, s3):
    code, first = project.build("--remote", s3)
    assert code == 0 and set(statuses(first).values()) == {"built"}
    other = second_machine(project)
    code, second = other.build("--remote", s3)
    assert code == 0 and set(statuses(second).values()) == {"cached"}
    assert_same_outputs(first, second)


def test_remote_that_refuses_degrades_to_local_build(project, s3, capsys):
    code, report = project.build("--remote", "s3://no-such-bucket/x")
    assert code == 0 and set(statuses(report).values()) == {"built"}
    err = capsys.readouterr().err
    assert err.count("remote cache s3://no-such-bucket/x unavailable") == 1 and "building locally" in err


def test_remote_that_is_down_degrades_to_local_build(project, monkeypatch, capsys):
    pytest.importorskip("s3fs")  # without it, --remote s3:// is a usage error naming the install, not a build
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    code, report = project.build("--remote", "s3://engines/nightly")
    assert code == 0 and set(statuses(report).values()) == {"built"}
    assert "remote cache s3://engines/nightly unavailable" in capsys.readouterr().err
