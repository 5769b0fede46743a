"""A small name -> builder registry shared by models, datasets, optimizers, schedules and objectives.

One mechanism everywhere (as in timm's model registry): ``register`` is a
decorator, ``get`` raises a :class:`CnnlabError` that lists the close matches
when a name is unknown, and :func:`check_options` / :meth:`Registry.build` check
keyword options against the builder's signature, so a misspelt option is one
clear error naming the option, the builder and what it does accept.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from .errors import CnnlabError, suggest, unknown_names

T = TypeVar("T")


def accepted_options(fn: Callable, skip: Iterable[str] = ()) -> list[str] | None:
    """The keyword options ``fn`` takes (minus ``skip``), or None when it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    skip = set(skip)
    return [k for k, p in params.items() if k not in skip and p.kind is not p.VAR_POSITIONAL]


def check_options(fn: Callable, options: Iterable[str], what: str, skip: Iterable[str] = (),
                  extra: Iterable[str] = ()) -> None:
    """Raise a :class:`CnnlabError` if ``fn`` (plus the names in ``extra``) does not take every option.

    ``what`` names the thing in the message (``"model 'lenet5'"``); ``skip`` are parameters
    the caller fills itself (``num_classes``, ``params``, ...), not user options.
    """
    accepted = accepted_options(fn, skip)
    if accepted is None:
        return
    accepted += [k for k in extra if k not in accepted]
    bad = [k for k in options if k not in accepted]
    if bad:
        raise CnnlabError(f"{what} has no option {unknown_names(bad, accepted, quote=True)} "
                          f"(its options: {', '.join(accepted) or 'none'})")


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
            hint = suggest(key, self._entries, n=3)
            raise CnnlabError(
                f"unknown {self.kind} {name!r}{'; ' + hint if hint else ''} (available: {', '.join(sorted(self._entries))})"
            )
        return self._entries[key]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def build(self, name: str, *args: Any, skip: Iterable[str] = (), **options: Any) -> Any:
        """Call the registered builder with ``options`` after checking it takes every one of them.

        ``args`` are positional arguments the caller supplies (not user options); a builder that
        still rejects a value (``TypeError``/``ValueError``) becomes one :class:`CnnlabError`.
        """
        builder = self.get(name)
        what = f"{self.kind} {str(name).lower()!r}"
        check_options(builder, options, what, skip=list(skip) + list(inspect.signature(builder).parameters)[:len(args)])
        try:
            return builder(*args, **options)
        except CnnlabError:
            raise
        except (TypeError, ValueError) as e:
            raise CnnlabError(f"{what}: bad options {options}: {e}") from e

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[k] for k in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
