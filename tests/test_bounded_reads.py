"""The one reader of every JSON file a cache holds (trtbuild.store.fsutil.read_json), record consistency
(trtbuild.store.validate.record_inconsistent) and writes over a folder: the pieces the cache fuzz
(tests/test_fuzz_cache.py) and the two-user tests (tests/test_shared_forgeries.py) rest on."""

from __future__ import annotations

import errno
import os
import time

import pytest

from trtbuild.store.fsutil import MAX_DEPTH, NotRegularFile, atomic_write, loads_bounded, read_json
from trtbuild.store.hashing import digest_json
from trtbuild.store.validate import record_inconsistent

ENGINE = (("model.plan", "model.json"), (), False)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_past_the_bound_is_a_value_error_not_a_recursion_error():
    assert loads_bounded(nested(MAX_DEPTH)) is not None
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(ValueError, match="nested deeper"):
            loads_bounded(nested(depth))
    with pytest.raises(ValueError):
        loads_bounded(b"\xff\xfe not json")


def test_a_fifo_a_link_or_a_folder_is_refused_at_once(tmp_path):
    fifo, link, folder, big = tmp_path / "fifo", tmp_path / "link", tmp_path / "folder", tmp_path / "big"
    os.mkfifo(fifo)
    link.symlink_to("/dev/zero")
    folder.mkdir()
    with open(big, "wb") as f:
        f.truncate(1 << 40)  # sparse: refused by its size, before a byte is read
    started = time.monotonic()
    for path in (fifo, folder):
        with pytest.raises(NotRegularFile):
            read_json(path)
    with pytest.raises(OSError) as raised:
        read_json(link)
    assert raised.value.errno == errno.ELOOP  # a link is never followed
    with pytest.raises(OSError) as raised:
        read_json(big)
    assert raised.value.errno == errno.EFBIG
    assert time.monotonic() - started < 1


def test_a_record_is_consistent_only_with_its_own_key_and_its_kinds_outputs():
    components = {"kind": "engine", "params": {"max": [4, 3, 16, 16]}}
    key = digest_json(components)
    obj = {"digest": "a" * 64, "size": 10}
    record = {"key": key, "components": components, "outputs": {"model.plan": obj, "model.json": obj}}
    assert record_inconsistent(record, key, ENGINE) is None
    other = digest_json(components | {"params": {"max": [8, 3, 16, 16]}})
    assert "do not hash" in record_inconsistent(record | {"key": other}, other, ENGINE)
    assert "lack model.json" in record_inconsistent(record | {"outputs": {"model.plan": obj}}, key, ENGINE)
    extra = record | {"outputs": record["outputs"] | {"evil.sh": obj}}
    assert "evil.sh" in record_inconsistent(extra, key, ENGINE)
    onnx = (("model.onnx",), (), True)  # other files: the model's external data
    data = {"key": key, "components": components, "outputs": {"model.onnx": obj, "weights.bin": obj}}
    assert record_inconsistent(data, key, onnx) is None


def test_a_cache_file_replaces_a_folder_in_its_place_but_a_users_path_never_does(tmp_path):
    cache_file, report = tmp_path / "record.json", tmp_path / "report"
    for folder in (cache_file, report):
        (folder / "inside").mkdir(parents=True)
    atomic_write(cache_file, b"{}", over_folder=True)
    assert cache_file.read_bytes() == b"{}"
    with pytest.raises(OSError):
        atomic_write(report, b"{}")
    assert (report / "inside").is_dir()
