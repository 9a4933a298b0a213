"""The dispatcher: task order, executors, progress, and errors that name their task."""

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from skyeq import _dispatch, match_sky, synthetic


@dataclass
class Task:
    k: int
    label: str = ""


def slow_square(task):
    time.sleep(0.02 * (5 - task.k % 5))  # later tasks finish first on a pool
    return task.k * task.k


def test_results_come_back_in_task_order():
    tasks = [Task(k) for k in range(10)]
    assert _dispatch.run(slow_square, tasks) == [k * k for k in range(10)]
    with ThreadPoolExecutor(4) as pool:
        assert _dispatch.run(slow_square, tasks, pool) == [k * k for k in range(10)]
        # a lazy iterable: each task is submitted as it is made
        made = []

        def lazy():
            for k in range(6):
                made.append(k)
                yield Task(k)

        assert _dispatch.run(slow_square, lazy(), pool, total=6) == [k * k for k in range(6)]
        assert made == list(range(6))


def test_progress_callable_and_log_lines(caplog, monkeypatch):
    calls = []
    _dispatch.run(lambda t: t.k, [Task(k) for k in range(4)],
                  progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # progress=True without tqdm: a log line per tenth of the work
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with caplog.at_level(logging.INFO, logger="skyeq._dispatch"):
        _dispatch.run(lambda t: t.k, [Task(k) for k in range(20)], progress=True,
                      phase="measuring")
    lines = [r.getMessage() for r in caplog.records if r.name == "skyeq._dispatch"]
    assert lines[0] == "measuring: 2 of 20 done"
    assert lines[-1] == "measuring: 20 of 20 done"
    assert len(lines) == 10


def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    out = _dispatch.run(lambda t: t.k, [Task(k) for k in range(5)], progress=True,
                        phase="measuring")
    assert out == list(range(5))
    assert "measuring" in capsys.readouterr().err


def failing(task):
    if task.k == 1:
        raise ValueError("no usable pixel")
    return task.k


class NeedsTwo(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


def test_the_first_error_names_its_task_and_cancels_the_rest():
    ran = []
    lock = threading.Lock()
    started = threading.Event()

    def work(task):
        with lock:
            ran.append(task.k)
        if task.k == 0:
            started.wait(5)
            raise ValueError("no usable pixel")
        return task.k

    tasks = [Task(k, f"image {k}") for k in range(50)]
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match=r"^image 0: no usable pixel$") as info:
            started.set()
            _dispatch.run(work, tasks, pool)
    assert isinstance(info.value.__cause__, ValueError)
    assert len(ran) < 50  # the queued tasks were cancelled
    # serially too, and an error that already names its task is left as it is
    with pytest.raises(ValueError, match=r"^image 1: no usable pixel$"):
        _dispatch.run(failing, [Task(k, f"image {k}") for k in range(3)])

    def named(task):
        raise OSError(f"cannot read {task.label}")

    with pytest.raises(OSError, match=r"^cannot read a\.fits$"):
        _dispatch.run(named, [Task(0, "a.fits")])

    # an exception type that does not take one message keeps its type and gets a note
    def odd(task):
        raise NeedsTwo("x", "y")

    with pytest.raises(NeedsTwo) as info:
        _dispatch.run(odd, [Task(0, "b.fits")])
    assert "while running b.fits" in info.value.__notes__


class Broken:
    """An image that fails when it is read (as a file that vanished would)."""

    shape = (64, 64)
    ndim = 2

    def __array__(self, dtype=None, copy=None):
        raise OSError("the file is gone")


def test_match_sky_names_the_group_whose_task_failed():
    m = synthetic.tile_grid(1, 3, shape=(64, 64), seed=2)
    data = [m.data[0], Broken(), m.data[2]]
    for executor in (None, ThreadPoolExecutor(2)):
        with pytest.raises(OSError, match=r"^b\.fits: the file is gone$"):
            match_sky(data, m.wcs, names=["a.fits", "b.fits", "c.fits"], executor=executor)
        if executor is not None:
            executor.shutdown()
    # and a working run is unchanged by the dispatcher
    res = match_sky(m.data, m.wcs)
    assert np.isfinite(res.sky).all()


def test_progress_without_tqdm_or_info_logging_prints_to_stderr(capsys, monkeypatch):
    # progress=True was silent unless logging was at INFO (issue 14)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(_dispatch.log, "isEnabledFor", lambda level: level > logging.INFO)
    _dispatch.run(lambda t: t.k, [Task(k) for k in range(5)], progress=True, phase="writing")
    err = capsys.readouterr().err.splitlines()
    assert err == [f"skyeq: writing: {k} of 5 done" for k in range(1, 6)]


def test_progress_names_every_phase_of_a_match_in_order(capsys, monkeypatch):
    # footprints (one task per image), overlaps (one task), measuring (one per group)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(_dispatch.log, "isEnabledFor", lambda level: level > logging.INFO)
    m = synthetic.tile_grid(1, 3, shape=(64, 64), seed=2)
    match_sky(m.data, m.wcs, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err == ([f"skyeq: footprints: {k} of 3 done" for k in range(1, 4)]
                   + ["skyeq: overlaps: 1 of 1 done"]
                   + [f"skyeq: measuring: {k} of 3 done" for k in range(1, 4)])
