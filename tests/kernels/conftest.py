import sys
from pathlib import Path

import pytest

import zoo.kernels as K

sys.path.insert(0, str(Path(__file__).parent))  # kernel_reference helpers


@pytest.fixture(params=K.available_paths())
def path(request):
    """Each kernel path this CPU runs (avx512, avx2, portable), selected for the test and restored after."""
    previous = K.selected_path()
    K.set_path(request.param)
    yield request.param
    K.set_path(previous)
