"""A recipe's optimization profiles as step parameters: what each step reads of them, so that its key
holds the shapes it runs the model at and no others."""

from __future__ import annotations


def engine_profiles(recipe) -> list[dict] | None:
    """The recipe's `profiles` as engine parameters: [{name, inputs: {INPUT: {min, opt, max}}}] in index order."""
    if not recipe.profiles:
        return None
    return [{"name": p.name, "inputs": {n: {"min": s.min, "opt": s.opt, "max": s.max} for n, s in p.inputs.items()}}
            for p in recipe.profiles]


def profile_opts(profiles: list[dict] | None) -> list[dict] | None:
    """What steps that run the model at each profile's opt shapes read of the profiles (a new min or max
    does not rerun them)."""
    return [{"name": p["name"], "opt": {n: s["opt"] for n, s in p["inputs"].items()}} for p in profiles] if profiles else None


def with_profile_ranges(inputs: dict, profiles: list[dict], default_dtype: str | None) -> dict:
    """Input params whose min / opt / max are the first profile's; an input only the profiles name gets
    -1 where its range varies in any profile (the model has its other dims)."""
    out = dict(inputs)
    for name, shapes in profiles[0]["inputs"].items():
        spec = out.get(name) or {"dtype": default_dtype,
                                 "shape": [lo if all(p["inputs"][name]["min"][i] == p["inputs"][name]["max"][i] == lo
                                                     for p in profiles) else -1
                                           for i, lo in enumerate(shapes["min"])]}
        out[name] = spec | {k: list(shapes[k]) for k in ("min", "opt", "max")}
    return out


def ranges(inputs: dict, profiles: list[dict] | None) -> list[dict] | None:
    """Every profile's min / opt / max of the dynamic inputs: where the export runs its model, and what an
    int8 / fp8 accuracy gate compares with the sizes calibrated; None: no dynamic input."""
    if profiles:
        return profiles
    dynamic = {n: {k: s[k] for k in ("min", "opt", "max")} for n, s in inputs.items() if -1 in (s["shape"] or ())}
    return [{"name": "default", "inputs": dynamic}] if dynamic else None


MOST_HEADERS = 256  # calibration files whose headers planning reads to say what they cover
_warned: set[str] = set()  # once a run, though the recipes compile again for out/ (--target, --backend)


def warn_uncalibrated(warn, at: str, files: list, inputs: dict, ranges: list[dict] | None) -> None:
    """Before any step runs: each profile whose range leaves the sizes of the calibration files (their
    headers, read without numpy), as a warning at precision.calibration.data's line."""
    from trtbuild.models.calibration_files import outside, sizes_in

    varies = any(lo != hi for p in ranges or () for r in p["inputs"].values()
                 for d, (lo, hi) in enumerate(zip(r["min"], r["max"])) if d > 0 or len(r["min"]) == 1)
    if not varies or len(files) > MOST_HEADERS:  # nothing to say, or a no-op run would read too many (the gate says it)
        return
    for line in outside(ranges, sizes_in(files, next(iter(inputs)) if len(inputs) == 1 else None)):
        text = f"{at}: precision.calibration.data: {line}"
        if text not in _warned:
            _warned.add(text)
            warn(text)
