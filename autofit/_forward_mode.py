"""Exact derivatives of a user's NumPy model, generated from its source (forward mode).

A user writes ``def f(x, a, b, c): return a * np.exp(-b * x) + c``. This module reads that
source and writes the two point functions that the point-by-point kernels take (numba's
fused and batched kernels; the convention of :mod:`autofit.numba.points`). It is plain
Python on the source, imports no backend, and its output is plain Python using ``math``:
the backend compiles it.

- ``value(x, i, p) -> float``: the model at point ``i`` of ``x`` ``(n_variables, n_points)``;
- ``gradient(x, i, p, jac, col) -> float``: the same value, bit for bit, after writing
  ``jac[j, col] = d f / d p[j]`` for every parameter ``j``.

The derivative is forward-mode differentiation done once, on the source: every operation
of the model becomes one line for its value and one line per parameter it depends on for
its derivative, so ``exp(-b x)`` is computed once and reused by the derivatives, and a
derivative known to be zero (a peak's terms for another peak's parameters) is never
written. Loops with a trip count known before the fit (``for k in range(len(p) // 3)``,
``for k in range(N_PEAKS)``) are unrolled, which makes every parameter index a constant.

What is understood: arithmetic, ``**``, comparisons and conditional expressions, the
elementwise functions of NumPy and ``math`` listed in ``_FUNCTIONS``, ``np.where``,
``np.maximum``/``minimum``/``clip``, ``np.full_like``/``zeros_like``/``ones_like`` (a
constant at one point), parameters given one by one or as ``*p`` (indexed, sliced or
unpacked), closures and globals holding numbers, and several variables (``x, y = xy``).
Anything else (a call to another function, a reduction over ``x``, in-place assignment, a
loop whose trip count depends on the data) raises :class:`Unsupported` with the reason, and
the caller keeps finite differences. :func:`point_functions` also checks the generated
functions against the user's own model and against central differences on a sample of the
data before anything uses them.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import hashlib
import inspect
import itertools
import linecache
import math
import os
import re
import textwrap
import threading
import types as types_module
import weakref
from dataclasses import dataclass, field

import numpy as np


class Unsupported(Exception):
    """The model's source is not one this module can differentiate; the message says why."""


# Unrolled statements beyond this many: the generated code would take long to compile.
MAX_STATEMENTS = 4000
# What a fit's backend_reason says about the derivatives of a user's model.
EXACT_NOTE = "derivatives: exact, generated from the model's source (forward mode)"


def finite_difference_note(reason=None) -> str:
    """The backend_reason note for finite differences, with why (None: no reason given)."""
    return "derivatives: finite differences" + (f" ({reason})" if reason else "")



@dataclass
class Term:
    """A scalar at one point: an atomic expression (a name or a literal) for its value, one
    for its derivative along each parameter it depends on, and its value when it is known
    before the fit (integers for indices and trip counts, numeric constants)."""

    value: str
    tangent: dict[int, str] = field(default_factory=dict)
    static: object = None


def _literal(value) -> str:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | np.integer):
        return repr(int(value))
    value = float(value)
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "(-math.inf)"
    return repr(value)


def _times(a: str, b: str) -> str:
    return b if a == "1.0" else a if b == "1.0" else f"{a} * {b}"


def _constant(value) -> Term:
    if isinstance(value, np.generic):
        value = value.item()
    return Term(_literal(value), {}, value)


# The elementwise functions understood, by name: (the function at one point, derivative).
# The derivative is ``du * factor`` or ``du / factor`` (the factor a template in u, the
# argument, and t, the function's value; written once and shared by every parameter's
# derivative: on NumPy's arrays a sin(u) per parameter was a pass of its own), ``SAME``
# (du itself) or None (piecewise constant: no derivative).
SAME = "same"
_ONE_ARGUMENT = {
    "exp": ("math.exp", ("{t}", "*")),
    "log": ("math.log", ("{u}", "/")),
    "log10": ("math.log10", ("({u} * 2.302585092994046)", "/")),
    "log2": ("math.log2", ("({u} * 0.6931471805599453)", "/")),
    "log1p": ("math.log1p", ("(1.0 + {u})", "/")),
    "expm1": ("math.expm1", ("({t} + 1.0)", "*")),
    "sqrt": ("math.sqrt", ("(2.0 * {t})", "/")),
    "sin": ("math.sin", ("math.cos({u})", "*")),
    "cos": ("math.cos", ("-math.sin({u})", "*")),
    "tan": ("math.tan", ("(1.0 + {t} * {t})", "*")),
    "arcsin": ("math.asin", ("math.sqrt(1.0 - {u} * {u})", "/")),
    "arccos": ("math.acos", ("-math.sqrt(1.0 - {u} * {u})", "/")),
    "arctan": ("math.atan", ("(1.0 + {u} * {u})", "/")),
    "sinh": ("math.sinh", ("math.cosh({u})", "*")),
    "cosh": ("math.cosh", ("math.sinh({u})", "*")),
    "tanh": ("math.tanh", ("(1.0 - {t} * {t})", "*")),
    "abs": ("abs", ("(1.0 if {u} >= 0.0 else -1.0)", "*")),
    "square": ("{u} * {u}".format, ("2.0 * {u}", "*")),
    "erf": ("math.erf", ("1.1283791670955126 * math.exp(-({u} * {u}))", "*")),
    "erfc": ("math.erfc", ("-(1.1283791670955126 * math.exp(-({u} * {u})))", "*")),
    "float": ("float", SAME),
    "floor": ("math.floor", None),
    "ceil": ("math.ceil", None),
    "sign": ("np.sign", None),
}
# The functions whose derivative is infinite where their value is finite (sqrt at 0, arcsin
# at 1): a derivative through them may come out 0/0 (the tangent of sqrt(a x) at x = 0).
_SINGULAR = ("sqrt", "arcsin", "arccos")
_NAME = re.compile(r"\b_v\d+\b")
_ALIASES = {"fabs": "abs", "absolute": "abs", "asin": "arcsin", "acos": "arccos",
            "atan": "arctan", "float64": "float", "asarray": "float", "array": "float"}
