"""`peft-ray eval` and `peft-ray predict` on runs trained here (--local), through real Ray Data:
eval reproduces the run's own validation metrics; predict keeps every row, in order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.spec import validate_spec
from peft_ray.train.local import run_local
from tests.conftest import job_dict, write_rows
from tests.tasks import synthetic

pytestmark = pytest.mark.ray


def _train(root: Path, rows, task: dict, template: str, steps: int) -> Path:
    """A LoRA run on a tiny BERT from config (synthetic data it learns in seconds); returns output.dir."""
    model = synthetic.make_model(root / "model", "bert")
    write_rows(root / "data" / "train.parquet", rows(256, seed=1))
    write_rows(root / "data" / "validation.parquet", rows(70, seed=2))
    job = job_dict(model, root / "data", root / "run", task=task, template={"text": template, "verbalizer": None},
                   method={"name": "lora"}, scaling={"num_workers": 1},
                   train={"max_steps": steps, "eval_every": steps, "lr": 0.01, "batch_size": 16})
    job["method"] = {"name": "lora"}          # job_dict merges sections; LoRA takes none of prompt tuning's keys
    run_local(validate_spec(job))
    return root / "run"


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> Path:
    # 40 steps: accuracy 1.0 at validation loss ~0.48, so the loss still tells a wrong model apart
    return _train(tmp_path_factory.mktemp("cls"), synthetic.sentiment_rows,
                  {"type": "classification", "labels": ["negative", "positive"]}, "{text}", 40)


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ner"), synthetic.ner_rows,
                  {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, "{tokens}", 60)


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _trained(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_eval_run_folder_reproduces_the_runs_validation_metrics(ray_runtime, cls_run):
    r = _cli("eval", cls_run, "--data", cls_run.parent / "data")       # a folder: the job's validation file
    assert r.exit_code == 0, r.output
    got, want = json.loads((cls_run / "eval_validation.json").read_text()), _trained(cls_run)
    assert got["n_eval"] == want["n_eval"] == 70
    assert got["accuracy"] == want["accuracy"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert "accuracy" in r.output and "macro_f1" in r.output and "eval_validation.json" in r.output


def test_eval_adapter_folder_on_a_file(ray_runtime, cls_run, tmp_path):
    out = tmp_path / "m.json"
    r = _cli("eval", cls_run / "adapter", "--data", cls_run.parent / "data" / "validation.parquet",
             "--output", out, "--batch-size", 7)
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    assert got["accuracy"] == _trained(cls_run)["accuracy"] and got["n_eval"] == 70
    assert got["loss"] == pytest.approx(_trained(cls_run)["loss"], rel=1e-5)   # other batches, same loss
    r = _cli("eval", cls_run / "adapter", "--data", cls_run.parent / "data" / "validation.parquet",
             "--output", out, "--local")
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.output
    r = _cli("eval", cls_run / "adapter", "--data", cls_run.parent / "data" / "validation.parquet", "--local",
             "--output", out, "--overwrite")
    assert r.exit_code == 0, r.output
    # a file without --split: its metrics go under its own name, not over the run's eval_validation.json
    test_file = shutil.copy(cls_run.parent / "data" / "validation.parquet", tmp_path / "test.parquet")
    r = _cli("eval", cls_run, "--data", test_file, "--local")
    assert r.exit_code == 0 and "on test" in r.output and (cls_run / "eval_test.json").is_file(), r.output


def _predict_input(tmp_path: Path, ext: str) -> tuple[Path, list]:
    """Unlabelled rows (no label column) with an id to check order; rows 3 and 7 have no text."""
    rows = synthetic.sentiment_rows(300, seed=5)
    texts = rows["text"]
    texts[3], texts[7] = "", None
    table = {"id": list(range(300)), "text": texts}
    if ext == ".parquet":
        return write_rows(tmp_path / "in.parquet", table), texts
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path, texts


def _read(path: Path) -> list:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_internals_go_to_a_log_next_to_the_output(cls_run, tmp_path):
    """Through Ray (a fresh process, as a user runs it): Ray's auth notice, Ray Data's execution
    plan and transformers' load bars stay off the terminal, in OUTPUT.log; the result line stays."""
    import os
    import subprocess
    import sys

    src, _ = _predict_input(tmp_path, ".parquet")
    out = tmp_path / "preds.parquet"
    r = subprocess.run([sys.executable, "-m", "peft_ray.cli", "predict", str(cls_run), "--input", str(src),
                        "--output", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr[-3000:]
    shown = r.stdout + r.stderr
    assert "wrote 300 rows" in r.stdout
    for noise in ("Execution plan", "streaming_executor", "Loading weights", "Token authentication"):
        assert noise not in shown, noise
    assert "Execution plan" in (tmp_path / "preds.parquet.log").read_text()


@pytest.mark.parametrize("ext,actors", [(".parquet", 2), (".jsonl", 1)])
def test_predict_keeps_rows_and_order(ray_runtime, cls_run, tmp_path, ext, actors):
    src, texts = _predict_input(tmp_path, ext)
    out = tmp_path / f"out{ext}"
    r = _cli("predict", cls_run, "--input", src, "--output", out, "--num-actors", actors, "--batch-size", 16)
    assert r.exit_code == 0, r.output
    assert "wrote 300 rows" in r.output and "(2 without a prediction)" in r.output
    rows = _read(out)
    assert [row["id"] for row in rows] == list(range(300))
    assert [row["text"] for row in rows] == texts
    for i in (3, 7):
        assert rows[i]["prediction"] is None and rows[i]["scores"] is None
    scored = [row for i, row in enumerate(rows) if i not in (3, 7)]
    assert all(set(row["scores"]) == {"negative", "positive"} for row in scored)
    assert all(sum(row["scores"].values()) == pytest.approx(1.0) for row in scored)
    assert all(row["prediction"] == max(row["scores"], key=row["scores"].get) for row in scored)
    good = [row["prediction"] for row in scored if row["text"].endswith(("good", "great", "fine"))]
    assert good.count("positive") / len(good) > 0.9                   # the model did learn the task
    assert not list(tmp_path.glob(".*partial"))


def test_token_classification_eval_and_predict(ray_runtime, ner_run, tmp_path):
    r = _cli("eval", ner_run, "--data", ner_run.parent / "data")
    assert r.exit_code == 0, r.output
    got = json.loads((ner_run / "eval_validation.json").read_text())
    assert got["entity_f1"] == pytest.approx(_trained(ner_run)["entity_f1"], abs=1e-12)
    assert got["entity_f1"] >= 0.9 and "entity_f1" in r.output

    rows = synthetic.ner_rows(20, seed=9)
    tokens = rows["tokens"] + [[]]                                      # the last row has no words
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"tokens": t}) + "\n" for t in tokens))
    r = _cli("predict", ner_run, "--input", src, "--output", tmp_path / "out.jsonl")
    assert r.exit_code == 0, r.output
    out = _read(tmp_path / "out.jsonl")
    assert [row["tokens"] for row in out] == tokens and out[-1]["prediction"] is None
    assert all(len(row["prediction"]) == len(row["tokens"]) for row in out[:-1])
    right = sum(p == g for row, tags in zip(out, rows["ner_tags"]) for p, g in zip(row["prediction"], tags))
    assert right / sum(len(t) for t in rows["ner_tags"]) > 0.9


