"""Data parallelism changes nothing but the speed: two gloo ranks under DeepSpeed ZeRO, each on its
half of a batch, end where one rank on the whole batch ends (the job's loss is a per-rank mean and
DeepSpeed averages the ranks' gradients, so the update is the same up to rounding). Real engines
in real processes (torch.multiprocessing), the adapter read back through the ZeRO-3 gather.
AdamW is nearly blind to a constant gradient scale, so this guards which rows each rank reads and
how the ranks' gradients combine (two ranks on the same half fail it), not the loss's scale."""

from __future__ import annotations

import os
import socket

import pyarrow.parquet as pq
import pytest
import torch

STEPS, BATCH = 4, 16


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: dict, batches: list, out: str) -> None:
    import torch.distributed as dist

    from peft_ray.adapter import gather_adapter_state
    from peft_ray.spec import validate_spec
    from peft_ray.tasks import get_task
    from peft_ray.train.engine import build_model, setup_engine

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    spec = validate_spec({**job, "scaling": {"num_workers": world}})
    model, _, path = build_model(spec)
    engine, _ = setup_engine(model, spec, STEPS, use_bf16=False)
    engine.train()
    task = get_task(spec.task.type)
    rt = task.runtime(spec, path)
    losses = []
    for batch in batches:
        share = BATCH // world
        mine = {k: v[rank * share:(rank + 1) * share] for k, v in batch.items()}
        loss = task.loss(engine, mine, rt)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    state = gather_adapter_state(engine.module)   # a collective under ZeRO-3: every rank calls it
    if rank == 0:
        torch.save({"state": state, "losses": losses}, out)
    dist.barrier()   # no rank tears gloo down while the other is still in a collective
    dist.destroy_process_group()


def _batches(tiny_bert, tiny_data) -> list:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = pq.read_table(tiny_data / "train.parquet").to_pylist()[:STEPS * BATCH]
    out = []
    for i in range(STEPS):
        chunk = rows[i * BATCH:(i + 1) * BATCH]
        batch = dict(tok([r["text"] for r in chunk], padding=True, truncation=True, max_length=32, return_tensors="pt"))
        batch["labels"] = torch.tensor([int(r["label"]) for r in chunk])
        out.append(batch)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage,method", [(2, {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "vocab"}),
                                          (3, {"name": "lora", "r": 4, "target_modules": ["query", "value"]})])
def test_two_ranks_update_as_one(tiny_bert, tiny_data, tmp_path, stage, method):
    import torch.multiprocessing as mp

    from tests.conftest import job_dict

    job = job_dict(tiny_bert, tiny_data, tmp_path / "run", deepspeed={"zero_stage": stage},
                   train={"batch_size": BATCH, "lr": 0.05, "max_steps": STEPS, "warmup_ratio": 0.0})
    job["method"] = method
    batches = _batches(tiny_bert, tiny_data)
    got = {}
    for world in (1, 2):
        out = str(tmp_path / f"world{world}.pt")
        mp.spawn(_worker, args=(world, _port(), job, batches, out), nprocs=world)
        got[world] = torch.load(out)
    one, two = got[1], got[2]
    assert set(one["state"]) == set(two["state"]) and one["state"]
    for name, value in one["state"].items():
        assert value.abs().max() > 0, name
        torch.testing.assert_close(two["state"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert len(one["losses"]) == STEPS