_TWO_ARGUMENTS = ("arctan2", "atan2", "hypot", "power", "pow", "maximum", "minimum", "fmax",
                  "fmin", "max", "min")
_CONSTRUCTORS = ("full_like", "zeros_like", "ones_like")


def _function_name(obj) -> str | None:
    """The name under which ``obj`` (a NumPy or ``math`` function, or a builtin) is
    understood, or None."""
    for module in (np, math):
        name = getattr(obj, "__name__", None)
        if name is not None and getattr(module, name, None) is obj:
            return _ALIASES.get(name, name)
    for name in ("abs", "float", "max", "min", "len", "range", "zip", "enumerate", "pow"):
        if obj is getattr(builtins, name):
            return name
    return None


class _Module:
    def __init__(self, module):
        self.module = module


class _Function:
    def __init__(self, name):
        self.name = name


class _Writer:
    """Turns the user's function body into lines of straight-line code."""

    def __init__(self, namespace, n_params):
        self.namespace = namespace
        self.n_params = n_params
        self.lines: list[tuple[bool, str]] = []  # (is a value line, code)
        self.constants: dict[str, object] = {}  # the globals and closure numbers read
        self.counter = itertools.count()
        self.statements = 0
        # The derivative lines that may come out 0/0 where the model is finite (_SINGULAR)
        self.singular: set[str] = set()

    # -- lines ----------------------------------------------------------------------------
    def emit(self, expression: str, is_value: bool) -> str:
        name = f"_v{next(self.counter)}"
        self.lines.append((is_value, f"{name} = {expression}"))
        return name

    def value(self, expression: str, tangent: dict[int, str] | None = None) -> Term:
        return Term(self.emit(expression, True), tangent or {})

    def derivative(self, expression: str, singular: bool = False) -> str:
        """The name of a derivative line for ``expression``, ``singular`` where its rule may
        give 0/0 (it then is in :attr:`singular`, as is any line using such a one)."""
        if expression.isidentifier():
            return expression
        try:
            return _literal(float(expression))  # e.g. "-1.0": no line for a constant
        except ValueError:
            name = self.emit(expression, False)
            if singular or not self.singular.isdisjoint(_NAME.findall(expression)):
                self.singular.add(name)
            return name

    # -- expressions ----------------------------------------------------------------------
    def expression(self, node, env):
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise Unsupported(f"{type(node).__name__} expressions ({ast.unparse(node)!r})")
        return method(node, env)

    def term(self, node, env) -> Term:
        found = self.expression(node, env)
        if not isinstance(found, Term):
            raise Unsupported(f"{ast.unparse(node)!r} is not a number at one point")
        return found

    def _Constant(self, node, env):
        if isinstance(node.value, bool | int | float):
            return _constant(node.value)
        if isinstance(node.value, str):  # a docstring-like constant: not a number
            raise Unsupported(f"the string {node.value!r}")
        raise Unsupported(f"the constant {node.value!r}")

    def _Name(self, node, env):
        if node.id in env:
            return env[node.id]
        if node.id in self.namespace:
            found = self._outside(self.namespace[node.id], node.id)
            if not isinstance(found, _Module | _Function):
                self.constants[node.id] = self.namespace[node.id]
            return found
        if hasattr(builtins, node.id):
            return self._outside(getattr(builtins, node.id), node.id)
        raise Unsupported(f"the name {node.id!r} is not defined")

    def _outside(self, obj, name):
        """A global, closure or builtin the model uses."""
        if obj is np or obj is math:
            return _Module(obj)
        if isinstance(obj, bool | int | float | np.integer | np.floating):
            return _constant(obj)
        if isinstance(obj, tuple | list) and all(
                isinstance(v, int | float | np.integer | np.floating) for v in obj):
            return tuple(_constant(v) for v in obj)
        function = _function_name(obj)
        if function is not None:
            return _Function(function)
        raise Unsupported(f"{name!r} ({type(obj).__name__}) is not a number or a NumPy or "
                          "math function")

    def _Attribute(self, node, env):
        owner = self.expression(node.value, env)
        if isinstance(owner, _Module):
            return self._outside(getattr(owner.module, node.attr, None),
                                 f"{owner.module.__name__}.{node.attr}")
        raise Unsupported(f"the attribute {ast.unparse(node)!r}")

    def _Tuple(self, node, env):
        return tuple(self.expression(e, env) for e in node.elts)

    _List = _Tuple

    def _Subscript(self, node, env):
        owner = self.expression(node.value, env)
        if not isinstance(owner, tuple):
            raise Unsupported(f"indexing {ast.unparse(node.value)!r} (only the parameters "
                              "and the variables of x can be indexed)")
        index = node.slice
        if isinstance(index, ast.Slice):
            bounds = [None if part is None else self._static_int(part, env)
                      for part in (index.lower, index.upper, index.step)]
            return owner[slice(*bounds)]
        position = self._static_int(index, env)
        try:
            return owner[position]
        except IndexError:
            raise Unsupported(f"{ast.unparse(node)!r} is out of range") from None

    def _static_int(self, node, env) -> int:
        found = self.expression(node, env)
        if not isinstance(found, Term) or not isinstance(found.static, int | np.integer) \
                or isinstance(found.static, bool):
            raise Unsupported(f"the index {ast.unparse(node)!r} is not known before the fit")
        return int(found.static)

    def _UnaryOp(self, node, env):
        operand = self.term(node.operand, env)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            if operand.static is not None:
                return _constant(not operand.static)
            return self.value(f"not {operand.value}")
        if not isinstance(node.op, ast.USub):
            raise Unsupported(f"the operator in {ast.unparse(node)!r}")
        if operand.static is not None:
            return _constant(-operand.static)
        return self.value(f"-{operand.value}",
                          {j: self.derivative(f"-{d}") for j, d in operand.tangent.items()})

    def _BinOp(self, node, env):
        left, right = self.term(node.left, env), self.term(node.right, env)
        return self.binary(type(node.op), left, right, node)

    def binary(self, op, u: Term, v: Term, node=None) -> Term:
        symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
                   ast.FloorDiv: "//", ast.Mod: "%"}
        if op not in symbols:
            raise Unsupported(f"the operator in {ast.unparse(node)!r}")
        symbol = symbols[op]
        if u.static is not None and v.static is not None:
            try:
                return _constant(eval(f"({u.static!r}) {symbol} ({v.static!r})"))  # noqa: S307
            except (ArithmeticError, ValueError, TypeError):
                pass  # e.g. 1 / 0: left to the fit, as NumPy would
        if op is ast.Pow and v.static is not None and v.static == 2:
            # NumPy's own square (the same bits as u ** 2); numba's pass over the points
            # stayed scalar with the power (a gaussian: 4.8 ns a point, 1.5 with this).
            t = self.value(f"{u.value} * {u.value}")
        else:
            t = self.value(f"{u.value} {symbol} {v.value}")
        du, dv = u.tangent, v.tangent
        tangent = {}
        for j in sorted(set(du) | set(dv)):
            a, b = du.get(j), dv.get(j)
            if op is ast.Add:
                code = f"{a} + {b}" if a and b else None
                tangent[j] = self.derivative(code) if code else (a or b)
            elif op is ast.Sub:
                tangent[j] = self.derivative(f"{a} - {b}" if a and b else
                                             (a if a else f"-{b}"))
            elif op is ast.Mult:
                parts = ([_times(a, v.value)] if a else []) + ([_times(u.value, b)] if b else [])
                tangent[j] = self.derivative(" + ".join(parts))
            elif op is ast.Div:
                if a and b:
                    tangent[j] = self.derivative(f"({a} - {t.value} * {b}) / {v.value}")
                elif a:
                    tangent[j] = self.derivative(f"{a} / {v.value}")
                else:
                    tangent[j] = self.derivative(f"-({t.value} * {b}) / {v.value}")
            elif op is ast.Pow:
                # u ** c with c < 1 (not 0) is finite at u = 0 where c u ** (c - 1) is not;
                # u ** v for a parameter's v takes log(u)
                singular = v.static is None or (v.static != 0 and v.static < 1)
                tangent[j] = self.derivative(self._power_derivative(u, v, t, a, b), singular)
            elif op is ast.Mod:
                if b:
                    raise Unsupported(f"a parameter after % in {ast.unparse(node)!r}")
                tangent[j] = a
            else:  # floor division: piecewise constant
                pass
        t.tangent = tangent
        return t

    @staticmethod
    def _power_derivative(u, v, t, a, b) -> str:
        parts = []
        if a:
            if v.static is not None and v.static in (0, 1):
                parts.append("0.0" if v.static == 0 else a)
            elif v.static is not None:
                exponent = v.static
                power = (u.value if exponent == 2 else
                         f"{u.value} ** {_literal(exponent - 1)}")
                parts.append(f"{_literal(exponent)} * {power} * {a}")
            else:
                parts.append(f"{v.value} * {u.value} ** ({v.value} - 1.0) * {a}")
        if b:
            parts.append(f"{t.value} * math.log({u.value}) * {b}")
        return " + ".join(parts)

    def _Compare(self, node, env):
        terms = [self.term(node.left, env)] + [self.term(c, env) for c in node.comparators]
        symbols = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
                   ast.NotEq: "!="}
        parts = []
        for op, a, b in zip(node.ops, terms, terms[1:], strict=False):
            if type(op) not in symbols:
                raise Unsupported(f"the comparison in {ast.unparse(node)!r}")
            parts.append(f"({a.value} {symbols[type(op)]} {b.value})")
        if all(t.static is not None for t in terms):
            comparisons = {ast.Lt: float.__lt__, ast.LtE: float.__le__, ast.Gt: float.__gt__,
                           ast.GtE: float.__ge__, ast.Eq: float.__eq__, ast.NotEq: float.__ne__}
            return _constant(all(
                comparisons[type(op)](float(a.static), float(b.static))
                for op, a, b in zip(node.ops, terms, terms[1:], strict=False)))
        return self.value(" and ".join(parts))

    def _BoolOp(self, node, env):
        terms = [self.term(v, env) for v in node.values]
        joiner = " and " if isinstance(node.op, ast.And) else " or "
        return self.value(joiner.join(f"({t.value})" for t in terms))

    def _IfExp(self, node, env):
        condition = self.term(node.test, env)
        if condition.static is not None:
            return self.term(node.body if condition.static else node.orelse, env)
        return self.select(condition, self.term(node.body, env), self.term(node.orelse, env))

    def select(self, condition: Term, a: Term, b: Term) -> Term:
        chosen = self.value(f"{a.value} if {condition.value} else {b.value}")
        chosen.tangent = {
            j: self.derivative(f"{a.tangent.get(j, '0.0')} if {condition.value} else "
                               f"{b.tangent.get(j, '0.0')}")
            for j in sorted(set(a.tangent) | set(b.tangent))}
        return chosen

    def _Call(self, node, env):
        function = self.expression(node.func, env)
        if not isinstance(function, _Function):
            raise Unsupported(f"the call {ast.unparse(node.func)!r} (not a NumPy or math "
                              "function)")
        name = function.name
        keywords = {k.arg: k.value for k in node.keywords}
        if any(k is None for k in keywords) or any(
                isinstance(a, ast.Starred) for a in node.args):
            raise Unsupported(f"*args or **kwargs in {ast.unparse(node)!r}")
        if name in _CONSTRUCTORS:
            if name == "full_like":
                fill = node.args[1] if len(node.args) > 1 else keywords.get("fill_value")
                if fill is None:
                    raise Unsupported(f"{ast.unparse(node)!r} without a fill value")
                return self.term(fill, env)
            return _constant(0.0 if name == "zeros_like" else 1.0)
        if keywords:
            raise Unsupported(f"keyword arguments in {ast.unparse(node)!r}")
        args = node.args
        if name == "len" and len(args) == 1:
            found = self.expression(args[0], env)
            if isinstance(found, tuple):
                return _constant(len(found))
            raise Unsupported(f"{ast.unparse(node)!r} (len of an array)")
        if name == "where" and len(args) == 3:
            condition = self.term(args[0], env)
            return self.select(condition, self.term(args[1], env), self.term(args[2], env))
        if name == "clip" and len(args) == 3:
            value, low, high = (self.term(a, env) for a in args)
            clipped = self.select(self.value(f"{value.value} < {low.value}"), low, value)
            return self.select(self.value(f"{clipped.value} > {high.value}"), high, clipped)
        if name in _TWO_ARGUMENTS and len(args) == 2:
            return self.two_arguments(name, self.term(args[0], env), self.term(args[1], env))
        if name in _ONE_ARGUMENT and len(args) == 1:
            return self.one_argument(name, self.term(args[0], env))
        raise Unsupported(f"the call {ast.unparse(node)!r}")

    def one_argument(self, name, u: Term) -> Term:
        primal, rule = _ONE_ARGUMENT[name]
        if u.static is not None:
            evaluate = (float if name == "float" else getattr(np, name, None)
                        or getattr(math, name))
            with np.errstate(all="ignore"):
                return _constant(float(evaluate(u.static)))
        code = primal(u=u.value) if callable(primal) else f"{primal}({u.value})"
        t = self.value(code)
        if rule == SAME:
            t.tangent = dict(u.tangent)
        elif rule is not None and u.tangent:
            template, combine = rule
            factor = template.format(u=u.value, t=t.value)
            if not factor.isidentifier():
                factor = self.emit(factor, False)
            t.tangent = {j: self.derivative(f"{d} / {factor}" if combine == "/"
                                            else _times(d, factor), name in _SINGULAR)
                         for j, d in u.tangent.items()}
        return t

    def two_arguments(self, name, u: Term, v: Term) -> Term:
        if name in ("power", "pow"):
            return self.binary(ast.Pow, u, v)
        if name in ("maximum", "fmax", "max"):
            return self.select(self.value(f"{u.value} >= {v.value}"), u, v)
        if name in ("minimum", "fmin", "min"):
            return self.select(self.value(f"{u.value} <= {v.value}"), u, v)
        if name in ("arctan2", "atan2"):
            t = self.value(f"math.atan2({u.value}, {v.value})")
            r2 = self.derivative(f"{u.value} * {u.value} + {v.value} * {v.value}")
            template = "({dv_u} - {du_v}) / {r2}"
        else:  # hypot
            t = self.value(f"math.hypot({u.value}, {v.value})")
            r2 = t.value
            template = "({du_u} + {dv_v}) / {r2}"
        for j in sorted(set(u.tangent) | set(v.tangent)):
            du, dv = u.tangent.get(j, "0.0"), v.tangent.get(j, "0.0")
            # (0/0 at the origin, where atan2 and hypot are 0)
            t.tangent[j] = self.derivative(template.format(
                dv_u=f"{v.value} * {du}", du_v=f"{u.value} * {dv}",
                du_u=f"{u.value} * {du}", dv_v=f"{v.value} * {dv}", r2=r2), singular=True)
        return t

    # -- statements -----------------------------------------------------------------------
    def block(self, statements, env, top_level=False):
        """Run statements; returns the model's value at a ``return`` (top level only)."""
        for index, statement in enumerate(statements):
            self.statements += 1
            if self.statements > MAX_STATEMENTS:
                raise Unsupported(f"more than {MAX_STATEMENTS} statements once loops are "
                                  "unrolled")
            if isinstance(statement, ast.Return):
                if not top_level or index != len(statements) - 1 or statement.value is None:
                    raise Unsupported("a return that is not the function's last statement")
                return self.term(statement.value, env)
            self.statement(statement, env)
        if top_level:
            raise Unsupported("no return statement")
        return None

    def statement(self, node, env):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # a docstring
        if isinstance(node, ast.Pass | ast.Assert):
            return
        if isinstance(node, ast.Assign):
            found = self.expression(node.value, env)
            for target in node.targets:
                self.assign(target, found, env)
            return
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            self.assign(node.target, self.expression(node.value, env), env)
            return
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            current = self.term(node.target, env)
            env[node.target.id] = self.binary(type(node.op), current,
                                              self.term(node.value, env), node)
            return
        if isinstance(node, ast.For) and not node.orelse:
            for item in self.iteration(node.iter, env):
                self.assign(node.target, item, env)
                self.block(node.body, env)
            return
        if isinstance(node, ast.If):
            condition = self.term(node.test, env)
            if condition.static is None:
                raise Unsupported(f"the branch on {ast.unparse(node.test)!r} (known only "
                                  "during the fit; np.where works)")
            self.block(node.body if condition.static else node.orelse, env)
            return
        raise Unsupported(f"the statement {ast.unparse(node).splitlines()[0]!r}")

    def assign(self, target, found, env):
        if isinstance(target, ast.Name):
            env[target.id] = found
            return
        if isinstance(target, ast.Tuple | ast.List) and isinstance(found, tuple):
            if len(target.elts) != len(found):
                raise Unsupported(f"unpacking {len(found)} values into {len(target.elts)}")
            for t, v in zip(target.elts, found, strict=True):
                self.assign(t, v, env)
            return
        raise Unsupported(f"assigning to {ast.unparse(target)!r}")

    def iteration(self, node, env):
        """The items of a loop whose trip count is known before the fit."""
        if isinstance(node, ast.Call):
            function = self.expression(node.func, env)
            if isinstance(function, _Function) and function.name == "range":
                bounds = [self._static_int(a, env) for a in node.args]
                return [_constant(k) for k in range(*bounds)]
            if isinstance(function, _Function) and function.name in ("zip", "enumerate"):
                parts = [self.expression(a, env) for a in node.args]
                if not all(isinstance(p, tuple) for p in parts):
                    raise Unsupported(f"{ast.unparse(node)!r} over something other than "
                                      "the parameters")
                if function.name == "enumerate":
                    return [(_constant(k), v) for k, v in enumerate(parts[0])]
                return list(zip(*parts, strict=False))
        found = self.expression(node, env)
        if isinstance(found, tuple):
            return list(found)
        raise Unsupported(f"the loop over {ast.unparse(node)!r} (its trip count must be "
                          "known before the fit)")


