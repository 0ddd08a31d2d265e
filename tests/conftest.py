"""Fixtures shared by the test modules.

No test may reach the network: weights are never downloaded (RETINANET_OFFLINE, inherited by the
scripts the tests start), and torch's hub cache is an empty temporary folder made for the test run, so a
cache on the machine cannot change what ``--pretrained auto`` finds.
"""
import os
import tempfile

import pytest

from scripts import single_thread

os.environ["RETINANET_OFFLINE"] = "1"
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="retinanet-test-torch-home-")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from several threads, and on a busy machine the threads contend."""
    with single_thread():
        yield
