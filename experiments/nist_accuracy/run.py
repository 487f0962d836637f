"""NIST StRD accuracy of curve_fit with default options, per backend, plus scipy for scale.

    python experiments/nist_accuracy/run.py ../shared/nist_strd \
        > experiments/nist_accuracy/results.md
"""

import sys
import warnings

import numpy as np
from scipy import optimize

from autofit.selftest import nist
from autofit.selftest.validate import available_backends


def scipy_scores(folder):
    scores = []
    for problem in nist.load(folder):
        f = nist.model_function(problem, np)
        x = np.array(problem["x"], dtype=np.float64)
        y = np.array(problem["ydata"], dtype=np.float64)
        for start in ("start1", "start2"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    popt, pcov = optimize.curve_fit(f, x, y, p0=problem[start])
                score = nist.NistScore(problem["name"], start, problem["difficulty"],
                                       nist.lre(popt, problem["certified_values"]),
                                       nist.lre(np.sqrt(np.diag(pcov)),
                                                problem["certified_std_devs"]), "scipy")
            except (RuntimeError, ValueError) as exc:
                score = nist.NistScore(problem["name"], start, problem["difficulty"], 0.0,
                                       0.0, "scipy", str(exc))
            scores.append(score)
    return scores


def main(folder):
    results = {backend: nist.score_all(folder, backend) for backend in available_backends()}
    results["scipy"] = scipy_scores(folder)
    print("Minimum LRE over parameters / over standard errors, default options "
          "(autofit: `curve_fit(f, x, y, p0=start)`; scipy: `scipy.optimize.curve_fit` with "
          "its defaults).\n")
    print(nist.format_table(results))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/nist_strd")