def _function_block(f):
    """The parsed lines of ``f``'s ``def`` (decorators included), or None: from its first
    line to the first line after it as little indented that completes a statement that
    parses. ``inspect.getsource`` finds the end with ``tokenize``, whose first use costs a
    script's first fit 1.5 ms (its patterns compiled); it reads what this cannot."""
    lines, start = inspect.findsource(f)
    indent = len(lines[start]) - len(lines[start].lstrip())
    for end in range(start + 1, len(lines) + 1):
        if end < len(lines):
            line = lines[end]
            if not line.strip() or line.lstrip().startswith("#") or (
                    len(line) - len(line.lstrip()) > indent):
                continue
        try:
            return ast.parse(textwrap.dedent("".join(lines[start:end])))
        except SyntaxError:  # a signature's closing line, say: the block goes on
            continue
    return None


def _lambda_definition(f):
    """A lambda's ``def`` equivalent: the one lambda of f's first line in its file that
    takes f's arguments, as ``def <lambda>(args): return body`` (the whole file is parsed:
    a lambda's own lines, say inside a call that goes on below, need not parse alone)."""
    try:
        lines, _ = inspect.findsource(f)
    except (OSError, TypeError) as exc:
        raise Unsupported("the source of this lambda cannot be read") from exc
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError as exc:
        raise Unsupported("the lambda's file does not parse") from exc
    code = f.__code__
    arguments = code.co_varnames[:code.co_argcount]
    found = [node for node in ast.walk(tree)
             if isinstance(node, ast.Lambda) and node.lineno == code.co_firstlineno
             and tuple(a.arg for a in node.args.args) == arguments]
    if len(found) != 1:
        raise Unsupported(f"{len(found)} lambdas with these arguments on line "
                          f"{code.co_firstlineno} (define the model with def)")
    definition = ast.FunctionDef(name=f.__name__, args=found[0].args,
                                 body=[ast.Return(found[0].body)], decorator_list=[],
                                 returns=None, type_params=[])
    return ast.fix_missing_locations(definition)


