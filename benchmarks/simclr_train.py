"""SimCLR training end to end (data loading, two-view augmentation, ResNet-18 forward/backward, LARS
step): ours vs lightly's reference pipeline.

Ours, as :class:`~lightning_transfer.data.images.ImageDataModule` and
:class:`~lightning_transfer.SimCLRModule` run it: a DataLoader over uint8 images whose collate function
(:class:`~lightning_transfer.data.images.BatchTransform`) augments the whole uint8 batch twice with
:class:`~lightning_transfer.data.augment.SimCLRAugmentation`; one backbone pass over both views,
:class:`~lightning_transfer.models.vision.ProjectionHead`,
:func:`~lightning_transfer.losses.nt_xent_loss` and our LARS.
lightly, as its SimCLR examples run it: a DataLoader whose dataset turns each stored image into a PIL
image (as torchvision's CIFAR-10/STL-10 do) and applies ``SimCLRTransform`` per image, default collate,
one backbone pass per view, ``SimCLRProjectionHead``, ``NTXentLoss`` and lightly's LARS.
Both: the same torchvision ResNet-18 (:func:`build_backbone`; 3x3 stem without max-pool at 32 px),
the same batch, temperature 0.5, lr 0.3, momentum 0.9, weight decay 1e-6, the same number of DataLoader
workers and the same precision; SimCLR augmentation defaults (blur off at 32 px, p=0.5 at 96 px).
Images are random uint8 arrays (the cost does not depend on the content).

Measured in one process: the two sides alternate, each round pulling ``--steps`` batches from its own
DataLoader and training on them, one warm-up round excluded, median over the rounds. Images per
CPU-second of this process with ``--workers 0`` (the default: the data work then runs in this process
and is counted), per wall-second with workers. Memory: see ``_common.PeakMemory``.

    python benchmarks/simclr_train.py --quick     # batch 64, 1 step per round, ~2-3 minutes on one CPU thread
    python benchmarks/simclr_train.py --device cuda --batch 256 --workers 8 --precision bf16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Clock, PeakMemory, alternate, fmt_mem, machine, pick_device, setup_threads  # noqa: E402

LR, MOMENTUM, WEIGHT_DECAY, TEMPERATURE = 0.3, 0.9, 1e-6, 0.5


class PILDataset(Dataset):
    """HWC uint8 arrays -> ``transform(PIL image)``, label: what torchvision's CIFAR10/STL10 datasets do."""

    def __init__(self, arrays: np.ndarray, transform):
        self.arrays, self.transform = arrays, transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.arrays[index])), 0


def endless(loader: DataLoader):
    while True:
        yield from loader


