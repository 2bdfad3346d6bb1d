import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import fullconv  # noqa: E402,F401  (registers the ops)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config, items):
    # CUDA-parametrised tests skip cleanly when no GPU is present.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in getattr(item, "callspec", None).params.values() if hasattr(item, "callspec") else False:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


ALGORITHMS = ["auto", "gemm", "direct"]


@pytest.fixture(params=ALGORITHMS)
def cpu_algorithm(request, monkeypatch):
    """Forces each CPU formulation (GEMM + col2im, direct) so every path meets the reference,
    not only the one the heuristic picks."""
    monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", request.param)
    return request.param