# Definitions that came with a user's function from the process that could read its source
# (a dask worker's copy of the model: pickled by value, its source is not on the worker).
_shipped: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def definition_to_ship(f):
    """The parsed definition of a user's model ``f`` (a partial's function: an ``ast``
    node), to send with ``f`` to processes that cannot read its source
    (:func:`receive_definition`); None where it has none."""
    try:
        return _definition(_function_of(f))
    except Unsupported:
        return None


def receive_definition(f, definition) -> None:
    """Use ``definition`` (:func:`definition_to_ship`'s, from the sending process) as the
    source of ``f`` here, so that its derivatives are generated here as there: a distributed
    batch then fits as the in-memory one does."""
    if definition is None:
        return
    try:
        _shipped[_function_of(f)] = definition
    except (Unsupported, TypeError):  # nothing to generate from here either
        pass


def _definition(f):
    shipped = _shipped.get(f)
    if shipped is not None:
        return copy.deepcopy(shipped)
    if f.__name__ == "<lambda>":
        return _lambda_definition(f)
    try:
        tree = _function_block(f)
        if tree is None:
            tree = ast.parse(textwrap.dedent(inspect.getsource(f)))
    except (OSError, TypeError) as exc:
        raise Unsupported(f"the source of {getattr(f, '__qualname__', f)!r} cannot be read"
                          ) from exc
    except SyntaxError as exc:
        raise Unsupported("the source does not parse on its own") from exc
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, ast.FunctionDef) or definition.name != f.__name__:
        raise Unsupported("not a function defined with def")
    return definition


