import os
import warnings

import pytest
import torch

os.environ.setdefault("FORETELL_NO_PROGRESS", "1")
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
