import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests exercise the bf16/fp16 code paths even on CPUs that only emulate them, where the modules would
# otherwise train in 32-true (lightning_transfer.precision); the tests of that fallback unset this.
os.environ.setdefault("LIGHTNING_TRANSFER_KEEP_EMULATED_PRECISION", "1")

# Tests use tiny tensors: one intra-op thread avoids OpenMP spin-waiting against other processes
# (DDP workers, DataLoader workers), which made single tests 20x slower on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


# The longest tests first: pytest-xdist hands tests out in collection order, so the launch matrix, the
# demo and the notebooks (minutes each) start at once on separate workers instead of ending the run
# on one of them while the others idle.
LONGEST_FIRST = ("tests/test_launch_matrix.py", "tests/test_demo.py", "tests/test_notebooks.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each group stays
