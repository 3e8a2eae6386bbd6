import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # spec_reader, corrupt helpers
sys.path.insert(0, str(HERE.parent / "data" / "format"))  # make_vectors

VECTORS = HERE.parent / "data" / "format"


@pytest.fixture(scope="session")
def vectors() -> Path:
    return VECTORS