def generate_source(f, n_params: int, n_variables: int) -> tuple[str, str]:
    """The sources of ``value`` and ``gradient`` for ``f(x, *params)`` with ``n_params``
    parameters and ``n_variables`` rows of x; :class:`Unsupported` if that cannot be done."""
    value_source, gradient_source, _ = _generate(f, n_params, n_variables)
    return value_source, gradient_source


def namespace_of(f) -> dict:
    """The names ``f``'s code sees: its globals, and its closure's cells as names (a
    ``functools.partial``'s: its function's)."""
    f = _function_of(f)
    namespace = dict(f.__globals__)
    for name, cell in zip(f.__code__.co_freevars, f.__closure__ or (), strict=True):
        try:
            namespace[name] = cell.cell_contents
        except ValueError:  # an empty cell: a name assigned after the function
            pass
    return namespace


def plain_function(f):
    """The Python function whose code ``f`` runs: ``f`` itself (a def or a lambda), or the
    function of a ``functools.partial`` that binds only keywords (constants of the model,
    as a default is); None for anything else."""
    if type(f) is functools.partial and not f.args:
        f = f.func
    return f if isinstance(f, types_module.FunctionType) else None


def _function_of(f):
    """:func:`plain_function`, or :class:`Unsupported` saying why there is none."""
    function = plain_function(f)
    if function is None:
        if isinstance(f, functools.partial) and f.args:
            raise Unsupported("a functools.partial with positional arguments (bind the "
                              "model's constants by keyword)")
        raise Unsupported(f"{type(f).__name__} objects (only functions defined with def, "
                          "lambdas, and functools.partial of them with keywords)")
    return function


