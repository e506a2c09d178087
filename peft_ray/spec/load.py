"""YAML + command-line overrides -> a validated JobSpec, or a SpecError that
names the field (or file and line) and what to do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pydantic
import yaml

from peft_ray.errors import SpecError, suggest
from peft_ray.spec.checks import check_cross_fields
from peft_ray.spec.schema import JobSpec
from peft_ray.storage import check_location

DEFAULT_METHOD = "prompt_tuning"
DEFAULT_TASK = "classification"
# The flat `task:` section of specs saved before each task owned its fields (an adapter's
# peft_ray.json holds one): a field another task owns, at its old default, is dropped.
LEGACY_TASK_DEFAULTS = {"labels": None, "label_column": "label", "head": "auto", "target_column": "target",
                        "tokens_column": "tokens", "tags_column": "ner_tags", "max_target_length": 64,
                        "decoding": {"strategy": "greedy", "max_new_tokens": 32, "num_beams": 4, "temperature": 1.0,
                                     "top_k": 0, "top_p": 1.0, "seed": 0}}
# A job file is a few KB; these limits keep a hostile one (alias bomb, deep nesting) from
# hanging validation or exhausting memory. The default jobs use 0 aliases and depth <= 4.
MAX_YAML_BYTES = 1 << 20
MAX_ALIASES = 20        # a bomb of k levels expands at most (20/k)**k-fold: under 2000 nodes
MAX_DEPTH = 50
MAX_SHOWN = 80          # characters of a bad value quoted in an error message
MAX_MESSAGE = 600       # characters of one field's message
MAX_ERRORS = 10


class _GuardedLoader(yaml.SafeLoader):
    """yaml.SafeLoader with a budget on alias uses and nesting depth."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name); a job file needs none")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        """A key given twice in one mapping is an error naming both lines: PyYAML keeps the last, so a
        second `train:` section silently dropped the first one's epochs, seed and eval_every."""
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue                            # `<<: *base` merges may override, as YAML says
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue                            # an unhashable key: the schema refuses it
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.YAMLError(f"'{key}' is given twice in one section (lines {seen[key]} and {line}); "
                                         "YAML would keep only the last: merge them into one")
                seen[key] = line
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        """An integer of at most 64 bits: 0x followed by 5,000 digits parses (no digit limit for
        hex), then made every error message that quotes it raise in Python's int-to-text limit.
        YAML 1.1's octal (010 is 8) and base-60 (1:30 is 90) readings are refused: nobody means them."""
        _refuse_yaml11_number(node)
        value = super().construct_yaml_int(node)
        if value.bit_length() > 64:
            raise yaml.YAMLError(f"an integer of {value.bit_length():,} bits at line {node.start_mark.line + 1}; "
                                 "write a number a job can use")
        return value


    def construct_yaml_float(self, node):
        _refuse_yaml11_number(node)
        return super().construct_yaml_float(node)


class Yaml11Number(yaml.YAMLError):
    """A number YAML 1.1 reads in octal or base 60 (010 is 8, 1:30 is 90)."""


def _refuse_yaml11_number(node) -> None:
    text = str(node.value).replace("_", "").lstrip("+-")
    if ":" in text or (len(text) > 1 and text[0] == "0" and text.isdigit()):
        reading = "base 60" if ":" in text else "octal"
        raise Yaml11Number(f"'{node.value}' at line {node.start_mark.line + 1} is a number in {reading} to "
                             "YAML 1.1; write it without leading zeros or colons, or quote it for text")


_GuardedLoader.add_constructor("tag:yaml.org,2002:int", _GuardedLoader.construct_yaml_int)
_GuardedLoader.add_constructor("tag:yaml.org,2002:float", _GuardedLoader.construct_yaml_float)


def _check_flow_depth(text: str) -> None:
    """Refuse deep [ { nesting before PyYAML's scanner sees it: the scanner is quadratic in
    flow depth (100k levels take hours), before the composer's depth guard could act."""
    import re

    depth = 0
    for m in re.finditer(r"[\[\]{}]", text):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels")