def test_bad_paths_are_messages(cls_run, tmp_path):
    data = cls_run.parent / "data"
    no_text = write_rows(tmp_path / "no_text.parquet", {"sentence": ["a good film"]})
    unknown = write_rows(tmp_path / "unknown.parquet", {"text": ["a good film", "a film"], "label": ["positive", "meh"]})
    broken = tmp_path / "broken"
    shutil.copytree(cls_run / "adapter", broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 50)   # truncated in a copy
    import ray

    ray_before = ray.is_initialized()  # another test's shared runtime may be up already
    run_metrics = (cls_run / "metrics.json").read_bytes()
    cases = [
        (["eval", cls_run, "--data", unknown], "--data", "label 'meh' is not in task.labels"),  # before Ray
        (["predict", broken, "--input", unknown, "--output", tmp_path / "o.parquet"], "adapter_model.safetensors",
         "not a readable safetensors file"),
        (["eval", tmp_path / "nope", "--data", data], "ADAPTER_OR_RUN", "does not exist"),
        (["eval", tmp_path, "--data", data], "no adapter", "output.dir"),
        (["eval", cls_run, "--data", tmp_path / "missing.parquet"], "--data: no file matches", "missing.parquet"),
        (["eval", cls_run, "--data", data, "--split", "test"], "--split test", "pass the file itself"),
        (["eval", cls_run, "--data", "builtin:sentimnt"], "--data: unknown built-in data set 'sentimnt'", ""),
        (["predict", cls_run, "--input", no_text, "--output", tmp_path / "o.parquet"], "no column 'text'",
         "sentence"),
        (["predict", cls_run, "--input", no_text, "--output", tmp_path / "o.xlsx"], "--output", ".jsonl"),
        (["predict", cls_run, "--input", no_text, "--output", no_text], "also an input file", ""),
        (["predict", cls_run, "--input", data / "validation.parquet", "--output", cls_run / "metrics.json"],
         "already exists", "--overwrite"),                                   # a run's own file, or any other
        (["eval", cls_run, "--data", data, "--output", cls_run / "metrics.json"], "already exists", "--overwrite"),
        (["predict", cls_run, "--input", data / "validation.parquet", "--output", tmp_path / "o.jsonl",
          "--num-actors", "512"], "--num-actors 512 needs 512 CPUs", "lower --num-actors"),
    ]
    for args, *expected in cases:
        r = _cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "error:" in r.output and all(e in r.output for e in expected), (args, r.output)
        assert "Traceback" not in r.output
    assert ray.is_initialized() == ray_before  # every one of these is refused before Ray starts
    assert (cls_run / "metrics.json").read_bytes() == run_metrics
    r = _cli("eval", cls_run, "--data", data, "--split", "x/../../victim", "--local")   # names eval_<split>.json
    assert r.exit_code == 2 and "'x/../../victim' is not a split name" in r.output
    assert not list(tmp_path.rglob("victim*")) and not list(tmp_path.rglob("eval_x"))


