"""Plot the batched-fitting speeds: CPU (this folder's results.json) and GPU
(../batch_gpu/results.json), fits per second on a log scale.

    python experiments/batch_cpu/plot.py   # writes experiments/batch_cpu/speed.png
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with open(os.path.join(HERE, "results.json")) as fh:
        cpu = json.load(fh)
    with open(os.path.join(HERE, "..", "batch_gpu", "results.json")) as fh:
        gpu = json.load(fh)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))

    workloads = list(dict.fromkeys(r["workload"] for r in cpu["rows"]))
    engines = list(dict.fromkeys(r["engine"] for r in cpu["rows"]))
    width = 0.8 / len(engines)
    for k, engine in enumerate(engines):
        values = [next((r["fits_per_s"] for r in cpu["rows"]
                        if r["workload"] == w and r["engine"] == engine), 0) for w in workloads]
        bars = left.bar([i + k * width for i in range(len(workloads))], values, width,
                        label=engine)
        for bar, w in zip(bars, workloads):
            row = next(r for r in cpu["rows"] if r["workload"] == w and r["engine"] == engine)
            left.annotate(f"{row['vs_scipy']:.0f}x", (bar.get_x() + bar.get_width() / 2,
                                                      bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads)
    left.set_yscale("log")
    left.set_ylabel("fits per second")
    left.set_title(f"CPU ({cpu['machine']}): ratio to a scipy curve_fit loop")
    left.legend(fontsize=8, loc="upper right")

    rows = [r for r in gpu["rows"] if "fits_per_s_on_device" in r]
    labels = [f"{r['engine']}\n{r['dtype']} {r['estimator'].upper()}" for r in rows]
    right.barh(range(len(rows)), [r["fits_per_s_on_device"] for r in rows],
               label="data on the GPU")
    right.barh(range(len(rows)), [r["fits_per_s_end_to_end"] for r in rows], height=0.4,
               label="end to end from host arrays")
    right.axvline(1.74e7, color="k", ls="--", lw=1)
    right.annotate("Gpufit f32 LSE", (1.74e7, len(rows) - 0.5), fontsize=8)
    right.set_yticks(range(len(rows)), labels, fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("fits per second")
    right.set_title("H100: gaussian_2d 11x11, 1e6 fits, max 20 iterations, tol 1e-4")
    right.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.93))
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "speed.png"), dpi=110)


if __name__ == "__main__":
    main()