def safe_yaml(text: str) -> Any:
    """yaml.safe_load within the budget; raises yaml.YAMLError."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_YAML_BYTES >> 20} MiB; a job file is a few KB")
    _check_flow_depth(text)
    loader = _GuardedLoader(text)
    try:
        return loader.get_single_data()
    except ValueError as e:   # an integer of over 4,300 digits: Python refuses to convert it
        raise yaml.YAMLError(f"a number is too long ({str(e).split(';')[0]}); write a number a job can use") from None
    finally:
        loader.dispose()


def recorded_mapping(job_file) -> Dict[str, Any]:
    """The mapping a run or search folder's job.yaml holds ({} where it holds none). The folder may be
    shared, so the file is data: a regular file of job-file size (a FIFO would block, /dev/zero never
    end), parsed within the loader's budget. `job_file`: a storage.Location."""
    text = job_file.read_small_text(MAX_YAML_BYTES)
    try:
        old = safe_yaml(text) if text is not None else None
    except yaml.YAMLError:
        return {}
    return old if isinstance(old, dict) else {}


def shown(value: Any) -> str:
    """A short repr of a value for an error message, however big or deep the value is."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxstring, r.maxother = 3, 4, 4, MAX_SHOWN, MAX_SHOWN
    text = value if isinstance(value, str) else r.repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def read_yaml(path: str | Path) -> Dict[str, Any]:
    """Parse a job file; malformed YAML names the file, line and column."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"job file '{path}' does not exist")
    try:
        raw = safe_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e)
        tab = "; YAML indents with spaces, never tabs" if "'\\t'" in problem else ""
        raise SpecError(f"{path}: malformed YAML{where}: {problem}{tab}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text; save the job file as UTF-8") from None
    if raw is None:   # nothing but comments: every default would be a job nobody wrote
        raise SpecError(f"{path}: the job file is empty (or only comments); start from one in jobs/, "
                        "e.g. jobs/default.yaml")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the top level must be a mapping of sections (model:, task:, ...)")
    return raw


