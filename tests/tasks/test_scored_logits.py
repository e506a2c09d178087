"""Causal verbalizer scoring projects only the scored rows through the LM head
(`logits_to_keep`), and that is exact: the same label scores and the same gradients as scoring
from the full (B, n, V) logits, for every method on tiny Llama (GQA) and GPT-2, on ragged rows."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from peft_ray.inference import InferenceEngine
from peft_ray.tasks.classification.verbalizer import label_scores
from peft_ray.tasks.lm_common import hf_model, keeps_logits, seq_logits
from tests.methods.families import VOCAB, make_base
from tests.methods.helpers import build_ours, perturb
from tests.methods.matrix import Row

METHODS = {
    "prompt-cached": ("prompt_tuning", {"num_virtual_tokens": 5, "init": "random"}),
    "prompt-prepend": ("prompt_tuning", {"num_virtual_tokens": 5, "init": "random", "prompt_cache": "off"}),
    "p_tuning": ("p_tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 16}),
    "prefix": ("prefix_tuning", {"num_virtual_tokens": 3}),
    "lora": ("lora", {"r": 4, "lora_alpha": 8}),
    "ia3": ("ia3", {}),
    "none": (None, {}),
}
CANDS = (((5,), (9,)), ((7,), (11, 12)), ((13,),))   # 3 labels; one two-token word, one two-word label


def make_engine(family: str, name: str) -> InferenceEngine:
    method, kwargs = METHODS[name]
    base = make_base(family)
    model = base if method is None else build_ours(Row(name, method, family, kwargs), base)
    perturb(model)
    return InferenceEngine(model, torch.device("cpu"))


def ragged_batch(B: int = 4, n: int = 13, seed: int = 2) -> dict:
    """Right-padded rows of different lengths, each scored at its own last real token."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, n), generator=g)
    lengths = torch.tensor([n, n - 4, n - 7, 3][:B])
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "score_pos": lengths - 1,
            "labels": torch.tensor([0, 2, 1, 0][:B])}


def full_first(engine, batch: dict) -> torch.Tensor:
    """The scored row's log-probabilities read from the full logits (the computation before)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = seq_logits(engine(input_ids=ids, attention_mask=mask).logits, ids.shape[1]).float()
    return torch.log_softmax(logits[torch.arange(len(ids)), batch["score_pos"]], dim=-1)


def scores_and_grads(engine, batch: dict, scorer):
    engine.module.zero_grad()
    with torch.enable_grad():
        s = scorer()
        F.cross_entropy(s, batch["labels"]).backward()
    grads = {n: p.grad.clone() for n, p in engine.module.named_parameters() if p.requires_grad and p.grad is not None}
    return s.detach(), grads


@pytest.mark.parametrize("family", ["llama-lm", "gpt2-lm"])
@pytest.mark.parametrize("name", list(METHODS))
def test_scored_rows_only_equal_the_full_logits(family, name):
    engine = make_engine(family, name)
    assert keeps_logits(engine)
    batch = ragged_batch()
    head = hf_model(engine).get_output_embeddings()
    rows = []
    hook = head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[:-1].numel()))
    try:
        fast, g_fast = scores_and_grads(engine, batch, lambda: label_scores(engine, batch, CANDS, "causal"))
    finally:
        hook.remove()
    # The first forward projects B rows, not B x (n_p + n); the teacher-forced pass of the
    # two-token word still reads its own full logits.
    assert rows[0] == len(batch["input_ids"])

    slow, g_slow = scores_and_grads(engine, batch, lambda: label_scores(engine, batch, CANDS, "causal",
                                                                        keep_logits=False))
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert g_fast.keys() == g_slow.keys() and g_fast
    for k in g_fast:
        torch.testing.assert_close(g_fast[k], g_slow[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("name", ["prompt-cached", "prompt-prepend", "lora"])
def test_first_scores_match_a_hand_computation(name):
    """Independent of label_scores's own fallback: the log-probabilities at each row's scored position."""
    engine = make_engine("llama-lm", name)
    batch = ragged_batch(B=3, n=9, seed=5)
    single = (((5,),), ((9,),), ((13,),))
    with torch.no_grad():
        got = label_scores(engine, batch, single, "causal")
        want = full_first(copy.deepcopy(engine), batch)[:, [5, 9, 13]]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def response_batch(B: int = 3, n: int = 12, seed: int = 4) -> dict:
    """Right-padded rows, each a prompt then a response of its own length (labels -100 on the prompt)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (B, n), generator=g)
    lengths, prompts = torch.tensor([n, n - 3, 6][:B]), torch.tensor([4, 7, 2][:B])
    pos = torch.arange(n)[None, :]
    mask = (pos < lengths[:, None]).long()
    labels = ids.masked_fill((pos < prompts[:, None]) | (mask == 0), -100)
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("family", ["llama-lm", "gpt2-lm"])
@pytest.mark.parametrize("name", list(METHODS))
def test_response_loss_projects_only_the_predicting_rows(family, name):
    from peft_ray.tasks.generation.model import lm_logits, response_loss

    engine = make_engine(family, name)
    batch = response_batch()
    head = hf_model(engine).get_output_embeddings()
    rows = []
    hook = head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[:-1].numel()))

    def full():
        logits = lm_logits(engine, batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    def grads_of(fn):
        engine.module.zero_grad()
        with torch.enable_grad():
            value = fn()
            value.backward()
        return value.detach(), {n: p.grad.clone() for n, p in engine.module.named_parameters()
                                if p.requires_grad and p.grad is not None}

    try:
        fast, g_fast = grads_of(lambda: response_loss(engine, batch))
    finally:
        hook.remove()
    labelled = int((batch["labels"][:, 1:] != -100).sum(1).max())
    assert rows == [len(batch["input_ids"]) * labelled]      # B x (the longest response), not B x n
    slow, g_slow = grads_of(full)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert g_fast.keys() == g_slow.keys() and g_fast
    for k in g_fast:
        torch.testing.assert_close(g_fast[k], g_slow[k], rtol=1e-4, atol=1e-6, msg=k)
