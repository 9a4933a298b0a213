"""Fault injection in `match_sky`'s tasks: errors name their image, the rest is cancelled.

One image's measurement fails (an array-like image whose ``__array__`` raises, or
`skyeq._measure.region_statistics` made to raise for one image; or its WCS in the
footprint phase), serially and on a ``ThreadPoolExecutor(2)``. The caller must get the
original exception type, naming the image (its ``names=`` entry, else ``#k``); the
tasks not yet started must be cancelled (counted by the ``__array__`` calls that begin
after the failure, with many more images than workers); and a `KeyboardInterrupt` (or
any `BaseException`) inside a task must reach the caller as it is.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

import skyeq._measure
from skyeq import SkyStat, match_sky, synthetic

WORKERS = 2
NIMAGES = 12  # many more images than workers
STAT = SkyStat("median", nclip=1)


class Journal:
    """A thread-safe record of image reads: which image, and whether it failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, int]] = []

    def add(self, what: str, k: int) -> None:
        """Record ``what`` ('read' or 'fail') for image ``k``."""
        with self._lock:
            self.events.append((what, k))

    def reads_after_failure(self) -> list[int]:
        """The images whose read began after the first failure."""
        events = list(self.events)
        first = next(i for i, (what, _) in enumerate(events) if what == "fail")
        return [k for what, k in events[first + 1:] if what == "read"]

    def reads(self) -> list[int]:
        """Every image read, in order."""
        return [k for what, k in self.events if what == "read"]


class LazyImage:
    """An image read when converted (like a file): records each read, may fail or be slow.

    Parameters
    ----------
    data : ndarray
        The pixels.
    k : int
        Its index (for the journal).
    journal : Journal
        Where reads and failures are recorded.
    error : BaseException, optional
        Raised by ``__array__`` instead of returning the pixels.
    delay : float, optional
        Seconds each read takes.
    """

    def __init__(self, data, k, journal, error=None, delay=0.0):
        self.data, self.k, self.journal = data, k, journal
        self.error, self.delay = error, delay
        self.shape, self.ndim, self.dtype = data.shape, data.ndim, data.dtype

    def __array__(self, dtype=None, copy=None):
        if self.error is not None:
            self.journal.add("fail", self.k)
            raise self.error
        self.journal.add("read", self.k)
        time.sleep(self.delay)
        return self.data if dtype is None else self.data.astype(dtype)


class NeedsTwo(Exception):
    """An exception whose constructor does not take one message."""

    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


@pytest.fixture(scope="module")
def mosaic():
    m = synthetic.dithers(NIMAGES, shape=(32, 32), seed=4, point_sources=5)
    # compile the kernels now: a first task that compiles for seconds would delay
    # noticing a failure
    match_sky(m.data[:2], m.wcs[:2], method="global+match", stat=STAT)
    return m


@contextmanager
def executor(kind):
    """Yield None (serial) or a fresh ThreadPoolExecutor(WORKERS), shut down after."""
    if kind == "serial":
        yield None
        return
    with ThreadPoolExecutor(WORKERS) as pool:
        yield pool


def lazy_images(m, journal, bad, error, delays=None):
    """The mosaic's images as `LazyImage`\\ s, image ``bad`` raising ``error``."""
    delays = delays or {}
    return [LazyImage(a, k, journal, error if k == bad else None, delays.get(k, 0.01))
            for k, a in enumerate(m.data)]


def _notes(err: BaseException) -> str:
    """The exception's message and notes, as one string."""
    return "\n".join([str(err), *getattr(err, "__notes__", [])])


# --------------------------------------------------------------------------- the error