def _generate(f, n_params, n_variables):
    """(value source, gradient source, the global and closure numbers they hold)."""
    bound = dict(f.keywords) if isinstance(f, functools.partial) else {}
    f = _function_of(f)
    definition = _definition(f)
    arguments = definition.args
    if arguments.posonlyargs or arguments.kwarg:
        raise Unsupported("positional-only or **kwargs arguments")
    names = [a.arg for a in arguments.args]
    defaults = dict(zip(reversed(names), reversed(f.__defaults__ or ()), strict=False))
    keyword_only = [a.arg for a in arguments.kwonlyargs]
    defaults.update({k: v for k, v in (f.__kwdefaults__ or {}).items()})
    defaults.update(bound)
    if not names:
        raise Unsupported("the model takes no x")
    # A keyword the partial binds is no positional parameter (scipy's f(x, *p) cannot
    # fill it without clashing).
    names = [names[0]] + [name for name in names[1:] if name not in bound]
    writer = _Writer(namespace_of(f), n_params)
    header = []
    if n_variables == 1:
        header.append("_x = x[0, i]")
        x_term = Term("_x")
    else:
        header += [f"_x{k} = x[{k}, i]" for k in range(n_variables)]
        x_term = tuple(Term(f"_x{k}") for k in range(n_variables))
    params = []
    for j in range(n_params):
        header.append(f"_p{j} = p[{j}]")
        params.append(Term(f"_p{j}", {j: "1.0"}))
    env = {names[0]: x_term}
    positional = names[1:]
    if (len(positional) < n_params and arguments.vararg is None) or not all(
            name in defaults for name in positional[n_params:]):
        raise Unsupported(f"{n_params} parameters do not match the signature")
    for name, term in zip(positional, params, strict=False):
        env[name] = term
    for name in positional[len(params):]:
        if name not in defaults:
            raise Unsupported(f"no value for the argument {name!r}")
        env[name] = writer._outside(defaults[name], name)
    for name in keyword_only + [name for name in bound if name not in env]:
        if name not in defaults:
            raise Unsupported(f"no value for the keyword-only argument {name!r}")
        env[name] = writer._outside(defaults[name], name)
    if arguments.vararg is not None:
        env[arguments.vararg.arg] = tuple(params[len(positional):])
    result = writer.block(definition.body, env, top_level=True)
    value_lines = header + [code for is_value, code in writer.lines if is_value]
    gradient_lines = header + [code for _, code in writer.lines]
    for j in range(n_params):
        tangent = result.tangent.get(j, "0.0")
        if tangent in writer.singular:
            # A derivative that comes out nan (0/0, 0 x inf) where the model is finite is 0,
            # as finite differences find: sqrt(a x) at x = 0, whose tangent along a is
            # x / (2 sqrt(a x)), or x ** b at x = 0 do not move with the parameter there.
            # Only where a singular rule leads to it: a select costs numba's pass 8%.
            tangent = _nan_as_zero(tangent)
        gradient_lines.append(f"jac[{j}, col] = {tangent}")
    value_source = "def value(x, i, p):\n" + "".join(
        f"    {line}\n" for line in value_lines + [f"return {result.value}"])
    gradient_source = "def gradient(x, i, p, jac, col):\n" + "".join(
        f"    {line}\n" for line in gradient_lines + [f"return {result.value}"])
    return value_source, gradient_source, writer.constants


def _nan_as_zero(name: str) -> str:
    return f"{name} if {name} == {name} else 0.0"


def _is_nan_as_zero(node) -> bool:
    """Whether ``node`` is :func:`_nan_as_zero`'s expression."""
    return (isinstance(node, ast.IfExp) and isinstance(node.body, ast.Name)
            and ast.unparse(node) == _nan_as_zero(node.body.id))


def _constants_unchanged(f, constants: dict) -> bool:
    """Whether the globals and closure numbers a generated function holds still have the
    values it was generated with (a script may change a global between fits)."""
    if not constants:
        return True
    f = _function_of(f)
    cells = dict(zip(f.__code__.co_freevars, f.__closure__ or (), strict=True))
    missing = object()
    for name, value in constants.items():
        try:
            now = cells[name].cell_contents if name in cells else f.__globals__.get(
                name, missing)
        except ValueError:  # an emptied cell
            return False
        if type(now) is not type(value) or now != value:
            return False
    return True


class ArrayMath:
    """``math`` as NumPy's functions, which take arrays and give nan or inf where ``math``
    raises, as the compiled code does: for the check in Python, and for the NumPy backend,
    which runs the generated lines on arrays (:func:`autofit.original.host.exact_prepared`)."""

    nan, inf, pi, e = math.nan, math.inf, math.pi, math.e
    exp, log, log10, log2, log1p, expm1, sqrt = (np.exp, np.log, np.log10, np.log2, np.log1p,
                                                 np.expm1, np.sqrt)
    sin, cos, tan, asin, acos, atan = np.sin, np.cos, np.tan, np.arcsin, np.arccos, np.arctan
    sinh, cosh, tanh, atan2, hypot = np.sinh, np.cosh, np.tanh, np.arctan2, np.hypot
    floor, ceil = np.floor, np.ceil
    erf, erfc = staticmethod(np.vectorize(math.erf)), staticmethod(np.vectorize(math.erfc))


# ------------------------------------------- the point gradient on arrays of points

class _OnArrays(ast.NodeTransformer):
    """The generated gradient's scalar code (:mod:`autofit._forward_mode`) on arrays of
    points: ``a if c else b`` as ``where(c, a, b)``, ``and``/``or``/``not`` as logical
    functions, and ``x[k, i]`` (the point's k-th variable) as the row ``_X[k]``."""

    def visit_IfExp(self, node):
        self.generic_visit(node)
        return _call("_where", node.test, node.body, node.orelse)

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        name = "_and" if isinstance(node.op, ast.And) else "_or"
        combined = node.values[0]
        for value in node.values[1:]:
            combined = _call(name, combined, value)
        return combined

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return _call("_not", node.operand) if isinstance(node.op, ast.Not) else node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if (isinstance(node.value, ast.Name) and node.value.id == "x"
                and isinstance(node.slice, ast.Tuple)):
            return ast.Subscript(ast.Name("_X", ast.Load()), node.slice.elts[0], ast.Load())
        return node


