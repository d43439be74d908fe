"""One registry pattern for everything users pick by name: model families, tasks, data
sources and evaluation methods (after lm-evaluation-harness's ``registry``).

A ``Registry`` maps names to objects. Entries are added with ``@registry.register(name)``
(a decorator) or ``registry.register(name, obj)``; a lookup of an unknown name raises
the registry's one-line error listing every known name. Packages outside the core
(the shapes world, third-party plugins) register through the ``stvcli.plugins`` entry
point group: each entry is a callable run once, before the first lookup, so no core
module needs to import them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar, overload

from stvcli.errors import StvError

T = TypeVar("T")

PLUGIN_GROUP = "stvcli.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Run every ``stvcli.plugins`` entry point once per process (they register entries)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()()


class Registry(Generic[T]):
    """Named objects of one kind. ``what`` names the kind in errors ("task", "method");
    ``hint`` ends the unknown-name error (e.g. "stv tasks lists them")."""

    def __init__(self, what: str, *, error: type[StvError] = StvError, hint: str = "",
                 discover: Callable[[], None] | None = None) -> None:
        self.what = what
        self.error = error
        self.hint = hint
        self._discover = discover
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str, obj: None = None, *, replace: bool = False) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Add ``obj`` under ``name``; without ``obj``, a decorator that adds what it decorates.

        A second entry under one name is a programming error (ValueError) unless ``replace``.
        """

        def add(value: T) -> T:
            if name in self._entries and not replace and self._entries[name] is not value:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def _ready(self) -> None:
        if self._discover is not None:
            self._discover()
        load_plugins()

    def get(self, name: str) -> T:
        """The entry under ``name``; the registry's error (listing the known names) if none."""
        if name not in self._entries:
            self._ready()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            hint = f" ({self.hint})" if self.hint else ""
            raise self.error(f"unknown {self.what} {name!r}; choose one of {known}{hint}") from None

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._ready()
        return name in self._entries

    def names(self) -> list[str]:
        self._ready()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._ready()
        return list(self._entries.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
