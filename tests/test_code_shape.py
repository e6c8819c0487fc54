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


# The package layout (issue 22): one folder per role of docs/design.md, each importing only the layers below it.
# Units in the same layer do not import each other; a unit may import itself freely.
LAYERS = [
    {"errors"}, {"gridmap", "rules"}, {"model"}, {"checkpoint"}, {"api"},
    {"engine", "raster_io", "tools"}, {"area_run", "request"}, {"raster"},
    {"evaluation", "scale_out"}, {"train"}, {"cli"}, {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
TOP_MODULES = {"__init__", "__main__", "api", "area_run", "checkpoint", "errors", "gridmap", "raster", "request",
               "rules"}
PACKAGES_OF_ROLES = {"cli", "engine", "evaluation", "model", "raster_io", "scale_out", "tools", "train"}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "e2diffsr_core" and len(parts) > 1 else None


def _imports(path: Path):
    """Every e2diffsr_core module a file imports (top level or inside a function), absolute and dotted."""
    here = list(path.relative_to(ROOT).with_suffix("").parts)
    package = here if here[-1] == "__init__" else here[:-1]
    package = [p for p in package if p != "__init__"]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None or node.level and not node.module:
                yield from (f"{target}.{a.name}" for a in node.names)
            else:
                yield target
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_each_role_has_its_package_and_no_module_lives_outside_it():
    core = ROOT / "e2diffsr_core"
    top = {p.stem for p in core.glob("*.py")}
    assert top == TOP_MODULES, f"modules beside the packages that belong in one: {sorted(top - TOP_MODULES)}"
    packages = {p.parent.name for p in core.glob("*/__init__.py")}
    assert packages == PACKAGES_OF_ROLES, sorted(packages ^ PACKAGES_OF_ROLES)
    undocumented = [p for p in sorted(packages)
                    if not ast.get_docstring(ast.parse((core / p / "__init__.py").read_text()))]
    assert not undocumented, f"packages whose __init__ does not say what lives there: {undocumented}"


def test_packages_import_only_downwards():
    upward = []
    for path in sorted((ROOT / "e2diffsr_core").rglob("*.py")):
        rel = path.relative_to(ROOT / "e2diffsr_core")
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if unit not in RANK:
            continue  # the package's __init__
        for target in _imports(path):
            other = _unit(target)
            if other is None or other == unit or other not in RANK:
                continue
            if RANK[other] >= RANK[unit]:
                upward.append(f"{rel} imports {target}")
    assert not upward, f"imports that go up or sideways between layers: {upward}"


def test_the_engine_never_imports_raster_io_or_a_front_end():
    for path in sorted((ROOT / "e2diffsr_core" / "engine").rglob("*.py")):
        for target in _imports(path):
            assert _unit(target) not in {"raster_io", "raster", "request", "cli", "scale_out", "evaluation", "train"}, \
                f"{path.name} imports {target}"
