"""SimCLR augmentation throughput per CPU core: our batched pipeline vs lightly's SimCLRTransform.

Both sides produce the two normalized float views of every image, with the same settings (SimCLR
defaults; blur off at 32 px, on at 224 px). lightly runs as its dataloaders do: the per-image
``SimCLRTransform`` on PIL images (the decoded dataset images), followed by stacking the views into
a batch (what ``default_collate`` does). Ours runs :func:`two_views` on a uint8 ``B x 3 x H x W``
batch: the recipe of ``lightning_transfer/data/augment.py`` executed by the batch plan
(``data/_augment_plan.py``) and kernels (``data/_augment_kernels.py``) whose speed this measures.
Inputs are random uint8 images (the cost of every op here does not depend on the content).

One process, one thread (``torch.set_num_threads(1)``, so the numbers are per core), the two sides
measured alternately, warm-up excluded, the median over the repetitions reported as source images
per CPU-second of this process (``time.process_time``: user + system time, page faults included,
time spent descheduled by other processes on a busy machine excluded), each image yielding two views.

    python benchmarks/augmentation.py            # ~1-2 minutes
    python benchmarks/augmentation.py --quick    # fewer repetitions
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image


def _lightly_transform(size: int, blur_prob: float):
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(
        input_size=size,
        cj_prob=0.8, cj_strength=1.0, cj_bright=0.8, cj_contrast=0.8, cj_sat=0.8, cj_hue=0.2,
        min_scale=0.08, random_gray_scale=0.2, gaussian_blur=blur_prob, sigmas=(0.1, 2.0), hf_prob=0.5,
        normalize={"mean": [0.5] * 3, "std": [0.5] * 3},
    )


def _time(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench(size: int, source: int, blur_prob: float, n_ours: int, n_lightly: int, reps: int) -> tuple[float, float]:
    from lightning_transfer.data.augment import SimCLRAugmentation, two_views

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(max(n_ours, n_lightly), source, source, 3), dtype=np.uint8)
    batch = torch.from_numpy(arrays[:n_ours]).permute(0, 3, 1, 2).contiguous()
    pil_images = [Image.fromarray(a) for a in arrays[:n_lightly]]

    ours = SimCLRAugmentation(size, blur_prob=blur_prob)
    theirs = _lightly_transform(size, blur_prob)
    generator = torch.Generator().manual_seed(0)

    def run_ours():
        two_views(ours, batch, generator)

    def run_lightly():
        views = [theirs(img) for img in pil_images]
        torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

    run_ours(), run_lightly()  # warm-up
    ours_rates, lightly_rates = [], []
    for _ in range(reps):
        ours_rates.append(n_ours / _time(run_ours))
        lightly_rates.append(n_lightly / _time(run_lightly))
    return statistics.median(ours_rates), statistics.median(lightly_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reps = 3 if args.quick else 9
    per_rep = 1 if args.quick else 2
    cases = [
        # size, source side, blur probability, images per rep: ours (one batch), lightly
        (32, 32, 0.0, 256, 64 * per_rep),
        (224, 256, 0.5, 64, 16 * per_rep),
    ]
    from lightly import __version__ as lightly_version

    print(f"torch {torch.__version__}, lightly {lightly_version}, 1 thread, {reps} alternating repetitions, "
          f"median; img/s = source images per CPU-second, 2 views each")
    print(f"{'size':>5} {'input':>8} {'blur':>5} {'ours img/s':>11} {'lightly img/s':>14} {'ours/lightly':>13}")
    for size, source, blur, n_ours, n_lightly in cases:
        ours, theirs = bench(size, source, blur, n_ours, n_lightly, reps)
        line = f"{size:>5} {f'{source}x{source}':>8} {blur:>5} {ours:>11.0f} {theirs:>14.0f} {ours / theirs:>12.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
