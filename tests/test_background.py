"""The second process that compiles kernels on a cold cache (`skyeq._kernels.background`)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from skyeq import _kernels
from skyeq._kernels import background


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.delenv("SKYEQ_BACKGROUND_COMPILE", raising=False)
    if background.cores() < 2:
        pytest.skip("one core: no child is started")


def test_nothing_or_unknown_parts_start_no_child(enabled):
    assert background.start([]) is None
    assert background.start(["geometry", "no-such-part"]) is None


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv("SKYEQ_BACKGROUND_COMPILE", "0")
    assert background.start(["geometry"]) is None


def test_child_compiles_or_loads_and_exits(enabled):
    # the session compiled the kernels: the child only loads them from the cache
    job = background.start(["geometry"])
    assert job is not None
    assert job.wait(timeout=120) is True
    assert job.done()
    assert job not in background._RUNNING


def test_killed_child_is_reported_and_reaped(enabled):
    job = background.start(["stats"])
    assert job is not None
    job.stop()
    assert job.done() and job.wait() is False
    assert job not in background._RUNNING


def test_child_env_imports_this_skyeq_and_starts_no_grandchild():
    env = background._child_env()
    root = env["PYTHONPATH"].split(os.pathsep)[0]
    assert (_kernels.__file__).startswith(root)
    assert env["SKYEQ_BACKGROUND_COMPILE"] == "0"


def test_unknown_part_in_the_child_fails():
    with pytest.raises(ValueError, match="unknown part"):
        background.compile_parts(["regions"])


def test_geometry_kernels_have_one_signature():
    # float64/int64 arrays and int64 scalars only: one compile per kernel
    _kernels.geometry.warmup()
    for name in _kernels._GEOMETRY:
        assert len(getattr(_kernels.geometry, name).signatures) == 1, name


def test_prepare_and_warm_on_a_warm_cache(enabled):
    assert _kernels.warm() is True
    _kernels.prepare([np.float32, np.dtype("float64")])  # all cached: no child, no wait
    assert not background._RUNNING
