"""Progress bars for long batches: tqdm when it is installed, nothing when it is not.

``progress=None`` (automatic) shows a bar only once a batch has run for
:data:`AUTO_DELAY_S` seconds, so short calls print nothing; ``True`` shows it from the
start; ``False`` never. In a notebook the bar is ``tqdm.auto``'s widget; when stderr is not
a terminal (a log file, a batch job) the bar is written as plain ASCII lines, one every
:data:`LOG_INTERVAL_S` seconds, instead of carriage-return redraws.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings

# A batch still running after this long gets a bar in automatic mode.
AUTO_DELAY_S = 2.0
# Seconds between lines when the bar goes to a log rather than a terminal.
LOG_INTERVAL_S = 10.0


def check_mode(progress) -> bool | None:
    """``progress`` validated: None (automatic), True or False."""
    if progress is None or isinstance(progress, bool):
        return progress
    raise ValueError(f"progress must be None (a bar once a batch runs longer than "
                     f"{AUTO_DELAY_S:g} s), True or False, got {progress!r}")


class _LineWriter:
    """A file for tqdm that turns each redraw into one line (for logs, not terminals)."""

    def __init__(self, file):
        self._file = file
        self._last = None

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        # tqdm redraws the final state on close: one line of it is enough.
        if line and line != self._last:
            self._file.write(line + "\n")
            self._last = line

    def flush(self) -> None:
        self._file.flush()


class ProgressBar:
    """Counts finished fits and shows them with tqdm (now, after a delay, or never).

    Parameters
    ----------
    total : int
        Fits in the batch.
    mode : None, True or False
        As ``fit_batch(progress=...)``.
    initial : int
        Fits already finished (loaded from a checkpoint).
    desc : str
        The bar's label.
    """

    def __init__(self, total: int, mode: bool | None, *, initial: int = 0,
                 desc: str = "fit_batch"):
        self._bar = None
        self._mode = mode
        self._total, self._done, self._desc = total, initial, desc
        self._started = time.perf_counter()
        if mode is False or (mode is None and not tqdm_installed()):
            self._mode = False
        elif not tqdm_installed():
            warnings.warn("progress=True needs the tqdm package, which is not installed; "
                          "install it with: pip install 'autofit-lm[progress]' (fitting "
                          "goes on without a bar)", stacklevel=3)
            self._mode = False
        elif mode is True:
            self._open()

    def _open(self) -> None:
        from tqdm.auto import tqdm

        file = sys.stderr
        options = {}
        in_notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
        if not in_notebook and not _is_terminal(file):
            file = _LineWriter(file)
            options = {"mininterval": LOG_INTERVAL_S, "ascii": True, "ncols": 80}
        self._bar = tqdm(total=self._total, initial=self._done, desc=self._desc, unit="fit",
                         unit_scale=self._total >= 10_000, file=file, **options)
        # Elapsed time and rate count from the start of the batch, not from the bar's.
        self._bar.start_t = self._bar.last_print_t = self._bar._time() - (
            time.perf_counter() - self._started)

    def update(self, n_fits: int) -> None:
        self._done += n_fits
        if self._bar is not None:
            self._bar.update(n_fits)
        elif (self._mode is None and self._done < self._total
              and time.perf_counter() - self._started >= AUTO_DELAY_S):
            # A batch that has just finished needs no bar, however long it took.
            self._open()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tqdm_installed() -> bool:
    return importlib.util.find_spec("tqdm") is not None


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False
