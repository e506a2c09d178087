"""A tiny name -> object registry that refuses duplicates (as HF PEFT's does)."""

from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

from peft_ray.errors import SpecError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a public name (``method.name``, ``task.type``) to its implementation."""

    def __init__(self, kind: str, field: str):
        self.kind = kind      # e.g. "PEFT method"
        self.field = field    # the job-spec field that names an entry, for errors
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise SpecError(
                f"{self.field}: unknown {self.kind} '{name}'{suggest(name, self._items)}. "
                f"Allowed: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
