"""An export's key in two parts: the graph (code, config, recipe, tools) and the weights.

Weights are the recipe's `checkpoint:` file and, among the files the model's code read while it ran,
those that hold tensors: safetensors, PyTorch state_dicts (.bin, .pt, .pth, .ckpt; a zip or pickle
inside), by their name and their first bytes. When only weights moved, the last exported graph can
take the new ones (trtbuild.execution.weights_only); anything else that moved needs a full export.
"""

from __future__ import annotations

import os

WEIGHT_INPUTS = ("checkpoint",)  # declared inputs of the export step that are weights
SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"


def graph_part(components: dict) -> dict:
    """The key components without the weights: equal for two exports of one graph."""
    inputs = {name: files for name, files in components["inputs"].items() if name not in WEIGHT_INPUTS}
    return components | {"inputs": inputs}


def weights_part(components: dict) -> dict:
    return {name: files for name, files in components["inputs"].items() if name in WEIGHT_INPUTS}


def is_weights(path) -> bool:
    """A file of tensors by its name and content: a safetensors file (an 8-byte header size, then JSON),
    or a torch.save file (a zip archive, or a pickle for the legacy format). A file that is gone counts
    by its name: what replaced it is judged when the step runs."""
    name = os.fspath(path)
    if not name.endswith(SUFFIXES):
        return False
    try:
        with open(name, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if name.endswith(".safetensors"):
        return len(head) == 9 and head[8:9] == b"{"
    return head.startswith((_ZIP, _PICKLE))


def split(found: dict[str, dict[str, str]], root) -> tuple[dict, dict]:
    """A step's `discovered` record as (weights, the rest): weight files apart from everything else."""
    files = found.get("files", {})
    weights = {label: digest for label, digest in files.items() if is_weights(os.path.join(root, label))}
    rest = found | {"files": {label: d for label, d in files.items() if label not in weights}}
    return ({"files": weights} if weights else {}), rest
