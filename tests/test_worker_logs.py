"""Worker log records travel back with a Ray task's result and reach the Prefect run's log."""
from __future__ import annotations

import logging

import pytest
import ray

from tasks.worker_logs import WorkerLog, captured_logs, replay


def test_collects_our_loggers_from_info_up_and_restores_levels() -> None:
    ours, other = logging.getLogger("mmrag_core.some_module"), logging.getLogger("elsewhere")
    before = logging.getLogger("mmrag_core").level
    with captured_logs() as logs:
        ours.debug("too fine")
        ours.info("page %d repaired", 3)
        logging.getLogger("tasks.extract").warning("slow")
        other.warning("not ours")
    assert logs == [WorkerLog(logging.INFO, "mmrag_core.some_module", "page 3 repaired"),
                    WorkerLog(logging.WARNING, "tasks.extract", "slow")]
    assert logging.getLogger("mmrag_core").level == before
    with captured_logs() as after:
        pass
    assert after == [], "the collector is gone after its block"


def test_a_flood_is_cut_and_counted() -> None:
    with captured_logs(limit=3) as logs:
        for n in range(10):
            logging.getLogger("mmrag_core.x").info("record %d", n)
    assert [r.message for r in logs[:3]] == ["record 0", "record 1", "record 2"]
    assert logs[3].message == "7 more log records dropped" and len(logs) == 4


def test_replay_names_the_host_and_logger(caplog: pytest.LogCaptureFixture) -> None:
    target = logging.getLogger("test.run_logger")
    with caplog.at_level(logging.INFO, logger="test.run_logger"):
        replay([WorkerLog(logging.WARNING, "mmrag_core.ingest.extract.pdf", "a.pdf: repaired")], target, "node-2")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "[node-2] mmrag_core.ingest.extract.pdf: a.pdf: repaired")]


def test_records_cross_a_real_ray_task() -> None:
    @ray.remote(num_cpus=0)
    def work() -> list[WorkerLog]:
        with captured_logs() as logs:
            logging.getLogger("mmrag_core.worker").info("done on a worker")
        return logs

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.get(work.remote()) == [WorkerLog(logging.INFO, "mmrag_core.worker", "done on a worker")]
    finally:
        if started:
            ray.shutdown()
