"""The same skies whatever runs the tasks: serially, threads, processes, a dask cluster."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from skyeq import SkyStat, match_sky, synthetic


@pytest.fixture(scope="module")
def mosaic():
    # groups, a DQ array and every method's measurements (global+match)
    return synthetic.exposures(3, detectors=(1, 2), shape=(160, 160), seed=9,
                               dq_fraction=0.01)


def run(m, executor):
    return match_sky(m.data, m.wcs, groups=m.groups, dq=m.dq, method="global+match",
                     stat=SkyStat("median", nclip=3), executor=executor)


def test_threads_and_processes_give_bit_identical_skies(mosaic):
    serial = run(mosaic, None)
    assert np.isfinite(serial.sky).all()
    for workers in (1, 2, 3):
        with ThreadPoolExecutor(workers) as pool:
            assert_array_equal(run(mosaic, pool).sky, serial.sky)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        got = run(mosaic, pool)
    assert_array_equal(got.sky, serial.sky)
    assert_array_equal(got.local, serial.local)


def test_a_dask_cluster_gives_bit_identical_skies(mosaic):
    distributed = pytest.importorskip("distributed")
    serial = run(mosaic, None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            got = run(mosaic, client.get_executor())
    assert_array_equal(got.sky, serial.sky)
    assert_array_equal(got.local, serial.local)
