"""peft-ray's live metrics: names Ray accepts (Ray drops bad ones with only a warning) and
a no-op outside Ray Train workers."""

from __future__ import annotations

import re
import warnings

from peft_ray.train import telemetry


def test_metric_names_are_ones_ray_exports():
    from ray.util.metrics import _VALID_METRIC_NAME_RE, _is_invalid_metric_name

    names = [d.name for d in telemetry.METRICS]
    assert len(names) == len(set(names))
    prometheus = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # no ':' either (reserved for recording rules)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # Ray warns, then discards the metric
        for d in telemetry.METRICS:
            assert d.name.startswith("peft_ray_") and prometheus.match(d.name), d.name
            assert _VALID_METRIC_NAME_RE.match(d.name) and not _is_invalid_metric_name(d.name)
            assert d.kind in ("gauge", "counter") and d.help
            for tag in telemetry.TAGS + d.extra_tags:
                assert prometheus.match(tag), tag
    assert {"peft_ray_train_loss", "peft_ray_eval_metric", "peft_ray_samples_per_second",
            "peft_ray_tokens_per_second", "peft_ray_step", "peft_ray_learning_rate",
            "peft_ray_gpu_memory_allocated_bytes"} <= set(names)


def test_noop_outside_a_ray_train_worker():
    # No state fields: a no-op must not touch them at all.
    assert telemetry.for_run("tiny") is None
    telemetry.record_step(None, state=None, lr=0.0)
    telemetry.record_report(None, {"samples_per_s": 1.0}, {"accuracy": 0.5})
    assert not telemetry._broken
