"""search.json: the templates in play and the trials drawn, written when a search starts and read
back by `tune --resume`.

The search folder may be shared, so what --resume reads back is data, never a job: it may only
pick among the candidates the job's own `tune:` section offers. A template or verbalizer is an
index into the job's lists, and a trial holds only the space's keys, each value inside its
dimension's domain (a choice's values, a range's bounds). Anything else (a `model.trust_remote_code`
key, a model path the space does not list, a learning rate outside its range) is refused, naming
the file and the key, before any trial starts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List

from peft_ray.errors import CheckpointError
from peft_ray.spec.load import shown
from peft_ray.spec.tune import Domain
from peft_ray.storage import Location
from peft_ray.tune import space as S

SEARCH_STATE = "search.json"
MAX_STATE_BYTES = 16 << 20    # 10,000 drawn trials of 10 keys take about 2 MiB
START_AGAIN = "start the search again with --overwrite (or in a new output.dir)"


def read_state(file: Path, space: S.SearchSpace) -> Dict[str, Any]:
    """search.json's templates in play, their verbalizers and the trials (None: optuna), each checked
    against `space`; a CheckpointError naming the file and the key otherwise."""
    state = _read_json(file)
    template_ids = _template_ids(state.get("template_ids"), space, file)
    verbalizer_for = _verbalizer_for(state.get("verbalizer_for", {}), space, file)
    trials = state.get("trials")
    if trials is not None:
        if not isinstance(trials, list):
            raise CheckpointError(f"{file}: 'trials' must be a list of trials; {START_AGAIN}")
        trials = [checked_trial(a, space, template_ids, f"{file}: trials[{n}]") for n, a in enumerate(trials)]
    return {"template_ids": template_ids, "verbalizer_for": verbalizer_for, "trials": trials}


def _read_json(file: Path) -> Dict[str, Any]:
    """The file's JSON object, read as a regular file of bounded size (a FIFO would block)."""
    text = Location.at(file).read_small_text(MAX_STATE_BYTES)
    if text is None:
        raise CheckpointError(f"{file}: not a regular UTF-8 file of at most {MAX_STATE_BYTES >> 20} MiB; "
                              f"{START_AGAIN}")
    try:
        state = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{file}: not valid JSON; {START_AGAIN}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: must hold a JSON object; {START_AGAIN}")
    return state


def _is_index(value: Any, n: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n


def _template_ids(ids: Any, space: S.SearchSpace, file: Path) -> List[int]:
    n = len(space.templates)
    if not (isinstance(ids, list) and ids and all(_is_index(i, n) for i in ids) and len(set(ids)) == len(ids)):
        raise CheckpointError(f"{file}: 'template_ids' must list distinct indices into the job's {n} template(s) "
                              f"(tune.template.text), got {shown(ids)}; {START_AGAIN}")
    return ids


def _verbalizer_for(pairs: Any, space: S.SearchSpace, file: Path) -> Dict[int, int]:
    """template id -> verbalizer id (JSON keys are strings)."""
    n_t, n_v = len(space.templates), len(space.verbalizers)
    if not isinstance(pairs, dict):
        raise CheckpointError(f"{file}: 'verbalizer_for' must be an object; {START_AGAIN}")
    out = {}
    for key, value in pairs.items():
        t = int(key) if isinstance(key, str) and key.isdigit() else None
        if t is None or not _is_index(t, n_t) or not _is_index(value, n_v):
            raise CheckpointError(f"{file}: verbalizer_for key '{shown(key)}': must map a template index (of "
                                  f"{n_t}) to a verbalizer index (of {n_v}), got {shown(value)}; {START_AGAIN}")
        out[t] = value
    return out


def checked_trial(assignment: Any, space: S.SearchSpace, template_ids: List[int], where: str) -> Dict[str, Any]:
    """One saved trial, if it holds only the space's keys with values inside their domains."""
    if not isinstance(assignment, dict):
        raise CheckpointError(f"{where}: must be an object of search keys; {START_AGAIN}")
    methods = space.method_names()
    for key, value in assignment.items():
        if key == "template":
            ok = value in template_ids and _is_index(value, len(space.templates))
        elif key == "verbalizer":
            ok = _is_index(value, len(space.verbalizers))
        elif key in space.dims:
            ok = in_domain(space.dims[key], value, S.is_int_field(S._field_annotation(key, methods)))
        else:
            raise CheckpointError(f"{where}: key '{shown(key)}' is not searched (tune.space has "
                                  f"{', '.join(space.dims) or 'no keys'}); a saved trial only picks among the "
                                  f"job's own candidates, so this search.json was not written by this search; "
                                  f"{START_AGAIN}")
        if not ok:
            raise CheckpointError(f"{where}: key '{key}': {shown(value)} is not one of the values the job's "
                                  f"search offers there; {START_AGAIN}")
    return assignment


def in_domain(dom: Domain, value: Any, is_int: bool) -> bool:
    """A discrete value equal to one of the domain's (of the same type: JSON `true` is not 1), or a
    number within a range's bounds (an int field: the whole numbers the sampler can round to)."""
    if not dom.continuous:
        return any(type(value) is type(v) and value == v for v in dom.values)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    lo, hi = dom.bounds
    if is_int:
        return isinstance(value, int) and math.floor(lo) <= value <= math.ceil(hi)
    slack = 1e-9 * max(abs(lo), abs(hi))      # exp(log(hi)) may land an ulp above hi
    return lo - slack <= value <= hi + slack

