"""Saving ONNX models the way the cache expects: one file when it fits in protobuf's 2 GB limit,
else weights in `<name>.data` beside it. Used in workers only."""

from __future__ import annotations

from pathlib import Path

_PROTOBUF_LIMIT = 2**31 - 1


def save_onnx(model, path: Path) -> None:
    import onnx

    if _fits_in_one_file(model):
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data")


def _fits_in_one_file(model) -> bool:
    from google.protobuf.message import EncodeError

    try:
        return model.ByteSize() < _PROTOBUF_LIMIT
    except (EncodeError, ValueError):  # protobuf (upb) refuses even to measure a message over 2 GB
        return False


def normalize_file(path: Path) -> None:
    """Rewrite an exporter's output (which may have scattered external-data files) with save_onnx."""
    import onnx

    before = {p for p in path.parent.iterdir() if p != path}
    model = onnx.load(str(path))  # pulls external data into memory
    for extra in before:
        extra.unlink()
    save_onnx(model, path)
