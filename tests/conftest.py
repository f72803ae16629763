import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/tiny.py


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny models run fastest on one thread (and two test workers do not fight); real models get all cores."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def verifier():
    """The tiny fp32 verifier most engine tests share (a module may define its own)."""
    from tiny import tiny_llama

    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def drafter(verifier):
    """A drafter that mostly agrees with `verifier` (its weights plus 5% noise)."""
    from tiny import perturbed

    return perturbed(verifier, noise=0.05)
