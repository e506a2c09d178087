"""Zero-shot pre-screen: score every candidate template with the frozen base model on a
validation sample, before any trial trains, and keep the top k templates.

Two scorers, chosen by what the model has:

- **verbalizer** (a causal LM such as SmolLM2, or a masked LM with a trained MLM head): the
  very code that training and evaluation use. Rows go through the job's own preprocessing
  (``data/preprocess.py``: the template, tokenization, truncation, the score position) and
  are scored by ``tasks/classification/verbalizer.label_scores`` (log of the mean probability of each
  label's words, multi-token words in full for causal LMs). A template is thus ranked under
  exactly the rule it is then trained with.
- **cosine** (an encoder without an LM head, e.g. the packaged sentence-transformer MiniLM):
  for each label, the template is rendered with the row and ``{label}`` replaced by each of the
  label's words (appended when there is no slot); the row is predicted as the label whose
  renderings' mean-pooled embeddings are, on average, closest (cosine) to the embedding of the
  row's own text. A template whose framing plus verbalizer moves the embedding towards the
  sentence's meaning for the right label scores high. It is a proxy: it ranks how well the
  template's wording and words agree with the input under the frozen encoder, not what a soft
  prompt will learn, so keep ``prescreen_top_k`` generous.

Templates are ranked by their best verbalizer's accuracy (ties: mean margin). Runs on the
driver, before Ray starts; cost is a few forward passes per (template, verbalizer) and row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import torch

from peft_ray.rows.labels import has_value
from peft_ray.storage import write_file
from peft_ray.templates import Template, normalize_verbalizer, one_line
from peft_ray.train import terminal

BATCH = 32


@dataclass
class Score:
    template_id: int
    verbalizer_id: int
    accuracy: float
    margin: float        # mean (gold score - best other score): tie-breaker


def sample_rows(spec, n: int) -> List[dict]:
    """Up to n usable rows of the validation split (train if there is none), drawn with train.seed."""
    from peft_ray.data.sources import iter_arrow, resolve_files

    split = spec.data.validation or spec.data.train
    files = resolve_files(spec.data.root, split, "data.validation" if spec.data.validation else "data.train")
    from peft_ray.data.holdout import apply_holdout
    from peft_ray.tasks.pipeline import holdout_seed, needed_columns

    # With validation: null the screen reads the data.validation_fraction hold-out of train, never the
    # training rows themselves.
    side = "validation" if spec.data.holds_out else ""
    rows: List[dict] = []
    for batch in iter_arrow(files, needed_columns(spec)):
        table = apply_holdout(pa.Table.from_batches([batch]), needed_columns(spec), spec.data.validation_fraction,
                              holdout_seed(spec), side)
        rows.extend(r for r in table.to_pylist() if has_value(r.get(spec.task.label_column)))
        if len(rows) >= 20 * n:  # enough to draw a fair sample from, without reading everything
            break
    idx = np.random.default_rng(spec.train.seed).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(idx)]


def gold_ids(spec, rows: Sequence[dict]) -> np.ndarray:
    from peft_ray.rows.labels import label_ids

    return label_ids([r[spec.task.label_column] for r in rows], tuple(spec.task.labels), spec.task.label_column)


def render(template: Template, row: dict, label_text: str) -> str:
    text = template.render(row, label_text) or ""
    return text if template.has_label_slot else f"{text} {label_text}".strip()


class LMScorer:
    """The frozen base LM, loaded once, scoring label words as training does."""

    def __init__(self, spec):
        from peft_ray.inference import InferenceEngine
        from peft_ray.models import check_model_folder, resolve_model_path
        from peft_ray.tasks import get_task

        spec = spec.model_copy(deep=True)
        spec.task.head = "verbalizer"  # the screen scores label words even when training adds a head
        self.spec, self.path = spec, resolve_model_path(spec.model.name_or_path)
        check_model_folder(self.path, spec.model.allow_pickle)
        self.engine = InferenceEngine(get_task(spec.task.type).load_base(spec, self.path), torch.device("cpu"))

    def scores(self, template: str, verbalizer: Dict[str, List[str]], rows: Sequence[dict]):
        """((N, K) label scores, (N,) gold label ids) of the rows the template can render."""
        from dataclasses import replace

        from peft_ray.data.batching import collate
        from peft_ray.data.preprocess import preprocess
        from peft_ray.tasks import get_task
        from peft_ray.tasks.pipeline import make_preprocess_config

        variant = self.spec.model_copy(deep=True)
        variant.template.text, variant.template.verbalizer = template, verbalizer
        variant.data.train_shots = None
        cfg = replace(make_preprocess_config(variant, self.path, "validation"), holdout_fraction=0.0, holdout_side="")
        runtime = get_task(variant.task.type).runtime(variant, self.path)   # training's own scores, head: verbalizer
        pad = self.engine.module.config.pad_token_id or 0
        out, gold = [], []
        built = preprocess(pa.Table.from_pylist(list(rows)), cfg).to_pylist()   # in row order
        with torch.no_grad():
            for i in range(0, len(built), BATCH):
                batch = collate(built[i:i + BATCH], pad)
                out.append(runtime.logits(self.engine, batch).float().cpu())
                gold.append(batch["labels"].numpy())
        return torch.cat(out), np.concatenate(gold)


def lm_scoring(spec) -> Optional[str]:
    """'causal' or 'mlm' when the base model can score label words zero-shot; None otherwise
    (an encoder whose masked-LM head would be freshly initialised: the cosine proxy)."""
    from peft_ray.models import lm_kind, resolve_model_path
    from peft_ray.tasks.classification.config import scoring_for

    path = resolve_model_path(spec.model.name_or_path)
    kind = lm_kind(path, spec.model.trust_remote_code)
    if spec.task.head == "head" or kind == "seq2seq":
        return None
    if kind == "causal":
        return scoring_for("verbalizer", kind)
    return "mlm" if Encoder.has_trained_mlm_head(spec, path) else None


class Encoder:
    """The frozen base encoder, loaded once, for the cosine proxy."""

    def __init__(self, spec):
        from peft_ray.models import check_model_folder, load_tokenizer, resolve_model_path

        self.path = resolve_model_path(spec.model.name_or_path)
        check_model_folder(self.path, spec.model.allow_pickle)
        self.tok = load_tokenizer(self.path, spec.model.trust_remote_code)
        self.max_length = spec.model.max_length
        self.model = self._load(spec)
        self.model.eval()

    def _load(self, spec):
        from transformers import AutoModel

        from peft_ray.hf import NO_HUB, quiet_transformers

        kw = dict(trust_remote_code=spec.model.trust_remote_code,
                  use_safetensors=None if spec.model.allow_pickle else True, **NO_HUB)
        with quiet_transformers():
            return AutoModel.from_pretrained(self.path, **kw)

    @staticmethod
    def has_trained_mlm_head(spec, path: str) -> bool:
        from transformers import AutoConfig, AutoTokenizer

        from peft_ray.hf import OFFLINE
        from peft_ray.models import fresh_mlm_head

        trust = spec.model.trust_remote_code
        cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust, **OFFLINE)
        if not any("MaskedLM" in a for a in (cfg.architectures or [])):
            return False
        if not AutoTokenizer.from_pretrained(path, trust_remote_code=trust, **OFFLINE).mask_token:
            return False
        return fresh_mlm_head(path, trust) is None   # a trained head, not a freshly initialised one

    def batch(self, texts: List[str]):
        return self.tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    @torch.no_grad()
    def embed(self, texts: List[str]) -> torch.Tensor:
        """(N, d) mean-pooled, L2-normalised last hidden states."""
        out = []
        for i in range(0, len(texts), BATCH):
            enc = self.batch(texts[i:i + BATCH])
            h = self.model(**enc).last_hidden_state                      # (B, T, d)
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)          # (B, T, 1)
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))
        return torch.cat(out)


def cosine_label_scores(enc: Encoder, template: Template, verbalizer: Dict[str, List[str]], labels: List[str],
                        rows: Sequence[dict], sentence_emb: Optional[torch.Tensor]) -> torch.Tensor:
    """(N, K) cosine-proxy score of each label for each row (higher: more likely)."""
    cols = []
    for lab in labels:
        sims = [enc.embed([render(template, r, w) for r in rows]) @ sentence_emb.T for w in verbalizer[lab]]
        cols.append(torch.stack([s.diagonal() for s in sims]).mean(0))                      # (N,)
    return torch.stack(cols, 1)


def score_pair(scores: torch.Tensor, gold: np.ndarray) -> tuple[float, float]:
    s = scores.numpy()
    acc = float((s.argmax(1) == gold).mean())
    gold_s = s[np.arange(len(gold)), gold]
    other = np.where(np.eye(s.shape[1], dtype=bool)[gold], -np.inf, s).max(1)
    return acc, float((gold_s - other).mean())


def prescreen_templates(spec, space, out: Path) -> Tuple[List[int], Dict[int, int]]:
    """(ids of the top-k templates, each template's best verbalizer id); writes out/prescreen.json
    and prints the ranking."""
    t = spec.tune
    rows = sample_rows(spec, t.prescreen_samples)
    scoring = lm_scoring(spec)
    score_fn = _lm_scorer(spec) if scoring else _cosine_scorer(spec, space, rows)
    scores = []
    for i in space.template_ids:
        for j, v in enumerate(space.verbalizers):
            verb = normalize_verbalizer(v) or {lab: [lab] for lab in spec.task.labels}  # no verbalizer: label names
            acc, margin = score_pair(*score_fn(space.templates[i], verb, rows))
            scores.append(Score(i, j, acc, margin))
    kept = rank_templates(scores, t.prescreen_top_k)
    best_verb = {i: max((s for s in scores if s.template_id == i), key=lambda s: (s.accuracy, s.margin)).verbalizer_id
                 for i in space.template_ids}
    report = {"scorer": f"verbalizer ({scoring})" if scoring else "cosine", "samples": len(rows), "kept": kept,
              "best_verbalizer": best_verb, "every_verbalizer_trains": space.verbalizer_trains,
              "scores": [{**asdict(s), "template": space.templates[s.template_id]} for s in scores]}
    write_file(out / "prescreen.json", json.dumps(report, indent=1))
    print_ranking(report, space)
    return kept, best_verb


def _lm_scorer(spec):
    lm = LMScorer(spec)
    return lm.scores


def _cosine_scorer(spec, space, rows):
    enc = Encoder(spec)
    gold = gold_ids(spec, rows)
    text_cols = {c for i in space.template_ids for c in Template.parse(space.templates[i]).columns}
    sentence_emb = enc.embed([" ".join(str(r[c]) for c in sorted(text_cols) if r.get(c)) for r in rows])
    return lambda text, verb, rows: (cosine_label_scores(enc, Template.parse(text), verb, spec.task.labels, rows,
                                                         sentence_emb), gold)


def rank_templates(scores: List[Score], k: int) -> List[int]:
    best: Dict[int, tuple] = {}
    for s in scores:
        best[s.template_id] = max(best.get(s.template_id, (-1.0, -np.inf)), (s.accuracy, s.margin))
    return sorted(sorted(best, key=lambda i: best[i], reverse=True)[:k])


def print_ranking(report: dict, space) -> None:
    with terminal.block("default"):  # its rows carry no [peft-ray] prefix
        _print_ranking(report, space)


def _print_ranking(report: dict, space) -> None:
    print(f"[peft-ray] pre-screen ({report['scorer']}, {report['samples']} rows): zero-shot accuracy")
    for s in sorted(report["scores"], key=lambda s: (-s["accuracy"], -s["margin"])):
        # a kept template trains with its best verbalizer only, unless the verbalizer is a trial dimension
        trains = report["every_verbalizer_trains"] or report["best_verbalizer"][s["template_id"]] == s["verbalizer_id"]
        keep = "kept" if s["template_id"] in report["kept"] and trains else "    "
        print(f"  {keep}  {s['accuracy']:.3f}  template[{s['template_id']}] verbalizer[{s['verbalizer_id']}]  "
              f"{one_line(space.templates[s['template_id']])}")
