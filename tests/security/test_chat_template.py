"""A model folder's chat template is a file users exchange: `validate` renders a sample turn under a
time and size limit before any row is built."""

from __future__ import annotations

import json
import shutil

import pytest

from peft_ray.errors import SpecError
from peft_ray.spec import validate_spec
from tests.conftest import job_dict

HANGS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages[0].content }}"
# hangs only where a run renders: around the holes the row text goes into
HANGS_IN_RUNS = ("{% for m in messages %}{% if '\ue002' in m['content'] %}{% for i in range(100000) %}{% for j in "
                 "range(100000) %}{% endfor %}{% endfor %}{% endif %}{% endfor %}")
GROWS = "{% for i in range(100) %}{% for j in range(2000) %}x{% endfor %}{% endfor %}{{ messages[0].content }}"
TWICE = "{% for i in range(2) %}{{ messages[0].content }}{% endfor %}"
UPPER = "{% for m in messages %}<{{ m.role }}>{{ m['content'] | upper }}{% endfor %}<a>"
FAILS = "{{ raise_exception('system messages are not supported') }}"
WORKS = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    from peft_ray.models import resolve_model_path

    return resolve_model_path("scratch:llama")


@pytest.mark.parametrize("template, expected", [
    (HANGS, "did not render one sample turn in 2 s"), (HANGS_IN_RUNS, "did not render one sample turn in 2 s"), (GROWS, "renders one sample turn as 201,920 characters"),
    (TWICE, "writes the user turn's text 2 times, not once as written"),
    (FAILS, "fails to render a user turn: TemplateError: system messages are not supported"),
    (UPPER, "template.chat: the model's chat template writes the user turn's text 0 times"), (WORKS, None)])
def test_the_chat_template_renders_within_limits(causal, tiny_data, tmp_path, monkeypatch, template, expected):
    from peft_ray.preflight import model as preflight

    model = tmp_path / "model"
    shutil.copytree(causal, model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    spec = validate_spec(job_dict(model, tiny_data, tmp_path / "out", template={"text": "{text}", "chat": True}))
    monkeypatch.setattr(preflight, "CHAT_RENDER_SECONDS", 2)
    if expected is None:
        preflight.check_chat(spec, str(model), "causal")
        return
    with pytest.raises(SpecError, match=expected):
        preflight.check_chat(spec, str(model), "causal")


def test_a_shared_adapters_base_chat_template_is_checked_before_predict_renders(causal, tiny_data, tmp_path,
                                                                                 monkeypatch):
    """A security-review finding: the limit held in `validate` only; eval, predict and export render
    the chat template of the model folder an adapter names (a file users exchange), and a nested
    loop there hung predict for ever."""
    from peft_ray.preflight import model as preflight
    from peft_ray.errors import CheckpointError
    from peft_ray.inference import read_run_spec
    from peft_ray.rows.tokens import tokenizer
    from peft_ray.train.local import run_local

    model = tmp_path / "model"
    shutil.copytree(causal, model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": WORKS}))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    out = tmp_path / "run"
    run_local(validate_spec(job_dict(model, tiny_data, out, template={"text": "{text}", "chat": True},
                                     scaling={"num_workers": 1}, train={"max_steps": 1})), bar="none")
    read_run_spec(out / "adapter")                      # the template as trained: fine
    (model / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": HANGS}))
    tokenizer.cache_clear()                             # a new process reads the folder afresh
    monkeypatch.setattr(preflight, "CHAT_RENDER_SECONDS", 2)
    with pytest.raises(CheckpointError, match=r"peft_ray.json: template.chat: the chat template of .* did not "
                                              "render one sample turn in 2 s"):
        read_run_spec(out / "adapter")
