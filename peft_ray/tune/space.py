"""The search space: candidate templates/verbalizers/methods/values -> trial job specs.

A trial is an *assignment*: ``{"template": i, "verbalizer": j, "train.lr": 0.01, ...}``
(indices into the candidate lists, so names stay short and stable). ``SearchSpace.trial_raw``
turns it into a raw job dict that ``peft_ray.spec.validate_spec`` checks like any job.

Fail fast: ``check_each_candidate`` validates every candidate on its own (so an error names
``tune.template.text[3]`` or ``tune.space.train.lr[1]``), then ``check_trials`` every trial the
search will run (grid/random: the trials are drawn here, before Ray starts; optuna: every
combination of the discrete values with each range at both ends).
"""

from __future__ import annotations

import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from peft_ray.errors import JobError, SpecError, suggest
from peft_ray.spec import JobSpec, dump_spec, validate_spec
from peft_ray.spec.load import CODE_RUNNING, validate_method
from peft_ray.spec.tune import Domain, TuneSpec
from peft_ray.tasks import get_task

# Sections a trial may change. data/task/output stay fixed: trials are compared on one task.
SEARCHABLE = ("model", "train", "scaling", "deepspeed", "method")
MAX_COMBINATIONS = 4096  # optuna pre-check: the first 4096 discrete combinations (~4 s to validate)


@dataclass
class SearchSpace:
    base: Dict[str, Any]                      # the resolved job (dump_spec), without tune
    templates: List[str]
    verbalizers: List[Optional[Dict[str, Any]]]
    dims: Dict[str, Domain]                   # "train.lr" -> domain (method.name included)
    method_bases: Dict[str, Dict[str, Any]]   # method name -> its base section
    template_ids: List[int] = field(default_factory=list)  # templates still in play (pre-screen)
    # A trained classification head never reads the verbalizer (only task.head: verbalizer
    # scoring does), so trials that differ only in it would train the same model twice; then
    # each template trains once, with the verbalizer the pre-screen liked best (else the first).
    verbalizer_trains: bool = True
    verbalizer_for: Dict[int, int] = field(default_factory=dict)  # template id -> verbalizer id
    # Whether the pre-screen runs (tune.prescreen, and more templates than it keeps or verbalizers a
    # trained head would not tell apart): it reads the label words zero-shot, so they matter to the
    # search even where the trials' trained head never reads them
    prescreen: bool = False

    @classmethod
    def from_spec(cls, spec: JobSpec) -> "SearchSpace":
        t: TuneSpec = spec.tune or TuneSpec()
        base = dump_spec(spec)
        base.pop("tune", None)
        for key in ("holdout_seed", "shots_seed"):   # a searched train.seed must not change the rows
            if base["data"].get(key) is None:        # trials train on and are ranked by
                base["data"][key] = spec.train.seed
        # A trial's best step, early stopping and "(best)" lines follow the metric the search ranks
        # and exports by, so best_job.yaml's re-run keeps the adapter the search exported
        # (check_metric refuses a train.metric_for_best that says otherwise).
        base["train"]["metric_for_best"] = t.metric or base["train"].get("metric_for_best")
        base["train"]["greater_is_better"] = t.mode == "max" if t.mode else base["train"].get("greater_is_better")
        bases = {name: {**fields, "name": name} for name, fields in t.methods.items()}
        bases[spec.method.name] = base["method"]
        templates = list(t.template.text or [spec.template.text])
        verbs = list(t.template.verbalizer or [spec.template.verbalizer])
        trains = get_task(spec.task.type).reads_verbalizer(spec.task)
        screens = t.prescreen and (len(templates) > t.prescreen_top_k or (len(verbs) > 1 and not trains))
        return cls(base, templates, verbs, dict(t.space), bases, list(range(len(templates))),
                   verbalizer_trains=trains, prescreen=screens)

    def verbalizer_of(self, assignment: Dict[str, Any]) -> int:
        if "verbalizer" in assignment:
            return assignment["verbalizer"]
        return self.verbalizer_for.get(assignment.get("template", 0), 0)

    def method_names(self) -> List[str]:
        d = self.dims.get("method.name")
        return [str(v) for v in d.values] if d else [self.base["method"]["name"]]

    def trial_raw(self, assignment: Dict[str, Any]) -> Dict[str, Any]:
        """The raw job dict of one trial (validate it with validate_spec)."""
        import copy

        raw = copy.deepcopy(self.base)
        raw["template"]["text"] = self.templates[assignment.get("template", 0)]
        raw["template"]["verbalizer"] = self.verbalizers[self.verbalizer_of(assignment)]
        if self.prescreen and not self.verbalizer_trains:
            # The pre-screen has used the label words; the trial (and best_job.yaml) trains a head that
            # never reads them, and keeping them made every trial note "template.verbalizer is not read"
            raw["template"]["verbalizer"] = None
        name = assignment.get("method.name", raw["method"]["name"])
        raw["method"] = copy.deepcopy(self.method_bases.get(name, {"name": name}))
        method_fields = _method_fields(name)
        for key, value in assignment.items():
            section, _, fld = key.partition(".")
            if not fld or key == "method.name":
                continue
            if section == "method" and fld not in method_fields:
                continue  # e.g. method.r on a prompt_tuning trial: that method has no such knob
            raw.setdefault(section, {})[fld] = value
        return raw

    def applicable(self, assignment: Dict[str, Any]) -> Dict[str, Any]:
        """The assignment without method knobs its method does not have."""
        fields = _method_fields(assignment.get("method.name", self.base["method"]["name"]))
        return {k: v for k, v in assignment.items()
                if not k.startswith("method.") or k == "method.name" or k.partition(".")[2] in fields}

    def describe(self, assignment: Dict[str, Any]) -> Dict[str, Any]:
        """Leaderboard view of an assignment: template text, verbalizer, the other parameters."""
        params = {k: v for k, v in self.applicable(assignment).items() if k not in ("template", "verbalizer")}
        return {"template": self.templates[assignment.get("template", 0)],
                "verbalizer": self.verbalizers[self.verbalizer_of(assignment)], "params": params}