@pytest.mark.parametrize("cmd", ["eval", "predict"])
def test_help_has_examples(cmd):
    r = _cli(cmd, "--help")
    assert r.exit_code == 0
    assert f"peft-ray {cmd} runs/" in r.output and "Examples" in r.output


def test_eval_of_the_train_split_scores_every_row_of_a_few_shot_job(cls_run, tmp_path):
    """The job's K rows a class are what it trained on, not a split: `--split train` dropped every
    other row, silently (skipped_rows 0), and needed the job's own data folder to compute them."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cls_run / "adapter", run / "adapter")
    card = json.loads((run / "adapter" / "peft_ray.json").read_text())
    card["spec"]["data"]["train_shots"] = 4
    (run / "adapter" / "peft_ray.json").write_text(json.dumps(card))
    r = _cli("eval", run / "adapter", "--data", cls_run.parent / "data", "--split", "train", "--local",
             "--output", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.json").read_text())["n_eval"] == 256


def test_too_many_actors_are_refused_before_ray_starts(monkeypatch):
    """It took Ray's start (14 s on 2 cores) to learn that the in-process Ray has too few CPUs."""
    import sys

    from peft_ray.prediction import check_actors_fit_here
    from peft_ray.errors import JobError

    monkeypatch.setitem(sys.modules, "ray", None)        # as in a fresh `peft-ray predict`: Ray not started
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(JobError, match="--num-actors 512 needs 512 CPUs .* the in-process Ray on this machine"):
        check_actors_fit_here(512, None)
    check_actors_fit_here(1, None)
    check_actors_fit_here(512, "auto")                   # a cluster's CPUs are counted once joined


def test_rows_cut_to_max_length_are_reported(cls_run, tmp_path):
    """A row longer than model.max_length was cut without a word (a generation prompt even lost its
    chat markup and came back empty): predict marks it and both commands count it."""
    long_text = "a good film " * 40                                  # far past the job's 32 tokens
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a good film"}) + "\n" + json.dumps({"text": long_text}) + "\n")
    r = _cli("predict", cls_run, "--input", src, "--output", tmp_path / "out.jsonl", "--local")
    assert r.exit_code == 0, r.output
    assert "1 row(s) were longer than model.max_length=32 tokens" in r.output
    assert [row["input_truncated"] for row in _read(tmp_path / "out.jsonl")] == [False, True]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"text": long_text, "label": "positive"}) + "\n")
    r = _cli("eval", cls_run, "--data", labelled, "--local", "--output", tmp_path / "m.json")
    assert r.exit_code == 0 and "1 row(s) were longer" in r.output, r.output
    assert json.loads((tmp_path / "m.json").read_text())["truncated_rows"] == 1