def _call(name, *arguments):
    return ast.Call(ast.Name(name, ast.Load()), list(arguments), [])


def _is_column(statement) -> bool:
    """``jac[j, col] = ...``: the generated gradient's write of one derivative."""
    target = statement.targets[0] if isinstance(statement, ast.Assign) else None
    return (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
            and target.value.id == "jac")


def array_jacobian_source(gradient_source: str, n_params: int) -> str:
    """:func:`array_jacobian_code`'s functions as source text."""
    return "\n\n".join(ast.unparse(definition)
                       for definition in _array_jacobian_definitions(gradient_source,
                                                                     n_params))


def array_jacobian_code(gradient_source: str, n_params: int, filename: str):
    """The code that defines ``jacobian`` and ``value_and_jacobian``
    (:func:`_array_jacobian_definitions`), compiled from the tree (unparsed and parsed
    again: 1.1 against 0.7 ms for a gaussian on a line)."""
    module = ast.Module(body=_array_jacobian_definitions(gradient_source, n_params),
                        type_ignores=[])
    return compile(module, filename, "exec")


def _array_jacobian_definitions(gradient_source: str, n_params: int):
    """``jacobian(x, p) -> (n_points, n_params)`` from the point gradient's source: the
    same lines on every point at once, the derivatives stacked as columns by the
    namespace's ``_columns(values, rows, guarded)``, which must make a nan derivative 0 in
    the columns listed in ``guarded`` (the point gradient's rule for the derivatives that a
    singular rule leads to, written there per derivative); and ``value_and_jacobian(x, p)
    -> (value, jacobian)``, the model's value too (the gradient's return value, made an
    array of the points by the namespace's ``_values(value, rows)``), where a pass needs
    both: one set of lines for both, not the model's and the derivatives'. Each keeps only
    the lines its results need. The namespace gives array functions for ``math``, ``abs``,
    ``_where``, ``_and``, ``_or``, ``_not`` and ``_atleast_2d`` (jax.numpy's:
    :func:`autofit.jax.host.exact_jacobian`; NumPy's:
    :func:`autofit.original.host.exact_prepared`)."""
    definition = ast.parse(gradient_source).body[0]
    columns = {}
    guarded = []
    body = [ast.parse("_X = _atleast_2d(x)").body[0]]
    value = None
    for statement in definition.body:
        if _is_column(statement):
            j, column = statement.targets[0].slice.elts[0].value, statement.value
            # nan as 0 for whole columns at once (_columns): a select per column cost the
            # NumPy engine a third more
            if _is_nan_as_zero(column):
                column = column.body
                guarded.append(j)
            columns[j] = column
        elif isinstance(statement, ast.Return):
            value = statement.value
        else:
            body.append(statement)
    rows = ast.Name("_X", ast.Load())
    stacked = _call("_columns", ast.Tuple([columns[j] for j in range(n_params)], ast.Load()),
                    rows, ast.Tuple([ast.Constant(j) for j in guarded], ast.Load()))
    # On arrays once; the two functions share the lines (compile takes a node twice).
    body = [_OnArrays().visit(statement) for statement in body]
    stacked = _OnArrays().visit(stacked)
    functions = [_array_function("jacobian", body, stacked)]
    if value is not None:  # (a gradient returns the model's value: generate_source's do)
        both = ast.Tuple([_call("_values", _OnArrays().visit(value), rows), stacked],
                         ast.Load())
        functions.append(_array_function("value_and_jacobian", body, both))
    return functions


