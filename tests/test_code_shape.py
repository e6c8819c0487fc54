"""The code stays readable as it grows (issue 14): short functions, few positional parameters, modules read in
one sitting, one definition of the output-size rule. Model constructors that mirror the released
configuration keep their parameters."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("e2diffsr_core", "qgis_plugin")
MAX_FUNCTION_LINES, MAX_POSITIONAL, MAX_MODULE_LINES = 60, 8, 500


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _positional(fn: ast.FunctionDef) -> int:
    args = fn.args.posonlyargs + fn.args.args
    return len(args) - (1 if args and args[0].arg in ("self", "cls") else 0)


def _released_constructor(path: Path, fn: ast.FunctionDef) -> bool:
    return fn.name == "__init__" and path.parent.name == "model"


def test_functions_fit_on_a_screen_and_take_few_positional_parameters():
    long, wide = [], []
    for path in _modules():
        for fn in _functions(path):
            where = f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}"
            if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(where)
            if _positional(fn) > MAX_POSITIONAL and not _released_constructor(path, fn):
                wide.append(where)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
    assert not wide, f"functions with over {MAX_POSITIONAL} positional parameters: {wide}"


def test_modules_are_read_in_one_sitting():
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p in _modules()
           if (n := p.read_text().count("\n")) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_the_output_size_rule_is_defined_once():
    homes = [f"{p.relative_to(ROOT)}" for p in _modules() for fn in _functions(p) if fn.name == "output_size"]
    assert homes == ["e2diffsr_core/rules.py"], homes
