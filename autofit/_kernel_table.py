"""README.md's table of kernels, generated from the declarations in :mod:`autofit._declarations`.

``python -m autofit._kernel_table README.md`` rewrites the table between the README's
:data:`TABLE_START` and :data:`TABLE_END` lines; without a file it prints the table.
``tests/test_declarations.py`` fails when the README's table is not the generated one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from autofit._declarations import BACKENDS, KERNELS, MODELS, KernelSpec

TABLE_START = ("<!-- kernel-table: start (generated from autofit/_declarations.py by "
               "`python -m autofit._kernel_table README.md`; do not edit) -->")
TABLE_END = "<!-- kernel-table: end -->"
# The declarations name the NumPy backend after its package; users pass backend="numpy".
_USER_NAMES = {"original": "numpy"}
_MODEL_KINDS = (("model", "Value of model `<m>`"),
                ("jacobian", "Analytic Jacobian of model `<m>` in its parameters"))


def _cell(text: str) -> str:
    """Text for a Markdown table cell: reST literals as code spans, pipes escaped."""
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _returned(spec: KernelSpec) -> tuple[str, ...]:
    """The names in the Returns section of the kernel's docstring."""
    lines = spec.doc.split("\nReturns\n-------\n", 1)[1].splitlines()
    names = []
    for line, following in zip(lines, lines[1:] + [""]):
        if following.strip() and set(following.strip()) == {"-"}:
            break  # the next section's heading
        if line.strip() and not line[0].isspace():
            names.append(line.split(" : ")[0].strip())
    return tuple(names)


def _backends(native: tuple[str, ...]) -> str:
    names = [_USER_NAMES.get(b, b) for b in native]
    others = [_USER_NAMES.get(b, b) for b in BACKENDS if b not in native]
    # The dispatcher's fallback table sends a kernel to the backends declared for it.
    return ", ".join(names) + (f" ({', '.join(others)}: run on {names[0]})" if others else "")


def _row(kernel: str, spec: KernelSpec, what: str) -> str:
    cells = (f"`{kernel}`", f"`{', '.join(spec.signature)}`", what,
             f"`{', '.join(_returned(spec))}`", _backends(spec.native))
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def kernel_table() -> str:
    """README.md's table of kernels, in Markdown, from :data:`~autofit._declarations.KERNELS`.

    One row per kernel: its arguments, the first line of its docstring, the names its
    docstring says it returns, and the backends that implement it. The two kernels of each
    built-in model take one row per kind (``model_<m>``, ``jacobian_<m>``), not one per model.

    Returns
    -------
    table : str
        The table's lines, each ending with a newline.

    Examples
    --------
    >>> table = kernel_table()
    >>> print(table.splitlines()[0])
    | kernel | arguments | what | returns | backends |
    >>> row = next(line for line in table.splitlines() if line.startswith("| `jacobian_autodiff`"))
    >>> print(row.replace(" | ", "\\n"))
    | `jacobian_autodiff`
    `model, x, params`
    Exact Jacobian of `model` by forward-mode automatic differentiation.
    `jac`
    jax (numpy, numba: run on jax) |
    """
    rows = ["| kernel | arguments | what | returns | backends |", "|---|---|---|---|---|"]
    for kind, phrase in _MODEL_KINDS:
        # One row per kind unless the models' kernels differ in arguments or backends.
        groups: dict[tuple, list[str]] = {}
        for model in MODELS:
            spec = KERNELS[f"{kind}_{model}"]
            groups.setdefault((spec.signature, spec.native), []).append(model)
        for models in groups.values():
            which = (f"each of the {len(models)} built-in models (`autofit.MODELS`)"
                     if len(models) == len(MODELS) else ", ".join(f"`{m}`" for m in models))
            rows.append(_row(f"{kind}_<m>", KERNELS[f"{kind}_{models[0]}"],
                             f"{phrase}, for {which}"))
    model_kernels = {f"{kind}_{model}" for kind, _ in _MODEL_KINDS for model in MODELS}
    for spec in KERNELS.values():
        if spec.name not in model_kernels:
            rows.append(_row(spec.name, spec, spec.doc.split("\n\n", 1)[0]))
    return "\n".join(rows) + "\n"


def table_in(text: str) -> str:
    """What lies between the kernel table's marker lines of ``text``.

    Raises
    ------
    ValueError
        When the marker lines are missing or out of order.
    """
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the text needs the line {TABLE_START!r} and, after it, the line "
                         f"{TABLE_END!r} around the kernel table")
    return text[start + len(TABLE_START):end].strip("\n") + "\n"


def with_kernel_table(text: str) -> str:
    """``text`` with the table between its marker lines replaced by :func:`kernel_table`."""
    table_in(text)  # the markers' check
    head, rest = text.split(TABLE_START, 1)
    return f"{head}{TABLE_START}\n{kernel_table()}{TABLE_END}{rest.split(TABLE_END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the kernel table of each file named, or print the table when none is."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        sys.stdout.write(kernel_table())
        return 0
    for path in map(Path, paths):
        text = path.read_text(encoding="utf-8")
        updated = with_kernel_table(text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"rewrote the kernel table of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