def _method_fields(name: str) -> Dict[str, Any]:
    from peft_ray.methods import get_method

    return dict(get_method(name).config_cls.model_fields)


def _field_annotation(key: str, methods: List[str]):
    """The annotation of `section.field` (for methods: of the first method that has it), or None."""
    section, _, fld = key.partition(".")
    if section == "method":
        for m in methods:
            f = _method_fields(m).get(fld)
            if f is not None:
                return f.annotation
        return None
    sec = JobSpec.model_fields.get(section)
    f = sec.annotation.model_fields.get(fld) if sec is not None else None
    return f.annotation if f is not None else None


def _types(annotation) -> set:
    return set(typing.get_args(annotation)) or {annotation}  # Optional[int] -> {int, None}


def is_int_field(annotation) -> bool:
    return int in _types(annotation) and float not in _types(annotation)


def is_numeric_field(annotation) -> bool:
    return bool({int, float} & _types(annotation))


def check_keys(space: SearchSpace) -> None:
    """Every space key names a real, searchable field; method.name values are registered."""
    from peft_ray.methods import METHODS

    if "method.name" in space.dims:
        for i, m in enumerate(space.dims["method.name"].values):
            if str(m) not in METHODS:
                raise SpecError(f"tune.space.method.name[{i}]: unknown method '{m}'"
                                f"{suggest(str(m), METHODS.names())}. Registered: {', '.join(METHODS.names())}")
    for name in space.method_bases:
        if name not in METHODS:
            raise SpecError(f"tune.methods.{name}: unknown method{suggest(name, METHODS.names())}")
    methods = space.method_names()
    for key, dom in space.dims.items():
        section, _, fld = key.partition(".")
        if section not in SEARCHABLE:
            raise SpecError(f"tune.space.{key}: section '{section}' cannot be searched (trials share one "
                            f"data set, task and output); searchable: {', '.join(SEARCHABLE)}")
        if section == "model" and fld in CODE_RUNNING:
            raise SpecError(f"tune.space.{key}: cannot be searched: it lets the model run code, which only the "
                            f"command line turns on (model.{fld}=true), for every trial alike")
        if key == "scaling.address":   # every trial runs on the cluster the search joined
            raise SpecError(f"tune.space.{key}: cannot be searched: the trials run on the cluster the search "
                            "joins, which only the command line picks (scaling.address=... or RAY_ADDRESS)")
        ann = _field_annotation(key, methods)
        if ann is None and key != "method.name":
            known = (set().union(*(_method_fields(m) for m in methods)) if section == "method"
                     else set(JobSpec.model_fields[section].annotation.model_fields))
            raise SpecError(f"tune.space.{key}: no field '{fld}' in {section}"
                            f"{suggest(fld, known)} (methods searched: {', '.join(methods)})")
        if dom.continuous and ann is not None and not is_numeric_field(ann):
            raise SpecError(f"tune.space.{key}: {dom.kind} needs a numeric field; use choice or grid")


