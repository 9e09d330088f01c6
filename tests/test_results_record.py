"""kdbench.results.record, the result.json schema: building a record (default and task-specific metrics), writing
it, and reading it back with a clear error for anything that is not a kdbench result of this schema version."""
import json
import logging
import os

import pytest

from kdbench.results.record import (RESULT_FILE, SCHEMA_VERSION, RecordError, build_record, iter_records, read_record,
                                    summarize, utc_now, write_record)

HISTORY = [{"epoch": 1, "top1": 40.0, "top5": 70.0}, {"epoch": 2, "top1": 45.0, "top5": 75.0},
           {"epoch": 3, "top1": 44.0, "top5": 76.0}]


def record(tmp_path, **kw):
    return build_record(run_id="r1", status="completed", failure=None, started_at=utc_now(),
                        config={"method": {"name": "kd"}}, dataset={"name": "cifar100"}, teacher=None,
                        student={"name": "resnet8x4"}, method={"name": "ce", "hparams": {}}, seed=0, epochs=3,
                        history=HISTORY, wall_time_s=1.23456, images_per_s=123.456, device="cpu", precision="fp32",
                        run_dir=tmp_path, **kw)


def test_build_record_summarises_the_history_by_default(tmp_path):
    rec = record(tmp_path)
    assert rec["schema"] == SCHEMA_VERSION and rec["epochs_run"] == 3
    assert rec["metrics"] == summarize(HISTORY) == {"best_top1": 45.0, "best_top5": 75.0, "best_epoch": 2,
                                                     "last_top1": 44.0, "last_top5": 76.0}
    assert (rec["wall_time_s"], rec["images_per_s"]) == (1.235, 123.5)


def test_build_record_takes_task_metrics(tmp_path):
    metrics = {"last_ap": 38.2, "last_ap50": 58.9, "best_ap": 38.4}
    rec = record(tmp_path, metrics=metrics)
    assert rec["metrics"] == metrics and rec["history"] == HISTORY


def test_write_then_read(tmp_path):
    rec = record(tmp_path)
    path = write_record(tmp_path, rec)
    assert path == tmp_path / RESULT_FILE and read_record(path) == json.loads(json.dumps(rec, default=str))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert list(iter_records([tmp_path])) == [(path, read_record(path))]


@pytest.mark.parametrize("text, message", [
    ('{"schema": 1, "run_id": ', "cannot read JSON (Expecting value"),
    (b"\xff\xfe", "cannot read JSON ("),
    ('{"accuracy": 0.9}', "not a kdbench result (schema is None, expected 1)"),
    ('[1, 2]', "not a kdbench result (top level is not an object)"),
    ('{"schema": 2, "run_id": "r"}', "not a kdbench result (schema is 2, expected 1)"),
    ('{"schema": 1, "run_id": "r", "status": "running"}', "not a kdbench result (unknown status 'running')"),
    ('{"schema": 1, "run_id": "r", "status": "failed", "dataset": {"name": "d"}, "student": {}}',
     "not a kdbench result (no student.name)"),
])
def test_read_record_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / RESULT_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RecordError) as err:
        read_record(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_read_record_of_a_missing_file(tmp_path):
    with pytest.raises(RecordError, match="cannot read JSON"):
        read_record(tmp_path / "nope.json")


def test_iter_records_reads_each_file_once_and_warns_about_the_rest(tmp_path, caplog):
    good = write_record(tmp_path / "a", record(tmp_path))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / RESULT_FILE).write_text("{}")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "other.json").write_text("{}")  # not named result.json: not looked at
    with caplog.at_level(logging.WARNING):
        found = list(iter_records([tmp_path, good, tmp_path / "missing"]))
    assert [f for f, _ in found] == [good]
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping {tmp_path / 'b' / RESULT_FILE}: not a kdbench result (schema is None, expected 1)",
        f"skipping {tmp_path / 'missing'}: no such file or directory"]