def _array_function(name, body, result):
    """``def name(x, p): <the lines of body that result needs>; return result``."""
    needed = {node.id for node in ast.walk(result) if isinstance(node, ast.Name)}
    kept = []
    for statement in reversed(body):
        targets = statement.targets if isinstance(statement, ast.Assign) else ()
        if (len(targets) == 1 and isinstance(targets[0], ast.Name)
                and targets[0].id not in needed):
            continue  # (the generated lines compute; none has an effect besides its name)
        kept.append(statement)
        needed |= {node.id for node in ast.walk(statement) if isinstance(node, ast.Name)}
    definition = ast.FunctionDef(
        name=name, args=ast.arguments(posonlyargs=[], args=[ast.arg("x"), ast.arg("p")],
                                      kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=[*reversed(kept), ast.Return(result)], decorator_list=[], returns=None,
        type_params=[])
    return ast.fix_missing_locations(definition)


_counter = itertools.count()


def _define(source: str, name: str, namespace: dict):
    filename = f"<autofit derivatives {next(_counter)}>"
    # Registered so that inspect.getsource works (the kernels recompile point functions from
    # their source, e.g. for float32 literals).
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - generated from an AST
    function = namespace[name]
    function.__module__ = __name__
    # Self-contained (it names only math and np; the model's numbers are literals in it):
    # numba's kernel cache writes it into a module of its own (autofit.numba.kernel_cache).
    function.generated_source = source
    return function


def _check(f, value, gradient, x, p0, n_params):
    """Compare the generated functions with the user's model and with central differences
    at p0 on up to 16 points of x; :class:`Unsupported` on any disagreement."""
    x2 = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n_points = x2.shape[1]
    spread = np.linspace(0, n_points - 1, min(n_points, 16)).astype(np.int64)
    # Sorted already: its distinct values without np.unique, whose first call imports
    # numpy.ma (25 ms of a script's first fit)
    sample = spread[np.concatenate(([True], spread[1:] != spread[:-1]))]
    xs = np.ascontiguousarray(x2[:, sample])
    p = np.asarray(p0, dtype=np.float64)
    x_user = xs[0] if x2.shape[0] == 1 and np.ndim(x) == 1 else xs
    with np.errstate(all="ignore"):
        reference = np.broadcast_to(np.asarray(f(x_user, *p), dtype=np.float64),
                                    (sample.shape[0],))
        generated = np.empty(sample.shape[0])
        jac = np.zeros((n_params, sample.shape[0]))
        for k in range(sample.shape[0]):
            generated[k] = value(xs, k, p)
            if gradient(xs, k, p, jac, k) != generated[k] and not np.isnan(generated[k]):
                raise Unsupported("the generated value and gradient disagree")
        finite = np.isfinite(reference)
        if not np.array_equal(finite, np.isfinite(generated)) or not np.allclose(
                generated[finite], reference[finite], rtol=1e-9,
                atol=1e-12 * (np.abs(reference[finite]).max(initial=0.0) + 1e-300)):
            raise Unsupported("the generated model differs from the user's at p0")
        for j in range(n_params):
            # Central differences at two steps, extrapolated (Richardson): an error of order
            # step**4, so that a narrow peak's derivatives are checked to ~1e-8.
            step = 6.055454452393343e-06 * max(abs(p[j]), 1.0)  # eps ** (1/3)
            central = (4.0 * _central(f, x_user, p, j, 0.5 * step)
                       - _central(f, x_user, p, j, step)) / 3.0
            central = np.broadcast_to(central, (sample.shape[0],))
            ok = np.isfinite(central) & finite
            scale = np.abs(central[ok]).max(initial=0.0) + np.abs(jac[j, ok]).max(initial=0.0)
            if np.any(np.abs(jac[j, ok] - central[ok]) > 1e-6 * scale + 1e-9 * (
                    np.abs(reference[ok]).max(initial=0.0) / max(abs(p[j]), 1.0))):
                raise Unsupported(f"the generated derivative along parameter {j} differs "
                                  "from central differences at p0")


def _central(f, x, p, j, step):
    up, down = p.copy(), p.copy()
    up[j] += step
    down[j] -= step
    return (np.asarray(f(x, *up), dtype=np.float64)
            - np.asarray(f(x, *down), dtype=np.float64)) / (up[j] - down[j])


_lock = threading.Lock()
_found: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def exact_or_none(f, n_params: int, n_variables: int, x=None, p0=None):
    """:func:`point_functions`, or ``(None, reason)`` where they cannot be had."""
    try:
        return point_functions(f, n_params, n_variables, x, p0), None
    except Unsupported as exc:
        return None, str(exc)


def point_functions(f, n_params: int, n_variables: int, x=None, p0=None):
    """``(value, gradient)`` point functions with exact derivatives of ``f``, or
    :class:`Unsupported` with the reason.

    Generated once per function and layout; when ``x`` and ``p0`` are given (the first
    time), checked against ``f`` itself and central differences on a sample of x.
    """
    key = (n_params, n_variables)
    with _lock:
        try:
            table = _found.setdefault(f, {})
        except TypeError:
            raise Unsupported(f"{type(f).__name__} objects") from None
        if key in table and not _constants_unchanged(f, table[key][1]):
            del table[key]  # a global or closure number changed: generate again
        if key not in table:
            constants = {}
            try:
                value_source, gradient_source, constants = _generate(f, n_params,
                                                                     n_variables)
                checked = {"math": ArrayMath, "np": np, "abs": abs, "float": float}
                if x is not None and p0 is not None:
                    _check(f, _define(value_source, "value", dict(checked)),
                           _define(gradient_source, "gradient", dict(checked)), x, p0,
                           n_params)
                compiled = {"math": math, "np": np}
                found = (_define(value_source, "value", dict(compiled)),
                         _define(gradient_source, "gradient", dict(compiled)))
            except Unsupported as exc:
                found = exc
            except Exception as exc:  # noqa: BLE001 - the model failed in the check
                found = Unsupported(f"the check at p0 failed ({type(exc).__name__}: {exc})")
            table[key] = (found, constants)
        found = table[key][0]
    if isinstance(found, Unsupported):
        raise Unsupported(str(found))
    return found


def point_functions_from_sources(value_source: str, gradient_source: str):
    """``(value, gradient)`` from the sources :func:`point_functions` generated (their
    ``generated_source``), in another process: they name only ``math``, ``np`` and
    literals."""
    return (_define(value_source, "value", {"math": math, "np": np}),
            _define(gradient_source, "gradient", {"math": math, "np": np}))


def compiled_marker(value, gradient, road: str) -> str:
    """The file whose presence says that a backend has compiled its passes for these
    generated point functions into its disk cache, for ``road`` (``"fused"``: curve_fit's
    fused pass, ``"batch"``: the batched passes): ``FFIT_CACHE_DIR/compiled/<road>-<hash of
    their sources>``. Written by the numba backend (:mod:`autofit.numba.fused`,
    :mod:`autofit.numba.kernel_cache`), read by the default rule's quick start, which must
    not import numba to ask (:func:`autofit._dispatch.quick_choice`'s ``cached``). A marker
    left by another numba version only makes the quick start compile sooner."""
    from autofit._environment import cache_directory

    digest = hashlib.sha256((value.generated_source + gradient.generated_source).encode())
    return os.path.join(cache_directory(), "compiled", f"{road}-{digest.hexdigest()[:24]}")


def mark_compiled(value, gradient, road: str) -> None:
    """Leave :func:`compiled_marker` for point functions generated here (nothing for
    others, or where the directory cannot be written: a marker is only a hint)."""
    if not (hasattr(value, "generated_source") and hasattr(gradient, "generated_source")):
        return
    marker = compiled_marker(value, gradient, road)
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "a"):
            pass
    except OSError:
        pass


def is_compiled_on_disk(functions, road: str) -> bool:
    """Whether :func:`compiled_marker` is there for ``functions`` ``(value, gradient)``
    (False for None)."""
    return functions is not None and os.path.exists(compiled_marker(*functions, road))


__all__ = ["Unsupported", "compiled_marker", "exact_or_none", "generate_source",
           "is_compiled_on_disk", "mark_compiled", "point_functions",
           "point_functions_from_sources"]
