"""Accuracy on NIST's StRD nonlinear-regression problems (data read from disk at run time).

NIST's 27 certified problems, each from two starting points, scored by the log relative
error ``LRE = -log10(|estimate - certified| / |certified|)`` (capped at 11, 0 below 1 or on
failure), the minimum over parameters. autofit ships no copy of the data: pass the folder
holding ``nist_strd.json`` (in the autofit repository it is ``../shared/nist_strd``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LRE_CAP = 11.0


@dataclass
class NistScore:
    problem: str
    start: str
    difficulty: str
    lre: float  # minimum over parameters
    lre_std: float  # minimum over standard errors
    backend: str
    error: str | None = None


def load(folder) -> list[dict]:
    path = Path(folder) / "nist_strd.json"
    with open(path) as handle:
        return json.load(handle)["problems"]


def model_function(problem: dict, namespace):
    """``f(x, b1, ..., bk)`` from the problem's formula, with ``np`` bound to ``namespace``
    (numpy for the numpy and numba backends, jax.numpy for jax)."""
    names = ", ".join(problem["param_names"])
    return eval(f"lambda x, {names}: {problem['formula']}", {"np": namespace})


def lre(estimate, certified) -> float:
    estimate = np.asarray(estimate, dtype=np.float64)
    certified = np.asarray(certified, dtype=np.float64)
    if estimate.shape != certified.shape or not np.all(np.isfinite(estimate)):
        return 0.0
    with np.errstate(divide="ignore"):
        digits = -np.log10(np.abs(estimate - certified) / np.abs(certified))
    digits = np.where(np.isnan(digits), 0.0, np.minimum(digits, LRE_CAP))
    digits = np.where(digits < 1.0, 0.0, digits)
    return float(digits.min())


def score(problem: dict, start: str, backend: str) -> NistScore:
    """Fit one (problem, start) pair with curve_fit's default options and score it."""
    from autofit import curve_fit

    if backend == "jax":
        import jax.numpy as namespace
    else:
        namespace = np
    f = model_function(problem, namespace)
    x = np.array(problem["x"], dtype=np.float64)
    y = np.array(problem["ydata"], dtype=np.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow on far trial steps
            popt, pcov = curve_fit(f, x, y, p0=problem[start], backend=backend, strict=True)
    except RuntimeError as exc:
        return NistScore(problem["name"], start, problem["difficulty"], 0.0, 0.0, backend,
                         str(exc))
    return NistScore(problem["name"], start, problem["difficulty"],
                     lre(popt, problem["certified_values"]),
                     lre(np.sqrt(np.diag(pcov)), problem["certified_std_devs"]), backend)


def score_all(folder, backend: str) -> list[NistScore]:
    return [score(problem, start, backend) for problem in load(folder)
            for start in ("start1", "start2")]


def summary(scores: list[NistScore]) -> dict[str, int]:
    return {"pairs": len(scores),
            "lre>=4": sum(s.lre >= 4 for s in scores),
            "lre>=6": sum(s.lre >= 6 for s in scores),
            "std>=4": sum(s.lre_std >= 4 for s in scores)}


def format_table(by_backend: dict[str, list[NistScore]]) -> str:
    """Markdown table: one row per problem, LRE (params / std errors) per start and backend."""
    backends = list(by_backend)
    header = "| problem | difficulty | " + " | ".join(
        f"{b} start1 | {b} start2" for b in backends) + " |"
    lines = [header, "|" + "---|" * (2 + 2 * len(backends))]
    first = by_backend[backends[0]]
    for i in range(0, len(first), 2):
        cells = []
        for b in backends:
            for s in by_backend[b][i:i + 2]:
                cells.append(f"{s.lre:.1f} / {s.lre_std:.1f}")
        lines.append(f"| {first[i].problem} | {first[i].difficulty} | " + " | ".join(cells)
                     + " |")
    lines.append("")
    for b in backends:
        counts = summary(by_backend[b])
        lines.append(f"- **{b}**: LRE >= 4 on {counts['lre>=4']}/{counts['pairs']}, "
                     f">= 6 on {counts['lre>=6']}/{counts['pairs']}; standard errors "
                     f"LRE >= 4 on {counts['std>=4']}/{counts['pairs']}")
    return "\n".join(lines)
