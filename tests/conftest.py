import os

# Every process a test starts (the lightning-transfer command, DDP ranks, notebooks) inherits one OpenMP
# thread: five test workers share two cores, and OpenMP threads spin-waiting against the other processes
# doubled the CPU time of the transfer command's test (103 CPU-s in the suite against 45 s alone).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

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


# The longest tests first, longest of all first (the "longest processing time first" rule for packing
# jobs on parallel workers). scripts/test.sh runs pytest-xdist with `--dist load --maxschedchunk 1`: each
# worker starts with the next two tests in this order, then takes one more whenever it finishes one. So
# the order below puts one long test and one short test in each worker's first pair, and the other long
# tests next: the longest start at once on separate workers instead of queueing behind each other and
# ending the run on one worker while the others idle. Seconds measured on the 2-core development machine
# with 5 workers (`--durations`, 2026-12-07); only their order matters.
EXPECTED_SECONDS = {
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[simclr_mnist]": 380,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[minilm]": 350,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[bert_reviews]": 285,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[sst2]": 220,
    "tests/transfer/test_transfer_command.py::test_an_image_folder_gives_results_a_report_and_exports_and_a_rerun_skips_every_stage": 205,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[simclr_cifar10]": 200,
    "tests/test_readme.py::test_readme_bash_block_runs[lightning-transfer transfer my_images --output-dir runs/my_i]": 200,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[wikitext]": 100,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[imagenet]": 100,
    "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16[stl10]": 70,
    "tests/transfer/test_transfer_command.py::test_two_ddp_processes_run_every_stage_once": 60,
}
LONG_FILES = (
    "tests/test_notebooks.py",
    "tests/test_readme.py",
    "tests/test_ddp.py",
    "tests/test_cli.py",
    "tests/data/test_litdata_ddp.py",
)


def pytest_collection_modifyitems(config, items):
    longest = sorted((item for item in items if item.nodeid in EXPECTED_SECONDS), key=lambda i: -EXPECTED_SECONDS[i.nodeid])
    long_files = [item for item in items if item.nodeid not in EXPECTED_SECONDS and item.nodeid.split("::")[0] in LONG_FILES]
    rest = [item for item in items if item.nodeid not in EXPECTED_SECONDS and item.nodeid.split("::")[0] not in LONG_FILES]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    first_pairs = [item for pair in zip(longest[:workers], rest[:workers]) for item in pair]
    pairs = len(first_pairs) // 2
    items[:] = first_pairs + longest[pairs:] + long_files + rest[pairs:]