SHORTHANDS = {"method": "name"}   # a section a job may give as its name alone
# Sections whose fields belong to the kind their key names: overriding the kind starts the section anew.
KINDS = {"method": "name", "task": "type"}
DEFAULT_KIND = {"method": DEFAULT_METHOD, "task": DEFAULT_TASK}   # a section that names no kind is of this one


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML (so 3e-2, true, [a, b] work)."""
    out = copy.deepcopy(raw)
    given: Dict[str, str] = {}   # key -> the override that set it: two different values are a slip
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"override '{item}' must look like section.key=value, e.g. train.max_steps=20")
        key, _, text = item.partition("=")
        if not key.strip():
            raise SpecError(f"override '{shown(item)}' has no key before '='; write section.key=value, "
                            "e.g. train.max_steps=20")
        first = given.setdefault(key.strip(), item)
        if first.partition("=")[2] != text:
            raise SpecError(f"override {key.strip()} is given twice ('{shown(first)}' and '{shown(item)}'); "
                            "give it once")
        try:
            value = safe_yaml(text) if text != "" else ""
        except Yaml11Number as e:   # said as in a job file: 010 is no more 10 here than there
            raise SpecError(f"override '{shown(item)}': {str(e).replace(' at line 1', '')}") from None
        except yaml.YAMLError:
            value = text
        if key.strip().startswith("template.") and isinstance(value, str) and ("\\n" in value or "\\t" in value):
            # plain YAML keeps a backslash: the job file's "...\n..." is a newline, this is not
            raise SpecError(f"override '{shown(item)}': '\\n' and '\\t' stay two characters in an unquoted value; "
                            f"for a newline or tab, quote it for YAML inside shell quotes: "
                            f"'{key}=\"{shown(text)}\"'")
        if isinstance(value, dict) and value and all(v is None for v in value.values()):
            raise SpecError(f"override '{shown(item)}': YAML reads '{shown(text)}' as a mapping, not text; quote "
                            f"it for YAML inside shell quotes: '{key}=\"{shown(text)}\"'")
        node = out
        parts = key.strip().split(".")
        if parts[:2] == ["tune", "space"] and len(parts) >= 4:   # a space key is itself dotted: train.lr
            parts = [*parts[:2], ".".join(parts[2:4]), *parts[4:]]
        if len(parts) > 1 and isinstance(out.get(parts[0]), str) and parts[0] in SHORTHANDS:
            out[parts[0]] = {SHORTHANDS[parts[0]]: out[parts[0]]}   # `method: lora`, then method.r=16
        starts_anew = (len(parts) == 2 and KINDS.get(parts[0]) == parts[1] and isinstance(out.get(parts[0]), dict)
                       and out[parts[0]].get(parts[1], DEFAULT_KIND[parts[0]]) != value) or \
            (len(parts) == 1 and parts[0] in KINDS)
        if starts_anew:
            # method.name=lora over a prompt_tuning section: its num_virtual_tokens would be "unknown
            # keys" of LoRA. Like method=lora, the section starts anew; later overrides add to it,
            # and an earlier one would be lost without a word: refused, saying the order.
            earlier = [k for k in given if k.startswith(f"{parts[0]}.") and k != key.strip()]
            if earlier:
                raise SpecError(f"override '{shown(given[earlier[0]])}' comes before '{shown(item)}', which starts "
                                f"the {parts[0]} section anew, so it would be lost; put '{shown(item)}' first")
            if len(parts) == 2:
                out[parts[0]] = {}
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise SpecError(f"override '{key}': '{part}' is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _fields_at(model: type[pydantic.BaseModel], loc: Iterable[Any]) -> List[str]:
    """The allowed keys of the section at `loc`, for 'did you mean' suggestions."""
    cls: Any = model
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        cls = field.annotation
    return list(getattr(cls, "model_fields", {}))


def _format_errors(err: pydantic.ValidationError, model: type, prefix: str = "") -> str:
    lines = []
    errors = err.errors()
    for e in errors[:MAX_ERRORS]:
        loc = [str(x) for x in e["loc"]]
        path = prefix + ".".join(loc) if loc else prefix.rstrip(".")   # a model-level check: the section
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(model, e["loc"][:-1])
            lines.append(f"{path}: unknown key{suggest(loc[-1], allowed)}. "
                         f"Allowed here: {', '.join(allowed)}")
        else:
            got = e.get("input")
            msg = e["msg"].removeprefix("Value error, ")   # our validators' own words, without pydantic's label
            quoted = "" if isinstance(got, dict) or "got " in msg else f" (got {shown(got)})"   # said once
            # a validator's own sentence is kept whole (cut at 80 it lost its advice); only a message
            # that quotes a huge value is cut, after MAX_MESSAGE characters
            text = f"{msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE] + '...'}{quoted}"
            lines.append(f"{path}: {text}" if path else text)   # a job-level check names its fields itself
    if len(errors) > MAX_ERRORS:
        lines.append(f"... and {len(errors) - MAX_ERRORS} more")
    return "\n".join(lines)


def validate_method(raw_method: Any, prefix: str = "method."):
    """One method section through its registered config; errors are named under `prefix`
    (tune.methods.<name>. for a searched method's own fields)."""
    from peft_ray.methods import get_method

    if raw_method is None:
        raw_method = {"name": DEFAULT_METHOD}
    if isinstance(raw_method, str):
        raw_method = {"name": raw_method}
    if not isinstance(raw_method, dict):
        raise SpecError("method: must be a mapping with a 'name' key, e.g. {name: prompt_tuning}")
    raw_method = {"name": DEFAULT_METHOD, **raw_method}
    spec = get_method(str(raw_method["name"]))
    try:
        return spec.config_cls.model_validate(raw_method)
    except pydantic.ValidationError as e:
        raise SpecError(_format_errors(e, spec.config_cls, prefix)) from None


def _validate_task(raw_task: Any):
    """(the task, its validated config) through the task registry."""
    from peft_ray.tasks import get_task

    if raw_task is None:
        raw_task = {}
    if not isinstance(raw_task, dict):
        raise SpecError("task: must be a mapping with a 'type' key, e.g. {type: classification, labels: [a, b]}")
    raw_task = {"type": DEFAULT_TASK, **raw_task}
    task = get_task(str(raw_task["type"]))
    own = task.config_cls.model_fields
    raw_task = {k: v for k, v in raw_task.items() if k in own or LEGACY_TASK_DEFAULTS.get(k, ...) != v}
    try:
        return task, task.config_cls.model_validate(raw_task)
    except pydantic.ValidationError as e:
        raise SpecError(_format_errors(e, task.config_cls, "task.")) from None


def validate_spec(raw: Dict[str, Any]) -> JobSpec:
    """Turn a raw dict into a JobSpec; every error names its field path."""
    raw = dict(raw)
    errors = []                         # every section's errors at once, not one section per round
    try:
        method = validate_method(raw.pop("method", None))
    except SpecError as e:
        errors.append(str(e))
    try:
        task, task_cfg = _validate_task(raw.pop("task", None))
    except SpecError as e:
        errors.append(str(e))
    try:
        spec = JobSpec.model_validate(raw)
    except pydantic.ValidationError as e:
        errors.append(_format_errors(e, JobSpec))
    if errors:
        raise SpecError("\n".join(errors))
    spec.method, spec.task = method, task_cfg
    if spec.tune is not None:   # the task's primary metric (any task can be tuned), in the task's direction
        spec.tune.metric = spec.tune.metric or task.primary_metric
        spec.tune.mode = spec.tune.mode or ("min" if task.lower_is_better(spec.tune.metric) else "max")
    spec.output.dir = spec.output.dir.replace("{name}", spec.name)
    try:
        check_location(spec.output.dir)
    except ValueError as e:
        raise SpecError(f"output.dir: {e} (got {spec.output.dir!r})") from None
    check_cross_fields(spec, task)
    return spec


def load_spec(path: Optional[str | Path], overrides: Sequence[str] = (), resolve_paths: bool = True) -> JobSpec:
    """The validated job; relative paths made absolute unless `resolve_paths` is False (submit
    checks what the user wrote, then resolves)."""
    raw = read_yaml(path) if path else {}
    try:
        spec = validate_spec(apply_overrides(raw, overrides))
    except SpecError as e:
        raise quoting_hint(e, overrides) from None
    check_file_trust(spec, overrides, path)
    return absolute_paths(spec) if resolve_paths else spec


# Model fields that let a model folder run code: its own Python files, or pickled weights.
CODE_RUNNING = {"trust_remote_code": "run the Python files in its folder",
                "allow_pickle": "load pickled weights (unpickling can run any code)"}


def check_file_trust(spec: JobSpec, overrides: Sequence[str], path) -> None:
    """A job file is data that people share, so it cannot turn on a field that runs code nor pick
    the cluster a job joins; only the command line can (`model.trust_remote_code=true`,
    `scaling.address=HEAD:6379`), as only a flag can for a shared adapter (inference.apply_trust).
    Overrides are what the user typed for this command."""
    typed = apply_overrides({}, overrides)
    model = typed.get("model")
    for field, what in CODE_RUNNING.items():
        if getattr(spec.model, field) and not (isinstance(model, dict) and model.get(field) not in (None, False)):
            raise SpecError(f"{path}: model.{field}: true would let '{spec.model.name_or_path}' {what}, and a "
                            f"job file never turns that on (job files are shared like data). If you trust that "
                            f"model, turn it on for this command: add model.{field}=true to the command line")
    scaling = typed.get("scaling")
    check_file_address(spec.scaling.address, isinstance(scaling, dict) and "address" in scaling, path)


# Addresses that never leave this machine, so a job file may name them: `local` starts a new Ray
# here, and `auto` joins the cluster that `ray start` recorded in Ray's temp dir on this machine
# (what a bare ray.init() joins, and what train's note and docs/cluster.md suggest; on a machine
# shared with other users that cluster may be theirs, for RAY_ADDRESS=auto alike). Any host:port,
# ray:// or URL may be another's machine, loopback included (any local user can listen on a port).
ADDRESSES_ON_THIS_MACHINE = ("auto", "local")


def check_file_address(address: Optional[str], typed: bool, path) -> None:
    """A job file cannot pick the Ray cluster a job joins: joining sends the data, the model and
    the adapter there, and Ray's protocols unpickle what the cluster sends back, so a hostile head
    runs code here. Only this command's `scaling.address=...` (`typed`) or $RAY_ADDRESS can."""
    if not address or typed or address in ADDRESSES_ON_THIS_MACHINE:
        return
    from peft_ray.security import redact_text

    shown_address = redact_text(address)
    raise SpecError(f"{path}: scaling.address: '{shown_address}' would send this job (data, model, adapter) to "
                    f"the Ray cluster there and run what that cluster sends back, and a job file never picks a "
                    f"cluster (job files are shared like data). If you trust that cluster, name it for this "
                    f"command: add scaling.address={shown_address} to the command line (or remove scaling.address "
                    f"from the file and set RAY_ADDRESS)")


def quoting_hint(error: SpecError, overrides: Sequence[str]) -> SpecError:
    """A text field given as `key=Review: {text}`: YAML reads the value as a mapping, and the bare
    "should be a valid string" says nothing of why. Name the override and how to quote it."""
    for item in overrides:
        key, _, text = item.partition("=")
        if f"{key.strip()}: Input should be a valid string" in str(error) and text[:1] not in "\"'":
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = {}
            what = ("true/false" if isinstance(value, bool) else "a number" if isinstance(value, (int, float))
                    else "a mapping or list (a ': ' or braces)")
            return SpecError(f"override '{shown(item)}': YAML reads '{shown(text)}' as {what}, not text; quote it "
                             f"for YAML inside shell quotes: '{key.strip()}=\"{shown(text)}\"'")
    return error


def absolute_paths(spec: JobSpec) -> JobSpec:
    """Resolve relative paths against the directory the command runs in, once, at the CLI
    boundary: Ray workers and Tune trials run in other working directories."""
    def fix(value: Optional[str]) -> Optional[str]:
        if not value or "://" in value or value.startswith("builtin:"):
            return value
        p = Path(value).expanduser()
        return str(p.resolve()) if not p.is_absolute() else value

    if spec.data.root is None:    # the split names are the paths themselves
        spec.data.train = fix(spec.data.train)
        spec.data.validation = fix(spec.data.validation)
    spec.data.root = fix(spec.data.root)
    spec.output.dir = fix(spec.output.dir)
    if Path(spec.model.name_or_path).expanduser().exists():
        spec.model.name_or_path = fix(spec.model.name_or_path)
    if getattr(spec.method, "init_from", None):
        spec.method.init_from = fix(spec.method.init_from)
    return spec


def dump_spec(spec: JobSpec) -> Dict[str, Any]:
    """A plain dict of the resolved spec (for Ray workers; use `saved_spec` for files)."""
    out = spec.model_dump(mode="json", exclude={"method", "task"})
    out["method"] = spec.method.model_dump(mode="json")
    out["task"] = spec.task.model_dump(mode="json")
    return out


def saved_spec(spec: JobSpec) -> Dict[str, Any]:
    """The resolved spec as written to disk (job.yaml, peft_ray.json): secrets redacted."""
    from peft_ray.security import redact

    return redact(dump_spec(spec))
