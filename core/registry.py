"""One small generic registry for everything pluggable (variants, tasks, backends, judges, scorers).

A registry may also take entries from other installed packages through an entry-point group (``plugins``): each
entry point is loaded on the first lookup; one that loads a module registers what that module registers on import,
one that loads an object is added under the entry point's name.
"""
from __future__ import annotations

import difflib
import types
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import UserError, first_line

T = TypeVar("T")


def nearest(name: str, choices) -> str:
    """A ' (did you mean X?)' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Name -> object, with one-line descriptions and a helpful error on unknown names."""

    def __init__(self, kind: str, plugins: str | None = None, plugin_item: Callable[[Any], T] | None = None):
        """``plugins``: an entry-point group other packages add entries through; ``plugin_item`` turns what such an
        entry point loads into an entry (e.g. a class into an instance, or a validation)."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._plugins, self._plugin_item, self._loaded = plugins, plugin_item, plugins is None
        self.origin: dict[str, str] = {}  # name -> the distribution a plugin entry came from

    def load_plugins(self) -> None:
        """Load this registry's entry points once (a broken plugin is a one-line UserError naming it)."""
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self._plugins):
            dist = getattr(ep.dist, "name", None) or "?"
            try:
                obj = ep.load()
                if isinstance(obj, types.ModuleType):
                    continue  # a module registers its own entries on import
                if ep.name in self._items:
                    raise UserError(f"{self.kind} plugin {ep.name!r} ({ep.value}, from package {dist}): a {self.kind} "
                                    f"of that name is already registered")
                item = self._plugin_item(obj) if self._plugin_item else obj
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure of third-party code: one line naming the plugin
                raise UserError(f"{self.kind} plugin {ep.name!r} ({ep.value}, from package {dist}) failed to load: "
                                f"{type(e).__name__}: {first_line(e)}") from None
            self.add(ep.name, item, getattr(item, "description", "") or "")
            self.origin[ep.name] = dist

    def add(self, name: str, obj: T, description: str = "") -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        self._help[name] = description
        return obj

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda obj: self.add(name, obj, description)

    def get(self, name: str) -> T:
        self.load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UserError(f"unknown {self.kind} {name!r}{nearest(name, self._items)}; known: {known}") from None

    def describe(self) -> list[tuple[str, str]]:
        self.load_plugins()
        return [(n, self._help[n]) for n in self._items]

    def __contains__(self, name: str) -> bool:
        self.load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(self._items)

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._items)
