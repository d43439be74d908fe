"""The generic name registry, plugin registration, and the package layering it allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stvcli
from stvcli.errors import DataError, StvError
from stvcli.registry import Registry

ROOT = Path(stvcli.__file__).parent


def test_register_and_get() -> None:
    registry: Registry[int] = Registry("number")
    assert registry.register("one", 1) == 1
    registry.register("two", 2)
    assert registry.get("one") == 1 and registry.get("two") == 2
    assert "one" in registry and "three" not in registry
    assert registry.names() == ["one", "two"] and list(registry) == ["one", "two"]
    assert registry.items() == [("one", 1), ("two", 2)]


def test_unknown_name_is_a_one_line_error_listing_the_names() -> None:
    registry: Registry[int] = Registry("task", error=DataError, hint="stv tasks lists them")
    registry.register("b", 2)
    registry.register("a", 1)
    with pytest.raises(DataError) as info:
        registry.get("x")
    assert str(info.value) == "unknown task 'x'; choose one of a, b (stv tasks lists them)"
    with pytest.raises(StvError, match=r"^unknown method 'x'; choose one of none$"):
        Registry("method").get("x")


def test_a_second_entry_under_one_name_needs_replace() -> None:
    registry: Registry[object] = Registry("thing")
    first, second = object(), object()
    registry.register("x", first)
    registry.register("x", first)  # the same object again is harmless
    with pytest.raises(ValueError, match="thing 'x' is already registered"):
        registry.register("x", second)
    assert registry.get("x") is first
    registry.register("x", second, replace=True)
    assert registry.get("x") is second


def test_decorator_form() -> None:
    registry: Registry[type] = Registry("method")

    @registry.register("plain")
    class Plain:
        pass

    assert registry.get("plain") is Plain


def test_discover_runs_before_lookups_of_missing_names() -> None:
    calls: list[str] = []

    def discover() -> None:
        calls.append("discover")
        registry.register("late", 3, replace=True)

    registry: Registry[int] = Registry("thing", discover=discover)
    registry.register("early", 1)
    assert registry.get("early") == 1 and calls == []  # known names need no discovery
    assert registry.get("late") == 3 and calls == ["discover"]
    assert registry.names() == ["early", "late"]


def test_plugins_register_bundled_tasks_and_sources() -> None:
    """The shapes world registers through the ``stvcli.plugins`` entry point, on first lookup."""
    from stvcli.data.sources import get_source_loader, source_prefixes
    from stvcli.data.tasks import get_task

    assert get_task("shapes-color").name == "shapes-color"
    assert "shapes" in source_prefixes()
    from stvcli.shapes.tasks import load_shapes, register

    assert get_source_loader("shapes") is load_shapes
    register()  # idempotent
    assert get_source_loader("shapes") is load_shapes and get_task("shapes-fruit").kind == "classification"


# ----------------------------------------------------------------------------- layering


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an ``import`` statement in ``source`` (a module of ``package``) names,
    also inside functions; relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            parent = parts[: len(parts) - node.level + 1] if node.level else []
            base = ".".join([*parent, node.module] if node.module else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).parts[:-1])


LAYERS = {
    "stvcli/data": ("stvcli.shapes", "stvcli.stages"),
    "stvcli/models": ("stvcli.shapes", "stvcli.stages"),
    "stvcli/distributed.py": ("stvcli.shapes", "stvcli.stages"),
}


@pytest.mark.parametrize("where", sorted(LAYERS))
def test_core_packages_do_not_import_the_layers_above(where: str) -> None:
    target = ROOT.parent / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    forbidden = LAYERS[where]
    offending = {
        f"{path.relative_to(ROOT.parent)}: {module}"
        for path in files
        for module in imported_modules(path.read_text(encoding="utf-8"), package_of(path))
        if any(module == name or module.startswith(name + ".") for name in forbidden)
    }
    assert not offending, sorted(offending)


def test_layering_check_sees_every_import_form() -> None:
    source = "\n".join(
        ["import stvcli.shapes.tasks", "def f():", "    from stvcli import stages", "    from .loading import x", "    from .. import shapes"]
    )
    modules = imported_modules(source, "stvcli.data")
    assert {"stvcli.shapes.tasks", "stvcli.stages", "stvcli.data.loading", "stvcli.shapes"} <= modules
    assert package_of(ROOT / "data" / "tasks.py") == "stvcli.data" and package_of(ROOT / "distributed.py") == "stvcli"
