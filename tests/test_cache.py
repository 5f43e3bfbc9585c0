"""The content-addressed store and its published links."""

from __future__ import annotations

import os

import pytest

from trtbuild.store.cache import Cache
from trtbuild.store.hashing import digest_json
from trtbuild.store import hashing
from trtbuild.store.hashing import digest_file, write_hashed


def stored(cache: Cache, tmp_path, name: str, data: bytes) -> dict:
    scratch = tmp_path / f"scratch-{name}"
    scratch.write_bytes(data)
    digest, size = cache.ingest(scratch)
    return {"digest": digest, "size": size}


def test_ingest_names_objects_by_content_and_makes_them_read_only(tmp_path):
    cache = Cache(tmp_path / "cache")
    a = stored(cache, tmp_path, "a", b"weights")
    b = stored(cache, tmp_path, "b", b"weights")
    assert a == b and digest_file(cache.object_path(a["digest"])) == a["digest"]
    assert oct(cache.object_path(a["digest"]).stat().st_mode & 0o777) == "0o444"


def test_ingest_takes_the_writers_digest_only_while_the_file_is_unchanged(tmp_path):
    cache = Cache(tmp_path / "cache")
    plan = tmp_path / "model.plan"
    write_hashed(plan, memoryview(b"engine bytes" * 1000))
    noted = hashing.written[str(plan)]
    assert noted["digest"] == digest_file(plan)
    digest, _ = cache.ingest(plan, noted)
    assert digest == noted["digest"] and cache.object_path(digest).read_bytes() == b"engine bytes" * 1000

    write_hashed(plan, b"first")
    noted = hashing.written[str(plan)]
    plan.write_bytes(b"other")  # same size, other bytes, rewritten after the digest was noted
    digest, _ = cache.ingest(plan, noted)
    assert digest != noted["digest"] and cache.object_path(digest).read_bytes() == b"other"


def test_step_inputs_are_links_but_onnx_external_data_is_copied(tmp_path):
    cache = Cache(tmp_path / "cache")
    outputs = {"model.onnx": stored(cache, tmp_path, "m", b"graph"),
               "model.onnx.data": stored(cache, tmp_path, "d", b"tensors")}
    paths = cache.link_into(tmp_path / "out", outputs)
    onnx_file, data_file = (tmp_path / "out" / n for n in ("model.onnx", "model.onnx.data"))
    assert paths == {"model.onnx": str(onnx_file), "model.onnx.data": str(data_file)}
    assert os.path.samefile(onnx_file, cache.object_path(outputs["model.onnx"]["digest"]))
    assert data_file.stat().st_nlink == 1  # onnx refuses hard-linked external data
    inode = data_file.stat().st_ino
    cache.link_into(tmp_path / "out", outputs)
    assert data_file.stat().st_ino == inode  # already in place: not copied again
    outputs["model.onnx.data"] = stored(cache, tmp_path, "d2", b"tensorz")  # same size, new bytes
    cache.link_into(tmp_path / "out", outputs)
    assert data_file.read_bytes() == b"tensorz"


def test_action_with_a_missing_object_is_not_a_hit(tmp_path):
    cache = Cache(tmp_path / "cache")
    obj = stored(cache, tmp_path, "p", b"plan")
    components = {"kind": "engine", "params": {}}
    key = digest_json(components)  # a record is served only under the key its components hash to
    cache.put_action(key, {"key": key, "components": components, "outputs": {"model.plan": obj}})
    assert cache.get_action(key)["outputs"]["model.plan"] == obj
    cache.object_path(obj["digest"]).unlink()
    assert cache.get_action(key) is None


@pytest.fixture
def xfs(tmp_path):
    """A reflink-capable file system: XFS on a loop device (when this runs as root with xfsprogs)."""
    import shutil
    import subprocess

    if os.getuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("needs root and mkfs.xfs (xfsprogs) for a reflink-capable file system")
    image, mount = tmp_path / "xfs.img", tmp_path / "mnt"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    subprocess.run(["mkfs.xfs", "-q", str(image)], check=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a loop device here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _free(mount) -> int:
    os.sync()
    return os.statvfs(mount).f_bfree * os.statvfs(mount).f_frsize


def test_out_copies_share_blocks_with_the_store_where_the_file_system_can(xfs):
    """On XFS: a published copy costs no second copy on disk, and editing it leaves the stored object as it was."""
    from trtbuild.store.fsutil import publish_copy

    src, dest = xfs / "object", xfs / "out" / "model.plan"
    data = os.urandom(64 << 20)
    src.write_bytes(data)
    free = _free(xfs)
    publish_copy(src, dest)
    used = free - _free(xfs)
    assert used < 4 << 20, f"the copy took {used / 2**20:.1f} MiB"
    assert dest.read_bytes() == data
    with open(dest, "r+b") as f:
        f.write(b"edited")
    assert src.read_bytes() == data


def test_publishing_a_large_plan_to_out_costs_no_second_copy_on_xfs(xfs):
    """out/<recipe>/ of a cache on XFS: the published plan shares the object's blocks, and is still a
    file of its own (editing it does not reach the store)."""
    from trtbuild.store.hashing import write_hashed, written
    from trtbuild.store.publish import publish_recipe

    cache = Cache(xfs / "cache")
    plan = cache.workdir("engine") / "model.plan"
    data = os.urandom(64 << 20)
    write_hashed(plan, data)
    digest, size = cache.ingest(plan, written[str(plan)])
    free = _free(xfs)
    publish_recipe(cache, "big", {"t/model.plan": {"digest": digest, "size": size}}, {"engine": {"key": "k"}})
    used = free - _free(xfs)
    assert used < 4 << 20, f"out/ took {used / 2**20:.1f} MiB"
    shown = cache.out / "big" / "t" / "model.plan"
    assert shown.read_bytes() == data
    assert not os.path.samefile(shown, cache.object_path(digest))