def ours_side(arrays: np.ndarray, size: int, blur: float, small: bool, args, device, dtype):
    from lightning_transfer.data.augment import SimCLRAugmentation
    from lightning_transfer.data.images import BatchTransform, TensorImageDataset
    from lightning_transfer.losses import nt_xent_loss
    from lightning_transfer.models.vision import ProjectionHead, build_backbone
    from lightning_transfer.optim import build_optimizer, split_decay_groups

    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()  # N x 3 x S x S uint8
    dataset = TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long))
    collate = BatchTransform(SimCLRAugmentation(size, blur_prob=blur), views=2, name="train", deferred=False, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
                        collate_fn=collate, persistent_workers=args.workers > 0)
    backbone, dim = build_backbone("resnet18", 3, small_images=small)
    model = torch.nn.ModuleDict({"backbone": backbone, "projection": ProjectionHead(dim, 2048, 128, 2)}).to(device).train()
    optimizer = build_optimizer("lars", split_decay_groups(model.named_parameters(), WEIGHT_DECAY), lr=LR,
                                weight_decay=WEIGHT_DECAY, momentum=MOMENTUM)
    batches = endless(loader)

    def run():
        for _ in range(args.steps):
            view1, view2 = (v.to(device, non_blocking=True) for v in next(batches)["views"])
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                z1, z2 = model["projection"](model["backbone"](torch.cat([view1, view2]))).chunk(2)
                loss = nt_xent_loss(z1.float(), z2.float(), TEMPERATURE, gather=False)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def lightly_side(arrays: np.ndarray, size: int, blur: float, small: bool, args, device, dtype):
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from lightly.utils.lars import LARS

    from lightning_transfer.models.vision import build_backbone

    transform = SimCLRTransform(input_size=size, cj_prob=0.8, cj_strength=1.0, cj_bright=0.8, cj_contrast=0.8,
                                cj_sat=0.8, cj_hue=0.2, min_scale=0.08, random_gray_scale=0.2, gaussian_blur=blur,
                                sigmas=(0.1, 2.0), hf_prob=0.5, normalize={"mean": [0.5] * 3, "std": [0.5] * 3})
    loader = DataLoader(PILDataset(arrays, transform), batch_size=args.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    backbone, dim = build_backbone("resnet18", 3, small_images=small)
    model = torch.nn.ModuleDict({"backbone": backbone, "projection": SimCLRProjectionHead(dim, 2048, 128)}).to(device).train()
    optimizer = LARS(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    criterion = NTXentLoss(temperature=TEMPERATURE)
    batches = endless(loader)

    def run():
        for _ in range(args.steps):
            (x0, x1), _labels = next(batches)
            x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                z0 = model["projection"](model["backbone"](x0))
                z1 = model["projection"](model["backbone"](x1))
                loss = criterion(z0.float(), z1.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 step at batch 64")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, the same for both sides")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="training steps per round (default 2 quick, 4)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--sizes", default="32,96")
    args = parser.parse_args()
    device = pick_device(args.device)
    threads = setup_threads(args.threads or None)
    args.steps = args.steps or (1 if args.quick else 4)
    reps = 3 if args.quick else 7
    clock = Clock(device)
    if args.workers > 0 and device.type == "cpu":  # worker CPU time is not this process's: use wall time
        clock.cuda, clock.unit = False, "wall-second"
        clock.now = __import__("time").perf_counter
    memory = PeakMemory(device)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    from lightly import __version__ as lightly_version

    print(f"torch {torch.__version__}, lightly {lightly_version}; {machine(device)}; {threads} thread(s), "
          f"{args.workers} DataLoader workers, {args.precision}; batch {args.batch} (2 views each), {args.steps} steps "
          f"per round, {reps} alternating rounds, median, warm-up excluded; img/s = source images per {clock.unit}")
    print(f"memory: {memory.what}, MiB")
    print(f"{'size':>5} {'stem':>6} {'blur':>5} {'ours img/s':>11} {'lightly img/s':>14} {'ours/lightly':>13} "
          f"{'ours MiB':>9} {'lightly MiB':>12}")
    for size in (int(s) for s in args.sizes.split(",")):
        small, blur = size <= 64, 0.0 if size <= 64 else 0.5
        arrays = np.random.default_rng(0).integers(0, 256, (max(4 * args.batch, 256), size, size, 3), dtype=np.uint8)
        sides = {"ours": ours_side(arrays, size, blur, small, args, device, dtype),
                 "lightly": lightly_side(arrays, size, blur, small, args, device, dtype)}
        units = args.batch * args.steps
        rates = alternate({name: (fn, units) for name, fn in sides.items()}, reps, clock)
        mems = {name: memory.measure(fn) for name, fn in sides.items()}
        print(f"{size:>5} {'3x3' if small else '7x7+mp':>6} {blur:>5} {rates['ours']:>11.1f} {rates['lightly']:>14.1f} "
              f"{rates['ours'] / rates['lightly']:>12.2f}x {fmt_mem(mems['ours']):>9} {fmt_mem(mems['lightly']):>12}",
              flush=True)


if __name__ == "__main__":
    main()
