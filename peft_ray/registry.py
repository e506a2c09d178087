"""A tiny name -> object registry that refuses duplicates (as HF PEFT's does), and finds what
installed packages add through an entry-point group (as pytest finds its plugins)."""

from __future__ import annotations

import sys
from typing import Callable, Dict, Generic, Optional, TypeVar

from peft_ray.errors import SpecError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a public name (``method.name``, ``task.type``) to its implementation.

    ``group``: the entry-point group through which an installed package adds entries, e.g.
    ``[project.entry-points."peft_ray.tasks"] regression = "mypkg.task:TASK"``: the name is the
    job's value and the object is the entry (its own ``name`` must be that name). They are found
    on the first lookup, not on import, and only installed packages are read: a job or adapter
    file names an entry, it never says where code lives."""

    def __init__(self, kind: str, field: str, group: Optional[str] = None):
        self.kind = kind      # e.g. "PEFT method"
        self.field = field    # the job-spec field that names an entry, for errors
        self.group = group
        self._items: Dict[str, T] = {}
        self._broken: Dict[str, str] = {}   # entry-point name -> why it did not load
        self._found = group is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        self._find_installed()
        if name in self._broken:
            raise SpecError(f"{self.field}: {self.kind} '{name}' comes from an installed package that failed to "
                            f"load: {self._broken[name]}. Fix or reinstall that package")
        if name not in self._items:
            raise SpecError(
                f"{self.field}: unknown {self.kind} '{name}'{suggest(name, self._items)}. "
                f"Allowed: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        self._find_installed()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._find_installed()
        return name in self._items

    def _find_installed(self) -> None:
        """Register each entry of `group` once, as the first lookup asks. One that fails to load
        (an import error, another object or name) is said once and refused where a job names it,
        and one that takes a name already registered is said and left out: every other entry,
        the built-in ones first, stays as it was."""
        if self._found:
            return
        self._found = True    # before loading: a plugin's import may look entries up itself
        from importlib.metadata import entry_points

        said = []
        for ep in entry_points(group=self.group):
            where = f"entry point '{ep.name} = {ep.value}' (group {self.group})"
            try:
                obj = ep.load()
            except Exception as e:    # any error of foreign code: said, and that entry alone refused
                if ep.name not in self._items:
                    self._broken[ep.name] = f"{where}: {type(e).__name__}: {e}"
                continue
            if ep.name in self._items:    # a built-in's name, unless the plugin's import registered it itself
                if self._items[ep.name] is not obj:
                    said.append(f"{where}: '{ep.name}' is already a {self.kind} here; left out")
                continue
            if getattr(obj, "name", None) != ep.name:
                self._broken[ep.name] = (f"{where} gives a {type(obj).__name__} named "
                                         f"{getattr(obj, 'name', None)!r}, not a {self.kind} named '{ep.name}'")
            else:
                self._items.setdefault(ep.name, obj)     # its own import may have registered it already
        if _in_ray_actor():    # a Train worker or Tune trial: its driver read the same entries and said so
            return
        for why in said + list(self._broken.values()):
            print(f"[peft-ray] warning: {why}", file=sys.stderr)


def _in_ray_actor() -> bool:
    """Whether this process is a Ray actor (every Ray Train worker and Tune trial is one). Ray is
    only asked where this process has imported it already."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().get_actor_id() is not None
