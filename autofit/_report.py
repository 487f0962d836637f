"""Plain-text reports of fit results: :meth:`FitResult.report` and :meth:`BatchResult.summary`.

Formatting only; the numbers come from the result objects.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from autofit._status import Status

# Significant digits of an uncertainty: two, as the GUM recommends for a reported result.
ERROR_DIGITS = 2
# Plain decimals between these magnitudes, scientific notation outside them.
FIXED_RANGE = (1e-3, 1e5)
REPORT_WIDTH = 92


def format_value_error(value: float, error: float) -> tuple[str, str]:
    """``value`` and ``error`` as strings, rounded to the error's second significant digit.

    Examples
    --------
    >>> format_value_error(2.50312, 0.01234)
    ('2.503', '0.012')
    >>> format_value_error(1.2345e-7, 3.1e-10)
    ('1.2345e-07', '3.1e-10')
    >>> format_value_error(4.0, float("inf"))
    ('4', 'inf')
    """
    value, error = float(value), float(error)
    if not math.isfinite(value):
        return f"{value}", f"{error:.2g}"
    if not (math.isfinite(error) and error > 0):
        return f"{value:.6g}", f"{error:.2g}" if error != 0 else "0"
    # The decimal exponent of the error's last kept digit.
    last = math.floor(math.log10(error)) - (ERROR_DIGITS - 1)
    magnitude = max(abs(value), error)
    if FIXED_RANGE[0] <= magnitude < FIXED_RANGE[1]:
        decimals = max(-last, 0)
        return f"{value:.{decimals}f}", f"{error:.{decimals}f}"
    value_exp = math.floor(math.log10(abs(value))) if value != 0 else last
    mantissa = min(max(value_exp - last, 0), 15)
    return f"{value:.{mantissa}e}", f"{error:.{ERROR_DIGITS - 1}e}"


def _relative(value: float, error: float) -> str:
    if not math.isfinite(error) or value == 0 or not math.isfinite(value):
        return "-"
    return f"{100 * error / abs(value):.2g}%"


def _number(value: float) -> str:
    return f"{value:.6g}"


def _resolved(value: float, spread: float) -> str:
    """``value`` to the digits that its spread over the batch resolves."""
    return format_value_error(value, spread)[0] if spread > 0 else _number(value)


def _spread(spread: float) -> str:
    return f"{spread:.2g}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[j]) for r in (header, *rows)) for j in range(len(header))]
    line = "  ".join(f"{{:<{widths[0]}}}".format(h) if j == 0 else f"{h:>{w}}"
                     for j, (h, w) in enumerate(zip(header, widths, strict=True)))
    out = [line, "-" * len(line)]
    for row in rows:
        out.append("  ".join(f"{c:<{w}}" if j == 0 else f"{c:>{w}}"
                             for j, (c, w) in enumerate(zip(row, widths, strict=True))))
    return out


def fit_report(result) -> str:
    """The text of :meth:`autofit.FitResult.report`."""
    rows = []
    for name, value, error in zip(result.param_names, result.params, result.errors,
                                  strict=True):
        shown, shown_error = format_value_error(value, error)
        rows.append((name, shown, f"± {shown_error}", _relative(value, error)))
    status = Status(result.status)
    lines = [f"model {result.model}: {'converged' if result.success else 'NOT CONVERGED'} "
             f"({status.name})"]
    lines += _table(("parameter", "value", "error", "relative"), rows)
    lines += [
        "",
        f"chi2          {_number(result.chi2)}",
        f"reduced chi2  {_number(result.reduced_chi2)}  (dof {result.dof})",
        f"R^2           {_number(result.r_squared)}",
        f"points        {result.n_points}",
        f"iterations    {result.n_iter}  (model evaluations {result.nfev})",
        f"backend       {result.backend}  ({result.backend_reason})",
    ]
    lines += textwrap.wrap(f"status        {status.value} {status.name}: {result.message}",
                           width=REPORT_WIDTH, subsequent_indent=" " * 14)
    if result.success and not np.all(np.isfinite(result.errors)):
        lines.append("warning       the covariance could not be estimated (errors are inf)")
    return "\n".join(lines)


def batch_statistics(result) -> dict:
    """The numbers behind :meth:`autofit.BatchResult.summary`, as a dict."""
    status = np.asarray(result.status).reshape(-1)
    converged = np.asarray(result.converged, dtype=bool).reshape(-1)
    n_fits = int(converged.size)
    n_converged = int(np.count_nonzero(converged))
    params = np.asarray(result.params).reshape(n_fits, -1)[converged]
    reduced = np.asarray(result.reduced_chi2).reshape(n_fits)[converged]
    parameters = {}
    for j, name in enumerate(result.param_names):
        values = params[:, j]
        values = values[np.isfinite(values)]
        if values.size:
            q25, median, q75 = np.percentile(values, [25, 50, 75])
            parameters[name] = {"median": float(median), "iqr": float(q75 - q25),
                                "mean": float(values.mean()), "std": float(values.std()),
                                "min": float(values.min()), "max": float(values.max())}
        else:
            parameters[name] = dict.fromkeys(("median", "iqr", "mean", "std", "min", "max"),
                                             float("nan"))
    codes, counts = np.unique(status, return_counts=True)
    reduced = reduced[np.isfinite(reduced)]
    return {
        "shape": tuple(result.shape), "n_fits": n_fits, "n_converged": n_converged,
        "converged_fraction": n_converged / n_fits if n_fits else float("nan"),
        "status_counts": {Status(int(c)): int(n) for c, n in zip(codes, counts, strict=True)},
        "parameters": parameters,
        "median_reduced_chi2": float(np.median(reduced)) if reduced.size else float("nan"),
        "model": result.model, "backend": result.backend, "device": result.device,
        "estimator": result.estimator,
    }


def batch_summary(result) -> str:
    """The text of :meth:`autofit.BatchResult.summary`."""
    stats = batch_statistics(result)
    lines = [f"model {stats['model']}, {stats['n_fits']} fit(s) of shape {stats['shape']} on "
             f"{stats['backend']} ({stats['device']}), estimator {stats['estimator']}",
             f"converged {stats['n_converged']}/{stats['n_fits']} "
             f"({100 * stats['converged_fraction']:.1f}%)", "", "status counts:"]
    for status, count in stats["status_counts"].items():
        mark = "" if status.converged else "  (not converged)"
        lines.append(f"  {status.name:22} {count:>10}{mark}")
    lines += ["", "parameters over the converged fits:"]
    rows = [(name, _resolved(s["median"], s["iqr"]), _spread(s["iqr"]),
             _resolved(s["mean"], s["std"]), _spread(s["std"]))
            for name, s in stats["parameters"].items()]
    lines += ["  " + line for line in _table(("parameter", "median", "IQR", "mean", "std"),
                                             rows)]
    lines += ["", f"median reduced chi2 (converged fits): "
                  f"{_number(stats['median_reduced_chi2'])}"]
    return "\n".join(lines)