@pytest.mark.parametrize("kind", ["serial", "threads"])
@pytest.mark.parametrize("method", ["local", "match"])
@pytest.mark.parametrize("named", [True, False])
def test_a_failing_read_names_its_image_and_keeps_its_type(mosaic, kind, method, named):
    journal = Journal()
    bad = 5
    data = lazy_images(mosaic, journal, bad, OSError("the file is gone"))
    names = [f"exp{k:02d}.fits" for k in range(NIMAGES)] if named else None
    label = f"exp{bad:02d}.fits" if named else f"#{bad}"
    with executor(kind) as pool, pytest.raises(OSError) as info:
        match_sky(data, mosaic.wcs, method=method, stat=STAT, names=names, executor=pool)
    assert type(info.value) is OSError
    assert re.search(rf"(^|\W){re.escape(label)}(\W|$)", _notes(info.value)), _notes(info.value)
    assert "the file is gone" in str(info.value)


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_an_exception_that_takes_no_single_message_keeps_its_type_and_gets_a_note(mosaic,
                                                                                  kind):
    journal = Journal()
    data = lazy_images(mosaic, journal, 3, NeedsTwo("x", "y"))
    with executor(kind) as pool, pytest.raises(NeedsTwo) as info:
        match_sky(data, mosaic.wcs, method="local", stat=STAT, executor=pool)
    assert "#3" in _notes(info.value)


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_a_failing_statistic_names_its_image(mosaic, kind, monkeypatch):
    real = skyeq._measure.region_statistics
    target = mosaic.data[7]
    calls = []

    def failing(stat, image, mask, regions, whole=False, scatter=False):
        calls.append(image is target)
        if image is target:
            raise FloatingPointError("the kernel gave up")
        return real(stat, image, mask, regions, whole, scatter)

    monkeypatch.setattr(skyeq._measure, "region_statistics", failing)
    names = [f"d{k}" for k in range(NIMAGES)]
    with executor(kind) as pool, pytest.raises(FloatingPointError,
                                               match=r"\bd7\b.*the kernel gave up"):
        match_sky(mosaic.data, mosaic.wcs, method="match", stat=STAT, names=names,
                  executor=pool)
    assert any(calls)  # the patched function ran, and failed on image 7


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_a_failing_group_names_its_images(mosaic, kind):
    journal = Journal()
    data = lazy_images(mosaic, journal, 4, ValueError("bad pixels"))
    groups = [k // 2 for k in range(NIMAGES)]  # image 4 shares group 2 with image 5
    with executor(kind) as pool, pytest.raises(ValueError) as info:
        match_sky(data, mosaic.wcs, method="global+match", stat=STAT, groups=groups,
                  executor=pool)
    assert "#4" in _notes(info.value)


@pytest.mark.parametrize("kind", ["serial", "threads"])
def test_a_failing_wcs_names_its_image(mosaic, kind):
    wcs = list(mosaic.wcs)

    def broken(*args):
        raise RuntimeError("no distortion solution")

    wcs[9] = (broken, broken)
    names = [f"d{k}" for k in range(NIMAGES)]
    with executor(kind) as pool, pytest.raises(Exception) as info:
        match_sky(mosaic.data, wcs, method="match", stat=STAT, names=names, executor=pool)
    assert isinstance(info.value, RuntimeError | ValueError), repr(info.value)
    assert re.search(r"\bd9\b", _notes(info.value)), _notes(info.value)


def test_a_label_that_occurs_in_the_message_is_still_named(mosaic):
    journal = Journal()
    data = lazy_images(mosaic, journal, 5, OSError("read failed after 5 retries"))
    names = [str(k) for k in range(NIMAGES)]
    with pytest.raises(OSError) as info:
        match_sky(data, mosaic.wcs, method="local", stat=STAT, names=names)
    message = _notes(info.value)
    assert message != "read failed after 5 retries", message


# --------------------------------------------------------------------------- cancellation


def test_serially_nothing_is_read_after_a_failure(mosaic):
    journal = Journal()
    data = lazy_images(mosaic, journal, 4, OSError("the file is gone"))
    with pytest.raises(OSError):
        match_sky(data, mosaic.wcs, method="local", stat=STAT)
    assert journal.reads() == [0, 1, 2, 3]
    assert journal.reads_after_failure() == []


def test_on_threads_the_tasks_not_started_are_cancelled(mosaic):
    """After a failure each worker starts at most one more task (the race with the cancel).

    The first task fails; a failure behind a slower task is the next test.
    """
    journal = Journal()
    slow = dict.fromkeys(range(NIMAGES), 0.05)  # reads long enough for the cancel to win
    data = lazy_images(mosaic, journal, 0, OSError("the file is gone"), slow)
    with ThreadPoolExecutor(WORKERS) as pool:
        with pytest.raises(OSError, match="#0"):
            match_sky(data, mosaic.wcs, method="local", stat=STAT, executor=pool)
    late = journal.reads_after_failure()
    assert len(late) <= WORKERS, late
    assert len(journal.reads()) <= WORKERS


def test_on_threads_a_failure_behind_a_slow_task_cancels_the_rest(mosaic):
    journal = Journal()
    # image 0 takes 0.5 s to read; image 1 fails at once; the others take 10 ms each
    data = lazy_images(mosaic, journal, 1, OSError("the file is gone"), {0: 0.5})
    with ThreadPoolExecutor(WORKERS) as pool:
        t0 = time.perf_counter()
        with pytest.raises(OSError, match="#1"):
            match_sky(data, mosaic.wcs, method="local", stat=STAT, executor=pool)
    late = journal.reads_after_failure()
    assert len(late) <= WORKERS, f"read after the failure: {late}"
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("kind", ["serial", "threads"])
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_base_exception_in_a_task_propagates_as_it_is(mosaic, kind, error):
    journal = Journal()
    raised = error()
    data = lazy_images(mosaic, journal, 2, raised)
    with executor(kind) as pool, pytest.raises(error) as info:
        match_sky(data, mosaic.wcs, method="local", stat=STAT, executor=pool)
    assert info.value is raised
    assert len(journal.reads_after_failure()) <= (0 if kind == "serial" else WORKERS)


def test_the_pool_still_works_after_a_failure(mosaic):
    journal = Journal()
    data = lazy_images(mosaic, journal, 2, OSError("the file is gone"))
    with ThreadPoolExecutor(WORKERS) as pool:
        with pytest.raises(OSError):
            match_sky(data, mosaic.wcs, method="match", stat=STAT, executor=pool)
        good = match_sky(mosaic.data, mosaic.wcs, method="match", stat=STAT, executor=pool)
    serial = match_sky(mosaic.data, mosaic.wcs, method="match", stat=STAT)
    assert good.valid.all()
    np.testing.assert_array_equal(good.sky, serial.sky)