@pytest.mark.parametrize("recorded", ["/elsewhere/validation.parquet", "../victim/validation.parquet"])
def test_eval_of_a_folder_never_reads_outside_it(cls_run, tmp_path, recorded):
    """A shared adapter's record named a file outside --data, and eval scored that file instead; a
    job that named its file by path is scored on the file of that name in --data."""
    outside = tmp_path / "elsewhere" / "validation.parquet"
    outside.parent.mkdir()
    shutil.copy(cls_run.parent / "data" / "train.parquet", outside)      # other rows than the folder's
    run = tmp_path / "run"
    shutil.copytree(cls_run / "adapter", run / "adapter")
    card = json.loads((run / "adapter" / "peft_ray.json").read_text())
    card["spec"]["data"]["validation"] = recorded.replace("/elsewhere", str(outside.parent))
    (run / "adapter" / "peft_ray.json").write_text(json.dumps(card))
    r = _cli("eval", run / "adapter", "--data", cls_run.parent / "data", "--local", "--output", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    scored = json.loads((tmp_path / "m.json").read_text())
    assert scored["data"] == [str(cls_run.parent / "data" / "validation.parquet")] and scored["n_eval"] == 70


def test_a_folder_without_an_adapter_is_told_what_to_pass(cls_run, tmp_path):
    """A run stopped before adapter/ names its newest checkpoint; a merged model says what it is."""
    killed = tmp_path / "killed"
    shutil.copytree(cls_run, killed)
    for name in ("adapter", "adapter_last"):
        shutil.rmtree(killed / name, ignore_errors=True)
    newest = sorted((killed / "checkpoints").glob("checkpoint_*"))[-1]
    r = _cli("eval", killed, "--data", cls_run.parent / "data", "--local")
    assert r.exit_code == 2 and f"its newest checkpoint is {newest}: pass that folder" in r.output, r.output
    merged = tmp_path / "merged"
    assert _cli("export", cls_run, merged, "--merge").exit_code == 0
    r = _cli("predict", merged, "--input", cls_run.parent / "data" / "validation.parquet", "--output",
             tmp_path / "p.jsonl", "--local")
    assert r.exit_code == 2 and "it is a full model (an `export --merge`?)" in r.output, r.output
    # a tune trial's folder: adapters only in its checkpoints (it once said to `train --resume` a finished trial)
    trial = tmp_path / "search" / "trials" / "abc_00000"
    shutil.copytree(killed / "checkpoints", trial / "checkpoints")
    (trial / "trial.json").write_text("{}")
    r = _cli("eval", trial, "--data", cls_run.parent / "data", "--local")
    assert r.exit_code == 2 and "it is a trial of `peft-ray tune`" in r.output and str(trial / "checkpoints" /
                                                                                   newest.name) in r.output, r.output
    assert "--resume" not in r.output and f"the search's output.dir ({tmp_path / 'search'})" in r.output


def test_predict_gives_no_prediction_for_a_row_of_more_text_than_the_model_reads(cls_run, tmp_path):
    """predict reads no pre-flight scan: each row is checked as it is built, before the tokenizer
    sees it (200 MB in one row took it to 13 GB), and such a row gets no prediction, as a malformed one."""
    long = write_rows(tmp_path / "in.parquet", {"text": ["a good film", "good " * 25_000]})
    r = _cli("predict", cls_run, "--input", long, "--output", tmp_path / "o.jsonl", "--local")
    assert r.exit_code == 0 and "(1 without a prediction)" in r.output, r.output
    rows = _read(tmp_path / "o.jsonl")
    assert rows[0]["prediction"] is not None and rows[1]["prediction"] is None


def test_exports_side_by_side_keep_their_own_eval_file(cls_run, tmp_path):
    """An exported adapter is its own folder: its default metrics file is named after it, beside it,
    so evaluating a second export there does not replace the first's."""
    data = cls_run.parent / "data" / "validation.parquet"
    for name in ("one", "two"):
        assert _cli("export", cls_run, tmp_path / name).exit_code == 0
        r = _cli("eval", tmp_path / name, "--data", data, "--local")
        assert r.exit_code == 0 and (tmp_path / f"eval_{name}_validation.json").is_file(), r.output
    assert not (tmp_path / "eval_validation.json").exists()


def test_zero_shot_keeps_an_existing_output_without_overwrite(cls_run, tmp_path):
    keep = tmp_path / "keep.json"
    keep.write_text('{"precious": 1}')
    job = tmp_path / "job.yaml"
    shutil.copy(cls_run / "job.yaml", job)
    r = _cli("zero-shot", job, "--output", keep)
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.output, r.output
    assert keep.read_text() == '{"precious": 1}'


def test_predict_writes_csv_a_spreadsheet_reads(cls_run, ner_run, tmp_path):
    """.csv output: one column per class score, NER tags as JSON text; rows without a prediction
    are empty cells. Read back with pyarrow's CSV reader, as pandas/a spreadsheet would."""
    import pyarrow.csv as pcsv

    src = write_rows(tmp_path / "in.parquet", {"text": ["a good film", "", "a bad film"], "id": [1, 2, 3]})
    r = _cli("predict", cls_run, "--input", src, "--output", tmp_path / "o.csv", "--local")
    assert r.exit_code == 0 and "wrote 3 rows" in r.output, r.output
    got = pcsv.read_csv(tmp_path / "o.csv").to_pylist()
    assert [row["id"] for row in got] == [1, 2, 3]
    assert {"prediction", "scores.negative", "scores.positive", "input_truncated"} <= set(got[0])
    assert not got[1]["prediction"] and got[1]["scores.positive"] is None    # empty cells
    for row in (got[0], got[2]):
        assert row["scores.negative"] + row["scores.positive"] == pytest.approx(1.0)

    # a diff-review finding: binary and fixed-size list columns, a column int in one shard and float
    # in the next, and an input column named like a score column ended in tracebacks or two headers
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "shards"
    shards.mkdir()
    emb = pa.array([[0.5, 1.0], [2.0, 3.0]], type=pa.list_(pa.float32(), 2))
    pq.write_table(pa.table({"text": ["a good film", "a bad film"], "raw": pa.array([b"\xff\x00", b"ok"]),
                             "emb": emb, "w": pa.array([1, 2])}), shards / "a.parquet")
    pq.write_table(pa.table({"text": ["a fine film", "a dull film"], "raw": pa.array([b"ab", b"cd"]),
                             "emb": emb, "w": pa.array([1.5, 2.5])}),
                   shards / "b.parquet")   # (an input column named like a score column: refused, a later test)
    r = _cli("predict", cls_run, "--input", str(shards / "*.parquet"), "--output", tmp_path / "s.csv", "--local",
             "--batch-size", 1)
    assert r.exit_code == 0 and "wrote 4 rows" in r.output, r.output
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert header.count('"scores.positive"') == 1, header
    got = pcsv.read_csv(tmp_path / "s.csv", convert_options=pcsv.ConvertOptions(strings_can_be_null=True)).to_pylist()
    assert [row["raw"] for row in got] == ["ff00", "ok", "ab", "cd"]
    assert json.loads(got[0]["emb"]) == [0.5, 1.0] and [row["w"] for row in got] == [1, 2, 1.5, 2.5]
    assert all(0.0 <= row["scores.positive"] <= 1.0 for row in got)

    src = tmp_path / "ner.jsonl"
    src.write_text(json.dumps({"tokens": ["Ann", "visits", "Paris"]}) + "\n")
    r = _cli("predict", ner_run, "--input", src, "--output", tmp_path / "ner.csv", "--local")
    assert r.exit_code == 0, r.output
    (row,) = pcsv.read_csv(tmp_path / "ner.csv").to_pylist()
    assert json.loads(row["tokens"]) == ["Ann", "visits", "Paris"] and len(json.loads(row["prediction"])) == 3
    # that CSV (words as JSON text) back into predict: every row once came back without a prediction
    r = _cli("predict", ner_run, "--input", tmp_path / "ner.csv", "--output", tmp_path / "again.jsonl", "--local")
    assert r.exit_code == 2 and "column 'tokens' of --input" in r.output and "CSV cells cannot hold lists" in r.output
    assert not (tmp_path / "again.jsonl").exists()
    # a tags column predict never reads may hold anything (a second diff review)
    pq.write_table(pa.table({"tokens": [["Ann", "visits", "Paris"]], "ner_tags": ["B-PER O B-LOC"]}),
                   tmp_path / "strtags.parquet")
    r = _cli("predict", ner_run, "--input", tmp_path / "strtags.parquet", "--output", tmp_path / "s.jsonl", "--local")
    assert r.exit_code == 0, r.output


def test_ray_predict_in_its_own_ray_prints_no_error_line(cls_run, tmp_path):
    """A review finding: every successful `predict` through the in-process Ray printed Ray's C++
    "E ... core_worker.cc ... constructor arguments in the object store and max_restarts > 0" line
    to the terminal; with 2 actors, the GCS's "Failed to kill actor ... Socket closed" line sometimes
    came after the result (Ray stopped at exit, outside the routed output). A fresh process, as a
    user runs it (no Ray started yet)."""
    import os
    import subprocess
    import sys

    src = write_rows(tmp_path / "in.parquet", {"text": ["a good film", "a bad film"] * 5})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "peft_ray.cli", "predict", str(cls_run), "--input", str(src),
                           "--output", str(tmp_path / "o.parquet"), "--num-actors", "2"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote 10 rows" in done.stdout
    shown = done.stdout + done.stderr
    for line in ("core_worker.cc", "max_restarts", "gcs_server", "Failed to kill actor"):
        assert line not in shown, shown


def test_local_predict_notes_a_num_actors_it_does_not_use(cls_run, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a good film"}) + "\n")
    r = _cli("predict", cls_run, "--input", src, "--output", tmp_path / "o.jsonl", "--local", "--num-actors", 4)
    assert r.exit_code == 0 and "note: --num-actors 4 sizes Ray's actor pool; --local predicts" in r.output, r.output


def test_eval_of_a_checkpoint_writes_beside_the_run_and_leaves_the_checkpoint_resumable(cls_run, tmp_path):
    """eval_validation.json went inside the checkpoint, whose manifest does not list it: the checkpoint
    then failed its check and --resume passed it over for an older one (a review finding)."""
    from peft_ray.train.checkpoint import validate_checkpoint

    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    ckpt = sorted((run / "checkpoints").glob("checkpoint_*"))[-1]
    r = _cli("eval", ckpt, "--data", cls_run.parent / "data", "--local")
    assert r.exit_code == 0, r.output
    assert (run / f"eval_{ckpt.name}_validation.json").is_file() and validate_checkpoint(ckpt)[0]
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(p.name for p in (cls_run / "checkpoints" / ckpt.name).iterdir())


def test_the_default_metrics_file_of_other_data_is_kept_without_overwrite(cls_run, tmp_path):
    """A second data set scored under the same name (two folders' test.parquet, or another data folder's
    validation split) replaced the first one's metrics without a word (a review finding); scoring the
    same adapter on the same data again still replaces its own."""
    run = tmp_path / "run"
    shutil.copytree(cls_run, run, ignore=shutil.ignore_patterns("eval_*"))   # other tests' scores of cls_run
    first, second = tmp_path / "a" / "test.parquet", tmp_path / "b" / "test.parquet"
    for p in (first, second):
        p.parent.mkdir()
        shutil.copy(cls_run.parent / "data" / "validation.parquet", p)
    assert _cli("eval", run, "--data", first, "--local").exit_code == 0
    kept = (run / "eval_test.json").read_bytes()
    assert _cli("eval", run, "--data", first, "--local").exit_code == 0          # a re-evaluation
    import os
    cwd = os.getcwd()
    try:                                                   # named from another folder: the same files
        os.chdir(tmp_path / "a")
        r = _cli("eval", run, "--data", "test.parquet", "--local")
        assert r.exit_code == 0, r.output
    finally:
        os.chdir(cwd)
    r = _cli("eval", run, "--data", second, "--local")
    assert r.exit_code == 2 and f"eval_test.json already holds the metrics of {first}" in r.output, r.output
    assert "--overwrite" in r.output
    assert json.loads((run / "eval_test.json").read_bytes())["data"] == json.loads(kept)["data"]
    r = _cli("eval", run, "--data", second, "--local", "--overwrite")
    assert r.exit_code == 0 and json.loads((run / "eval_test.json").read_text())["data"] == [str(second)]


def test_a_default_metrics_name_too_long_for_the_file_system_is_refused_before_the_work(cls_run, tmp_path):
    ckpt = sorted((cls_run / "checkpoints").glob("checkpoint_*"))[-1]
    long = tmp_path / ("checkpoint_" + "9" * 230)
    shutil.copytree(ckpt, long)
    r = _cli("eval", long, "--data", cls_run.parent / "data", "--local")
    assert r.exit_code == 2 and "longer than a file system allows; pass --output FILE" in r.output, r.output
    r = _cli("eval", cls_run, "--data", cls_run.parent / "data", "--local", "--output", tmp_path / ("m" * 250))
    assert r.exit_code == 2 and "the name is longer than a file system allows" in r.output, r.output


def test_predict_passes_csv_columns_on_as_written(cls_run, tmp_path):
    """An id '00123' came back as 123 and a code '007' as 7.0 (pyarrow's type inference), so the
    predictions no longer joined back to their rows (a review finding)."""
    src = tmp_path / "ids.csv"
    src.write_text('id,text,code\n00123,"a superb cast, really",1e5\n00456,the plot was dull,007\n,N/A,\n')
    for local in (True, False):
        out = tmp_path / f"out_{local}.jsonl"
        r = _cli("predict", cls_run, "--input", src, "--output", out, *(["--local"] if local else []))
        assert r.exit_code == 0, r.output
        rows = _read(out)
        assert [(row["id"], row["code"]) for row in rows] == [("00123", "1e5"), ("00456", "007"), (None, None)]
        assert rows[2]["text"] == "N/A"                # an empty cell is null, a word stays a word


def test_predict_checks_csv_columns_as_the_text_it_passes_on(cls_run, tmp_path):
    """The pre-flight inferred CSV types while predict reads the cells as text, so a text column of
    digits was refused as "int64, not text", and a pass-through column of numbers in one file and
    codes in the next as two types (left undone by the thirtieth session)."""
    (tmp_path / "digits.csv").write_text("text,ref\n12345,7\n67890,8\n")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.csv").write_text("text,ref\ngood,1\n")
    (tmp_path / "parts" / "b.csv").write_text("text,ref\nbad,A-1\n")
    for src, out in ((tmp_path / "digits.csv", tmp_path / "digits.jsonl"),
                     (tmp_path / "parts", tmp_path / "parts.parquet")):
        r = _cli("predict", cls_run, "--input", src, "--output", out, "--local")
        assert r.exit_code == 0, r.output
        rows = _read(out)
        assert [row["ref"] for row in rows] == (["7", "8"] if out.suffix == ".jsonl" else ["1", "A-1"])
        assert all(row["prediction"] for row in rows)


def test_an_input_column_named_like_an_output_column_is_refused(cls_run, tmp_path):
    """A gold `prediction` column was replaced by the model's without a word (a review finding)."""
    (tmp_path / "multi").mkdir()                 # in a later file of the input as well
    (tmp_path / "multi" / "a.csv").write_text("text\ngood\n")
    (tmp_path / "multi" / "b.csv").write_text("text,prediction\nbad,positive\n")
    r = _cli("predict", cls_run, "--input", tmp_path / "multi", "--output", tmp_path / "m.jsonl", "--local")
    assert r.exit_code == 2 and "b.csv': column(s) 'prediction' share a name" in r.output, r.output
    for name in ("prediction", "scores.positive", "input_truncated"):
        src = tmp_path / f"{name}.csv"
        src.write_text(f"text,{name}\ngood,gold\n")
        r = _cli("predict", cls_run, "--input", src, "--output", tmp_path / f"{name}.jsonl", "--local")
        assert r.exit_code == 2 and f"column(s) '{name}' share a name with what predict adds" in r.output, r.output
        assert not (tmp_path / f"{name}.jsonl").exists()
