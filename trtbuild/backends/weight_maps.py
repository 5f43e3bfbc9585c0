"""A model's external weights handed to TensorRT's parser from memory maps whose pages do not stay resident.

With parse_from_file the parser maps the external data files itself and the network points into them until
the engine is built; the builder then copies every weight into the engine. At the peak the process holds
both: the files' pages it has read (RssFile) and the engine's copy (RssAnon), about twice a model that is
all weights. Here the parser gets each external initializer of the main graph from a read-only map
trtbuild owns (`load_model_proto` + `load_initializer`: the parser keeps the address, it copies nothing),
and a thread drops the maps' resident pages every few milliseconds (`madvise(MADV_DONTNEED)`) while the
parser and the builder run. For a read-only map of a file that is always correct: a page read again is
faulted back in from the page cache with the same bytes. The process then holds the engine's copy plus a
window of the files, and the plan is the one parse_from_file gives (same bytes; the tests compare them).

Whatever this module does not map itself (inline weights, a subgraph's, a tensor whose external_data it
does not read the way the parser would, a file that is not a regular file) the parser reads as before.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
import threading
from pathlib import Path

from trtbuild.errors import StepError

DROP_EVERY = 0.005  # seconds between two drops: a window of a few tens of MB at the builder's copy speed
_GRAPH_BOUND = 256 << 20  # a .onnx file larger than this holds its weights inline: nothing to map
_CAN_DROP = hasattr(mmap, "MADV_DONTNEED")


class WeightMaps:
    """`with WeightMaps(model) as weights: weights.parse(parser)`, then build: the maps live until the
    block ends, so the parser, its network and the builder must be gone (or unused) by then."""

    def __init__(self, model: Path):
        self.model = Path(model)
        self.tensors = 0  # external initializers the parser got from the maps
        self.bytes = 0
        self._graph: bytes | None = None
        self._maps: dict[Path, mmap.mmap] = {}
        self._addresses: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WeightMaps:
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for view in self._maps.values():
            view.close()
        self._maps.clear()

    def parse(self, parser) -> bool:
        """Parse the model into the parser's network, as parse_from_file would; False: the parser's errors say why."""
        wanted = self.map_files() if _CAN_DROP else []
        if not wanted:
            return parser.parse_from_file(str(self.model))
        if not parser.load_model_proto(self._graph, str(self.model)):
            return False
        for name, path, offset, length in wanted:
            # False (a size the parser does not expect, a name it does not know) changes nothing: the
            # parser then reads that tensor from the file itself, as parse_from_file does.
            if parser.load_initializer(name, self._address(path) + offset, length):
                self.tensors += 1
                self.bytes += length
        if self.tensors:
            self._thread = threading.Thread(target=self._drop, name="trtbuild-weight-maps", daemon=True)
            self._thread.start()
            print(f"trtbuild: {self.tensors} external weights ({self.bytes / 2**20:.1f} MiB) read from memory maps "
                  "kept out of resident memory", file=sys.stderr, flush=True)
        return parser.parse_model_proto()

    def map_files(self) -> list[tuple[str, Path, int, int]]:
        """Map the files of the main graph's external initializers: (name, file, offset, length) of each; []: none."""
        try:
            size = self.model.stat().st_size
            if size > _GRAPH_BOUND or not _mentions(self.model, b"location"):  # no external data: no onnx import
                return []
            self._graph = self.model.read_bytes()
        except OSError:
            return []  # the parser says what is wrong with the file
        import onnx

        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(self._graph)
        except Exception:  # not ONNX (DecodeError, a graph nested past protobuf's limit): the parser says so
            return []
        wanted = []
        for tensor in proto.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            where = _where(tensor)
            if where is None:
                continue
            location, offset, length = where
            path = self.model.parent / location
            available = self._open(path, tensor.name, location)
            if available is None:
                continue
            if length is None:
                length = available - offset
            if offset + length > available:
                raise StepError(f"{self.model}: initializer {tensor.name!r} is bytes {offset} to {offset + length} of "
                                f"its external data file {location}, which holds {available} bytes: the data file "
                                "is truncated or belongs to another model; save the model and its data again")
            if length:
                wanted.append((tensor.name, path, offset, length))
        return wanted

    def _open(self, path: Path, name: str, location: str) -> int | None:
        """Map `path` (once per file); its size, or None where the parser is left to read it."""
        if path in self._maps:
            return len(self._maps[path])
        try:  # non-blocking: a FIFO in the data file's place must not hang the build
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise StepError(f"{self.model}: the external data file {location} of initializer {name!r} is missing: "
                            f"expected {path}; put it beside the model or save the model and its data again") from None
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            if info.st_size == 0:
                return 0  # nothing to map; any tensor in it is past its end
            self._maps[path] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            return info.st_size
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def _address(self, path: Path) -> int:
        if path not in self._addresses:
            import numpy as np

            view = np.frombuffer(self._maps[path], dtype=np.uint8)  # released below: the map can close later
            self._addresses[path] = view.ctypes.data
            del view
        return self._addresses[path]

    def drop(self) -> None:
        """Take the maps' pages out of this process's resident memory (the page cache keeps them)."""
        for view in list(self._maps.values()):
            view.madvise(mmap.MADV_DONTNEED)

    def _drop(self) -> None:
        while not self._stop.wait(DROP_EVERY):
            try:
                self.drop()
            except (OSError, ValueError):  # a kernel without it for these maps: the pages simply stay
                return


def _where(tensor) -> tuple[str, int, int | None] | None:
    """(location, offset, length or None: to the end) of an external tensor, or None where its entries are
    not plain (a repeated key, a path leaving the folder, a number that is not one): the parser reads those."""
    keys = [e.key for e in tensor.external_data]
    if len(keys) != len(set(keys)):
        return None
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    if not location or "\0" in location or os.path.isabs(location) or ".." in Path(location).parts:
        return None
    try:
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        return None
    if offset < 0 or (length is not None and length < 0):
        return None
    return location, offset, length


def _mentions(path: Path, text: bytes) -> bool:
    with open(path, "rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(text) != -1
