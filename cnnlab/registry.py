"""A small name -> builder registry shared by models, datasets, optimizers and studies.

One mechanism everywhere (as in timm's model registry): ``register`` is a
decorator, ``get`` raises a :class:`CnnlabError` that lists the close matches
when a name is unknown.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import CnnlabError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps a lowercase name to an object plus a one-line description and metadata."""

    def __init__(self, kind: str):
        self.kind = kind  # "model", "dataset", ... used in error messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, description, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "", **meta: Any) -> None:
        key = name.lower()
        if key in self._entries:
            raise RuntimeError(f"{self.kind} {name!r} is registered twice")
        if not description and getattr(obj, "__doc__", None):
            description = obj.__doc__.strip().splitlines()[0]
        self._entries[key] = Entry(key, obj, description, dict(meta))

    def entry(self, name: str) -> Entry[T]:
        key = str(name).lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CnnlabError(
                f"unknown {self.kind} {name!r}{hint} (available: {', '.join(sorted(self._entries))})"
            )
        return self._entries[key]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[k] for k in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
