"""Fixtures shared by the test modules.

No test may reach the network: weights are never downloaded (RETINANET_OFFLINE, inherited by the
scripts the tests start), and torch's hub cache is an empty temporary folder made for the test run, so a
cache on the machine cannot change what ``--pretrained auto`` finds.
"""
import os
import shutil
import tempfile

import pytest

from scripts import single_thread

os.environ["RETINANET_OFFLINE"] = "1"
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="retinanet-test-torch-home-")
# The reduced-precision verdicts of this run only: each test run checks its layers afresh.
os.environ["RETINANET_CACHE_DIR"] = tempfile.mkdtemp(prefix="retinanet-test-cache-")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from several threads, and on a busy machine the threads contend."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """``module_tmp(name)`` makes a folder for a module-scoped fixture; all are removed when the module's
    tests are done. Trained runs hold checkpoints of 100+ MB each, and the suite would otherwise leave
    gigabytes behind (per-test folders go as each test passes: tmp_path_retention_policy in pytest.ini)."""
    made = []

    def make(name):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path)


# The test that is running, for `make test` to name when the process dies of a signal: a crash in
# native code can kill the process before pytest (or faulthandler) prints anything.
LAST_STARTED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
                            "last_test_started")


def pytest_runtest_logstart(nodeid, location):
    os.makedirs(os.path.dirname(LAST_STARTED), exist_ok=True)
    with open(LAST_STARTED, "w") as record:
        record.write(nodeid + "\n")
