#!/usr/bin/env python3
"""Fits a simulator profile (docs/simulator.md) from `vocoder-bench model --json`
files: one run on a real device calibrates `--device sim:PATH.json`.

    tools/bench/fit_profile.py model.json [more.json ...] --name cpu-tiny --out profile.json

Each row of a model sweep holds per-stage medians and the shapes the profile
is keyed on: the encoder (jobs, padded tokens), one estimator call (estimator
rows = estimator_rows_per_job x jobs: 2 for the standard model's CFG, 1 for
turbo; 2 when the file predates the field; padded frames) and HiFT (jobs,
cache + emitted frames). Per stage it
fits, by least squares on relative error (so small batches weigh as much as
large ones),

    ms = overhead_ms + ms_per_unit * rows * len + ms_per_unit_sq * rows * len^2

dropping a term whose coefficient comes out negative, then once dropping
points off by more than --outlier (a shared machine's hiccups) and refitting.
run_overhead_ms is the median of what a run took beyond its stages.
jitter_cv (run-to-run variation) is estimated from each point's p95 against
its median, as for a normal spread: median over points of
(p95 / median - 1) / 1.645; --jitter-cv sets it instead. Prints each stage's
fit and its worst relative error; writes the profile JSON.
"""
import argparse
import json
import sys

import numpy as np

FORMAT = "vocoderd-sim-profile/1"


def samples(docs, allow_simulated=False):
    """(stage -> list of (rows, len, ms)), run overheads, descriptions."""
    out = {"encoder": [], "estimator": [], "hift": []}
    overheads, sources, spreads = [], [], []
    for path, doc in docs:
        if doc.get("benchmark") != "model":
            raise ValueError(f"{path}: not a `vocoder-bench model --json` file")
        if doc.get("simulated") and not allow_simulated:
            raise ValueError(f"{path}: measured on a simulated device; fit real measurements")
        if doc.get("distinct_lengths"):
            raise ValueError(f"{path}: a --distinct-lengths sweep (HiFT per row, rows of "
                             "different lengths); fit sweeps of equal rows")
        n = doc["n_timesteps"]
        rows_per_job = doc.get("estimator_rows_per_job", 2)
        sources.append(f"{path}: {doc['model_size']} {doc['dtype']} on {doc['device']}, "
                       f"torch {doc['torch']}, prompt {doc['prompt_tokens']} tokens")
        for r in doc["rows"]:
            if "encode_ms" not in r:
                raise ValueError(f"{path}: rows lack per-stage times; re-run this version's "
                                 "vocoder-bench model")
            b = r["batch_size"]
            out["encoder"].append((b, r["padded_tokens"], r["encode_ms"]))
            out["estimator"].append((rows_per_job * b, r["padded_frames"], r["step_ms"]))
            out["hift"].append((b, r["hift_frames"], r["vocode_ms"]))
            overheads.append(r["median_ms"] - r["encode_ms"] - n * r["step_ms"] - r["vocode_ms"])
            if r.get("p95_ms") and r["median_ms"] > 0:
                spreads.append(max(0.0, r["p95_ms"] / r["median_ms"] - 1) / 1.645)
    return out, overheads, sources, spreads


def design(points, terms):
    cols = {"overhead_ms": lambda r, l: 1.0, "ms_per_unit": lambda r, l: r * l,
            "ms_per_unit_sq": lambda r, l: r * l * l}
    return np.array([[cols[t](r, l) for t in terms] for r, l, _ in points], dtype=float)


def fit_terms(points, terms):
    x = design(points, terms)
    y = np.array([p[2] for p in points], dtype=float)
    w = 1.0 / y  # relative error
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    return dict(zip(terms, coef))


def predict(stage, r, l):
    return (stage.get("overhead_ms", 0) + stage.get("ms_per_unit", 0) * r * l
            + stage.get("ms_per_unit_sq", 0) * r * l * l)


def fit_stage(points, outlier):
    terms = ["overhead_ms", "ms_per_unit", "ms_per_unit_sq"]
    # Identifiable terms only: a quadratic term needs at least two lengths.
    if len({l for _, l, _ in points}) < 2:
        terms.remove("ms_per_unit_sq")
    for _ in range(2):  # second pass: without the outliers of the first
        t = list(terms)
        while True:
            coef = fit_terms(points, t)
            negative = [k for k, v in coef.items() if v < 0]
            if not negative:
                break
            t.remove(min(negative, key=lambda k: coef[k]))
            if not t:
                coef = {"overhead_ms": float(np.median([p[2] for p in points]))}
                break
        errs = [abs(predict(coef, r, l) - ms) / ms for r, l, ms in points]
        kept = [p for p, e in zip(points, errs) if e <= outlier]
        if len(kept) == len(points) or len(kept) < 3:
            break
        points = kept
    errs = [abs(predict(coef, r, l) - ms) / ms for r, l, ms in points]
    return {k: float(v) for k, v in coef.items()}, max(errs), len(points)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="vocoder-bench model --json files")
    ap.add_argument("--name", required=True, help="profile name (sim:NAME)")
    ap.add_argument("--description", default="", help="what was measured, where")
    ap.add_argument("--outlier", type=float, default=0.5,
                    help="drop points off by more than this fraction, then refit")
    ap.add_argument("--jitter-cv", type=float, default=None,
                    help="run-to-run variation to record (default: estimated from p95 / median)")
    ap.add_argument("--out", required=True, help="profile JSON to write")
    ap.add_argument("--allow-simulated", action="store_true",
                    help="accept sweeps of a simulated device (tests of this tool only)")
    a = ap.parse_args(argv)
    docs = []
    for path in a.inputs:
        with open(path) as f:
            docs.append((path, json.load(f)))
    try:
        stages_in, overheads, sources, spreads = samples(docs, a.allow_simulated)
    except (KeyError, ValueError) as e:
        print(f"fit_profile: {e}", file=sys.stderr)
        return 2
    stages, quality = {}, {}
    for name, points in stages_in.items():
        coef, worst, used = fit_stage(points, a.outlier)
        stages[name] = {k: round(v, 9) for k, v in coef.items()}
        quality[name] = {"points": len(points), "used": used, "max_rel_error": round(worst, 4)}
        print(f"{name:9s} {stages[name]}  points {used}/{len(points)}, "
              f"worst relative error {worst:.1%}")
    run_overhead = max(0.0, float(np.median(overheads)))
    print(f"run_overhead_ms {run_overhead:.3f}")
    jitter = a.jitter_cv if a.jitter_cv is not None else (
        min(1.0, float(np.median(spreads))) if spreads else 0.0)
    print(f"jitter_cv {jitter:.4f}" + (" (set)" if a.jitter_cv is not None else
                                       f" (from {len(spreads)} points' p95 / median)"))
    profile = {
        "format": FORMAT,
        "name": a.name,
        "estimate": False,
        "description": a.description or f"fitted by tools/bench/fit_profile.py from {len(docs)} "
                                         "vocoder-bench model run(s)",
        "fitted_from": sources,
        "fit_quality": quality,
        "run_overhead_ms": round(run_overhead, 3),
        "jitter_cv": round(jitter, 4),
        "stages": stages,
    }
    with open(a.out, "w") as f:
        json.dump(profile, f, indent=2)
        f.write("\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