def check_method_bases(spec: JobSpec, resume: bool = False) -> None:
    """Each tune.methods entry is a valid section of the method its key names, checked and named
    under its own path. The job's own method takes its fields from `method:` (SearchSpace.from_spec),
    so an entry for it would be ignored: a new search refuses it (a --resume keeps the old reading)."""
    own = spec.method.name
    for name, fields in spec.tune.methods.items():
        if str(fields.get("name", name)) != name:
            raise SpecError(f"tune.methods.{name}.name: {fields['name']} differs from its key; the key names "
                            "the method, so leave name out")
        if name == own:
            if not resume:
                raise SpecError(f"tune.methods.{name}: {name} is the job's own method, whose fields come from "
                                f"the method section; set them there (or search them in tune.space as "
                                f"method.<field>)")
            continue
        # Whole, as check_each_candidate then checks each candidate on the base (a searched field does
        # not complete a base: every candidate must stand alone), so the fault is named where it is.
        validate_method({**fields, "name": name}, f"tune.methods.{name}.")


def check_metric(spec: JobSpec) -> None:
    """tune.metric is one the job's task reports (Task.metrics): any task can be searched."""
    task = get_task(spec.task.type)
    if spec.tune.prescreen and not task.prescreens:
        raise SpecError(f"tune.prescreen: the pre-screen ranks templates by zero-shot label-word scores, which a "
                        f"{spec.task.type} task has none of; set tune.prescreen: false")
    task.check_metric(spec.task, spec.tune.metric, "tune.metric")


def check_metric_for_best(spec: JobSpec) -> None:
    """A new search's trials rank their own steps by tune.metric (SearchSpace.from_spec): a job that
    asks otherwise is refused. (`--resume` of a search started before that rule skips this: its
    job may not change, and its trials continue by tune.metric.)"""
    t, own = spec.tune, spec.train
    if (own.metric_for_best not in (None, t.metric)
            or (own.greater_is_better is not None and own.greater_is_better != (t.mode == "max"))):
        mine = ", ".join(f"train.{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in (("metric_for_best", own.metric_for_best),
                                                         ("greater_is_better", own.greater_is_better)) if v is not None)
        raise SpecError(f"{mine}, but tune.metric is {t.metric} ({t.mode}). A search ranks trials and exports "
                        "their adapters by tune.metric, and each trial's best step and early stopping follow it "
                        "too; leave train.metric_for_best and train.greater_is_better out, or set tune.metric "
                        "(and tune.mode) to match them")


def _validated(space: SearchSpace, assignment: Dict[str, Any], where: str) -> JobSpec:
    try:
        spec = validate_spec(space.trial_raw(assignment))
    except JobError as e:
        raise SpecError(f"{where}: {e}") from None
    check_trial_trust(space, spec, where)
    return spec


def check_trial_trust(space: SearchSpace, spec: JobSpec, where: str) -> None:
    """A trial trusts what the search's command line trusted, no more (load.check_file_trust for a
    trial): its assignment is data (search.json on --resume), so it never turns on a field that runs
    code nor picks another cluster. check_keys keeps these out of the space; this holds whatever
    the assignment holds."""
    for fld in CODE_RUNNING:
        if getattr(spec.model, fld) and not space.base["model"][fld]:
            raise SpecError(f"{where}: model.{fld}: true, which only the command line turns on "
                            f"(model.{fld}=true), for every trial alike")
    if spec.scaling.address != space.base["scaling"]["address"]:
        raise SpecError(f"{where}: scaling.address differs from the search's; the trials run on the cluster "
                        "the search joins, which only the command line picks (scaling.address=... or RAY_ADDRESS)")


