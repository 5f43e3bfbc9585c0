"""The files a source model is made of, found without importing heavy libraries on a no-op run."""

from __future__ import annotations

from pathlib import Path

from trtbuild.errors import UsageError
from trtbuild.hashing import StatCache


def onnx_files(model: Path, stat_cache: StatCache) -> list[Path]:
    """The model plus the external-data files it references (remembered per model file version)."""
    relative = stat_cache.memo(model, "onnx_external_data", _external_data_locations)
    files = [model]
    for name in relative:
        path = model.parent / name
        if not path.is_file():
            raise UsageError(f"{model}: references external data {name!r}, which is missing (expected {path})")
        files.append(path)
    return files


def _external_data_locations(model: Path) -> list[str]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except (DecodeError, ValueError, OSError):
        return []  # not ONNX: the check step reports it
    locations = set()
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            locations.add(entries["location"])
    return sorted(locations)
