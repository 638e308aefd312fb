import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The tiny LLaVA-format dataset (PNG images, text-only and bad records)."""
    from spatialgeo_core.training.smoke_dataset import write_tiny_dataset
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core CI machine two
    OpenMP threads make step times jump by seconds; torchrun's ranks run one thread each too.
    Module scope: it must be in place before the module-scoped training runs (an exact-resume
    comparison needs the same thread count on both sides)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
