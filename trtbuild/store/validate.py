"""Checks for every file trtbuild reads back from a cache, local or remote: untrusted input.

Anyone who can write to a shared cache (a group member, a bucket writer, a disk fault) can leave a
record that is not what trtbuild wrote. A record is used only when it has the shape trtbuild writes,
names the key it is stored under, and names outputs by plain file names and objects by SHA-256
digests, so nothing it says can lead outside the cache. Each function returns why a value cannot be
used, or None when it can; the caller treats a bad one as a miss, warns, and replaces it.
"""

from __future__ import annotations

import math
import re

OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")  # a file in a step's output folder
DIGEST = re.compile(r"^[0-9a-f]{64}$")  # an object or a step key: SHA-256, lower-case hex
_HEX_DIGITS = "0123456789abcdef"
_MAX_OUTPUTS = 1000


def is_key(value) -> bool:
    """DIGEST, without a regex (a no-op build asks thousands of times): 64 characters, each lower-case hex."""
    return isinstance(value, str) and len(value) == 64 and not value.strip(_HEX_DIGITS)


def record_problem(record, key: str) -> str | None:
    """Why an action record cannot be used for step `key`; None when it can."""
    if not isinstance(record, dict):
        return f"not an object ({type(record).__name__})"
    if record.get("key") != key:
        return "its key is not the step's"
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return "no outputs"
    if len(outputs) > _MAX_OUTPUTS:
        return "too many outputs"
    for name, obj in outputs.items():
        if not OUTPUT_NAME.match(name):
            return f"output name {name[:40]!r} is not a plain file name"
        if not isinstance(obj, dict) or not is_key(obj.get("digest")):
            return f"output {name}: digest is not a SHA-256"
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"output {name}: bad size"
    for field, kind in (("meta", dict), ("components", dict), ("recipe", str), ("step", str)):
        if field in record and not isinstance(record[field], kind):
            return f"{field} is not a {kind.__name__}"
    created = record.get("created", 0)
    if not _number(created):
        return "created is not a time"
    return None


def record_inconsistent(record: dict, key: str, outputs: tuple | None = None) -> str | None:
    """Why a well-formed record (record_problem) is not what its step makes; None when it is. Its key
    components must hash to its key (a record copied under another key, or a key pointed at another
    recipe's record, does not), and with `outputs` (required names, optional names, whether other plain
    names are allowed: an ONNX model's external data) its outputs must be exactly what its kind writes."""
    from trtbuild.store.hashing import digest_json

    components = record.get("components")
    if not isinstance(components, dict) or digest_json(components) != key:
        return "its key components do not hash to its key"
    if outputs is not None:
        required, optional, external = outputs
        names = record["outputs"].keys()
        missing = [n for n in required if n not in names]
        if missing:
            return f"its outputs lack {missing[0]}"
        extra = sorted(n for n in names if n not in required and n not in optional)
        if extra and not external:
            return f"its outputs include {extra[0]!r}, which its step does not make"
    return None


def state_entries(state, warn, where: str) -> dict:
    """The usable entries of a recipe's state file ({step id: entry}); others are dropped with a warning."""
    if not isinstance(state, dict):
        warn(f"{where} is not a state file ({type(state).__name__}); ignoring it, it is rewritten by the next build")
        return {}
    good = {}
    for step_id, entry in state.items():
        if (isinstance(entry, dict) and is_key(entry.get("key")) and isinstance(entry.get("components"), dict)
                and _number(entry.get("time")) and isinstance(entry.get("status"), str)):
            good[step_id] = entry
        else:
            warn(f"{where}: ignoring the malformed entry of {step_id[:60]!r}")
    return good


def stat_entry_ok(entry) -> bool:
    """Whether a stat-cache entry has the shape StatCache writes ({"stat": [4 ints], "facts": {...}})."""
    return (isinstance(entry, dict) and isinstance(entry.get("facts"), dict) and isinstance(entry.get("stat"), list)
            and len(entry["stat"]) == 4 and all(isinstance(n, int) for n in entry["stat"]))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fact_ok(fact: str, value) -> bool:
    """Whether a stat-cache fact read back has the shape its computation gives (unknown facts: any)."""
    if fact == "sha256":
        return is_key(value)
    if fact == "onnx_external_data":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if fact == "python":
        return (isinstance(value, dict) and isinstance(value.get("digest"), str)
                and all(isinstance(value.get(k), list) for k in ("imports", "named"))
                and all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and isinstance(i[1], int)
                        for i in value["imports"]) and all(isinstance(n, str) for n in value["named"]))
    return True