def check_each_candidate(space: SearchSpace) -> None:
    """Each candidate alone on the base job, so the error names the candidate's own path. A
    template's check takes the first verbalizer (and a verbalizer's the first template): a fault of
    that partner's own field is named as the partner's."""
    for i in space.template_ids:
        try:
            _validated(space, {"template": i}, f"tune.template.text[{i}]")
        except SpecError as e:
            first = f"tune.template.text[{i}]: template.verbalizer"
            if space.verbalizers and str(e).startswith(first):
                raise SpecError("tune.template.verbalizer[0]: template.verbalizer" + str(e)[len(first):]) from None
            raise
    for j in range(len(space.verbalizers)):
        _validated(space, {"verbalizer": j}, f"tune.template.verbalizer[{j}]")
    for key, dom in space.dims.items():
        for k, v in enumerate(dom.values):
            where = f"tune.space.{key}" + (f"[{k}]" if not dom.continuous else f" ({'low' if k == 0 else 'high'})")
            _validated(space, {key: v}, where)


def describe_assignment(a: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in a.items())


def check_trials(space: SearchSpace, trials: List[Dict[str, Any]]) -> List[JobSpec]:
    """Every trial the search will run, as a full job spec."""
    return [_validated(space, a, f"tune: trial candidate {n} ({describe_assignment(a)})")
            for n, a in enumerate(trials)]


# ---- drawing the trials (grid / random) -------------------------------------------------

def _sampler(dom: Domain, is_int: bool, rng: np.random.Generator) -> Callable[[], Any]:
    lo, hi = (dom.bounds + [0, 0])[:2]
    if dom.kind == "uniform":
        return (lambda: int(rng.integers(int(lo), int(hi) + 1))) if is_int else (lambda: float(rng.uniform(lo, hi)))
    if dom.kind == "loguniform":
        draw = lambda: float(math.exp(rng.uniform(math.log(lo), math.log(hi))))  # noqa: E731
        return (lambda: int(round(draw()))) if is_int else draw
    values = dom.values
    return lambda: values[int(rng.integers(len(values)))]


def draw_trials(space: SearchSpace, t: TuneSpec) -> List[Dict[str, Any]]:
    """The trials of a grid or random search, drawn with tune.seed (so --resume gets the same).

    grid: templates x verbalizers x every choice/grid value, ranges sampled per point;
    random: grid dimensions enumerated, everything else sampled. Both repeat num_samples times.
    """
    rng = np.random.default_rng(t.seed)
    dims = {"template": Domain(choice=space.template_ids)}
    if space.verbalizer_trains:
        dims["verbalizer"] = Domain(choice=list(range(len(space.verbalizers))))
    dims.update(space.dims)
    enumerate_kinds = ("choice", "grid") if t.search == "grid" else ("grid",)
    grid_keys = [k for k, d in dims.items() if d.kind in enumerate_kinds]
    methods = space.method_names()
    samplers = {k: _sampler(d, is_int_field(_field_annotation(k, methods)), rng)
                for k, d in dims.items() if k not in grid_keys}
    trials = []
    for _ in range(t.num_samples):
        for combo in itertools.product(*(dims[k].values for k in grid_keys)):
            a = dict(zip(grid_keys, combo))
            a.update({k: draw() for k, draw in samplers.items()})
            a.setdefault("verbalizer", space.verbalizer_of(a))
            trials.append(space.applicable({k: a[k] for k in ["template", "verbalizer", *space.dims]}))
    return dedupe(trials)


def dedupe(trials: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Drop repeats (a grid over method.r and method.num_virtual_tokens gives a LoRA trial per
    num_virtual_tokens value, all the same once the knob that LoRA lacks is dropped)."""
    seen, out = set(), []
    for a in trials:
        key = json.dumps(a, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def discrete_combinations(space: SearchSpace) -> List[Dict[str, Any]]:
    """Optuna pre-check: every discrete combination with each range at both ends (capped)."""
    dims = {"template": space.template_ids, "verbalizer": list(range(len(space.verbalizers)))}
    dims.update({k: d.values for k, d in space.dims.items()})
    combos = itertools.product(*dims.values())
    return [dict(zip(dims, c)) for c in itertools.islice(combos, MAX_COMBINATIONS)]
