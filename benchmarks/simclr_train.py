"""SimCLR training on the path users run: ``Trainer.fit`` on a folder of images, ours vs lightly's example pipeline.

Ours: ``Trainer.fit(SimCLRModule(backbone="resnet18", small_images=..., optimizer="lars", num_classes=0),
ImageDataModule(source="folder", root=<folder>, image_size=S))``, with the module's defaults otherwise
(``memory_format="channels_last"``; ``--memory-format`` changes it, ``--contiguous-too`` adds ours with
``"contiguous"`` as a third contender).
lightly, as its examples run it: ``torchvision.datasets.ImageFolder(root, transform=SimCLRTransform(input_size=S,
gaussian_blur=...))`` in a shuffling ``DataLoader`` (default collate), and a LightningModule with torchvision's
ResNet-18, ``SimCLRProjectionHead``, ``NTXentLoss`` and lightly's ``LARS`` (bias and norm parameters without
decay, lightly's ``get_weight_decay_parameters``) with lightly's ``CosineWarmupScheduler`` per step, one
backbone pass per view, as in lightly's SimCLR example.
Both: the same ResNet-18 (3x3 stride-1 stem without max-pool at <= 64 px, torchvision's stem above), projection
512 -> 2048 -> 128, temperature 0.5, lr 0.3 (not scaled with the batch), momentum 0.9, weight decay 1e-6, 10%
warmup then cosine; SimCLR augmentation defaults (blur off at 32 px, p=0.5 at 96 px), ImageNet normalization;
the same batch, DataLoader workers and ``Trainer(accelerator, devices=1, max_steps=--steps, precision,
logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
limit_val_batches=0)``. Both log the loss every step (``self.log``).

Images: ``--images`` random RGB PNGs of S px in a temporary ImageFolder (one class folder), decoded by each
side's own loader every step (the cost does not depend on the content).

Measured in one process: the contenders alternate (every other round in reverse order), one warm-up round
excluded, median over ``--rounds`` rounds. A round is one ``Trainer.fit`` of ``--steps`` steps on the contender's module (a new
Trainer each round, the same module, so the weights keep training); the clock runs from Lightning's
``on_train_start`` to ``on_train_end``: every batch's loading, decoding, augmentation and transfer, forward,
backward, optimizer step and logging, not the Trainer's set-up. Images per second = source images
(batch x steps) per second, by two clocks, each with its own ratio:

- CPU-seconds of this process (``time.process_time``; CPU with ``--workers 0`` only, where all the work runs in
  this process): other processes on a shared machine do not inflate it. It undercounts single-threaded phases
  with ``--threads 2``: while one core decodes and augments PIL images one by one (lightly), the other idles
  and is not counted, so it favours the side whose data work is single-threaded.
- wall-seconds (after a CUDA synchronize on CUDA): what a user waits for; on a busy machine other processes
  inflate it, and alternating the contenders spreads that noise over both.

``--threads`` (default 2) torch threads for both.

Precision: ``32-true`` and ``bf16-mixed``. On a CPU without native bf16 kernels (no AVX-512/AMX: ``bf16-mixed``
runs PyTorch's reference kernels, 15-70x slower, and our modules train in ``32-true`` instead; see
:mod:`lightning_transfer.precision`) the bf16 row is skipped unless ``--emulated-bf16`` asks for it; then both
sides run the emulated kernels (``LIGHTNING_TRANSFER_KEEP_EMULATED_PRECISION=1``), at equal precision.

``--profile`` adds, per contender, the top operators of one more fit under ``torch.profiler`` (self CPU time).
``--memory`` adds the peak memory of one more fit per contender (``_common.PeakMemory``).

    python benchmarks/simclr_train.py --quick     # 32 px, fp32, batch 64, 3 rounds of 2 steps: ~2-4 minutes on 2 threads
    python benchmarks/simclr_train.py             # 32 and 96 px, 5 rounds of 4 steps
    python benchmarks/simclr_train.py --device cuda --batch 256 --workers 8 --threads 0
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, alternate_timed, fmt_mem, machine, pick_device, setup_threads

LR, MOMENTUM, WEIGHT_DECAY, TEMPERATURE, WARMUP_FRACTION = 0.3, 0.9, 1e-6, 0.5, 0.1
PRECISIONS = ("32-true", "bf16-mixed")


def write_image_folder(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``root/images/<i>.png``: ``count`` random RGB images of ``size`` x ``size`` pixels."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return root


class TrainClock:
    """A Lightning callback's measurement: CPU-seconds of this process and wall-seconds (after a CUDA
    synchronize on CUDA) from ``on_train_start`` to ``on_train_end``."""

    def __init__(self, device: torch.device):
        import lightning.pytorch as pl

        outer = self
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def now() -> tuple[float, float]:
            sync()
            return time.process_time(), time.perf_counter()

        class _Callback(pl.Callback):
            def on_train_start(self, trainer, pl_module):
                outer.start = now()

            def on_train_end(self, trainer, pl_module):
                end = now()
                outer.cpu, outer.wall = end[0] - outer.start[0], end[1] - outer.start[1]

        self.callback, self.start, self.cpu, self.wall = _Callback(), (0.0, 0.0), 0.0, 0.0


def trainer_settings(args, precision: str, callbacks: list) -> dict:
    return dict(
        accelerator="gpu" if args.device.type == "cuda" else "cpu",
        devices=1,
        max_steps=args.steps,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def fit_round(make_fit: Callable[[list], None], device: torch.device) -> Callable[[], tuple[float, float]]:
    """One fit; returns the (CPU, wall) seconds its training took."""
    timer = TrainClock(device)

    def run() -> tuple[float, float]:
        make_fit([timer.callback])
        return timer.cpu, timer.wall

    return run


def ours(root: Path, size: int, args, precision: str, memory_format: str) -> Callable[[list], None]:
    import lightning.pytorch as pl

    from lightning_transfer import ImageDataModule, SimCLRModule

    data = ImageDataModule(
        source="folder",
        root=str(root),
        image_size=size,
        batch_size=args.batch,
        num_workers=args.workers,
        val_size=0,
        test_size=0,
    )
    extra = {} if memory_format is None else {"memory_format": memory_format}
    model = SimCLRModule(
        backbone="resnet18",
        small_images=size <= 64,
        optimizer="lars",
        lr=LR,
        lr_scaling="none",
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        temperature=TEMPERATURE,
        warmup_fraction=WARMUP_FRACTION,
        schedule="cosine",
        num_classes=0,
        **extra,
    )

    def fit(callbacks: list) -> None:
        pl.Trainer(**trainer_settings(args, precision, callbacks)).fit(model, datamodule=data)

    return fit


def lightly_example(root: Path, size: int, args, precision: str) -> Callable[[list], None]:
    import lightning.pytorch as pl
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.transforms import SimCLRTransform
    from lightly.utils.lars import LARS
    from lightly.utils.scheduler import CosineWarmupScheduler
    from torch import nn

    class SimCLR(pl.LightningModule):
        def __init__(self):
            super().__init__()
            resnet = torchvision.models.resnet18()
            if size <= 64:  # the CIFAR stem, as in lightly's CIFAR-10 benchmarks
                resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
                resnet.maxpool = nn.Identity()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = SimCLRProjectionHead(512, 2048, 128)
            self.criterion = NTXentLoss(temperature=TEMPERATURE)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

        def training_step(self, batch, batch_index):
            (x0, x1), _ = batch
            loss = self.criterion(self.forward(x0), self.forward(x1))
            self.log("train_loss_ssl", loss)
            return loss

        def configure_optimizers(self):
            params, no_decay = get_weight_decay_parameters([self.backbone, self.projection_head])
            optimizer = LARS(
                [{"params": params}, {"params": no_decay, "weight_decay": 0.0}],
                lr=LR,
                momentum=MOMENTUM,
                weight_decay=WEIGHT_DECAY,
            )
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=round(WARMUP_FRACTION * total), max_epochs=total)
            return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    transform = SimCLRTransform(input_size=size, gaussian_blur=0.0 if size <= 64 else 0.5)
    dataset = torchvision.datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    model = SimCLR()

    def fit(callbacks: list) -> None:
        pl.Trainer(**trainer_settings(args, precision, callbacks)).fit(model, train_dataloaders=loader)

    return fit


def profile_top(fit: Callable[[list], None], rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit([])
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 px, fp32 only, 3 rounds of 2 steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, the same for both sides")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="PNG files in the folder")
    parser.add_argument("--steps", type=int, default=None, help="training steps per round (default 2 quick, else 4)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default 3 quick, else 5)")
    parser.add_argument("--sizes", default=None, help="image sizes (default 32 quick, else 32,96)")
    parser.add_argument(
        "--precision",
        default=None,
        help=f"comma-separated, of {', '.join(PRECISIONS)} (default 32-true quick, else both)",
    )
    parser.add_argument(
        "--memory-format",
        default=None,
        choices=("channels_last", "contiguous"),
        help="ours: SimCLRModule(memory_format=...) (default: the module's default)",
    )
    parser.add_argument("--contiguous-too", action="store_true", help="also time ours with memory_format=contiguous")
    parser.add_argument("--emulated-bf16", action="store_true", help="run bf16-mixed on a CPU that only emulates it")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="ROWS", help="print the top ROWS operators per contender"
    )
    parser.add_argument("--memory", action="store_true", help="measure the peak memory of one fit per contender")
    args = parser.parse_args()
    args.device = pick_device(args.device)
    threads = setup_threads(args.threads or None)
    args.steps = args.steps or (2 if args.quick else 4)
    rounds = args.rounds or (3 if args.quick else 5)
    sizes = [int(s) for s in (args.sizes or ("32" if args.quick else "32,96")).split(",")]
    precisions = (args.precision or ("32-true" if args.quick else ",".join(PRECISIONS))).split(",")
    cpu_clock = args.device.type == "cpu" and args.workers == 0  # else the work is not all in this process
    memory = PeakMemory(args.device)

    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401  # it sets its loggers to INFO on import: quiet them after that

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    from lightly import __version__ as lightly_version
    from lightning import __version__ as lightning_version

    from lightning_transfer.precision import KEEP_ENV, cpu_emulates_bf16

    print(
        f"torch {torch.__version__}, lightning {lightning_version}, lightly {lightly_version}; {machine(args.device)}; "
        f"{threads} thread(s), {args.workers} DataLoader workers; batch {args.batch} (2 views each), {args.images} "
        f"PNGs, {args.steps} steps per fit, {rounds} alternating rounds, median, warm-up excluded; img/s = source "
        f"images per {'CPU-second of this process / ' if cpu_clock else ''}wall-second"
    )
    if args.memory:
        print(f"memory: {memory.what}, MiB")
    header = f"{'size':>5} {'precision':>10} {'contender':>18}"
    if cpu_clock:
        header += f" {'img/CPU-s':>9} {'vs lightly':>10}"
    print(header + f" {'img/wall-s':>10} {'vs lightly':>10}" + (f" {'MiB':>7}" if args.memory else ""))
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = write_image_folder(Path(tmp), args.images, size)
            for precision in precisions:
                if precision == "bf16-mixed" and args.device.type == "cpu" and cpu_emulates_bf16():
                    if not args.emulated_bf16:
                        print(
                            f"{size:>5} {precision:>10}  skipped: this CPU has no native bf16 kernels (our modules train "
                            "in 32-true here); --emulated-bf16 runs both sides on the emulated kernels"
                        )
                        continue
                    os.environ[KEEP_ENV] = "1"  # equal precision: ours too runs the emulated kernels
                fits = {"ours": ours(root, size, args, precision, args.memory_format)}
                if args.contiguous_too:
                    fits["ours (contiguous)"] = ours(root, size, args, precision, "contiguous")
                fits["lightly"] = lightly_example(root, size, args, precision)
                units = args.batch * args.steps
                rates = alternate_timed(
                    {name: (fit_round(fit, args.device), units) for name, fit in fits.items()}, rounds
                )
                for name in fits:
                    (cpu, wall), (peer_cpu, peer_wall) = rates[name], rates["lightly"]
                    line = f"{size:>5} {precision:>10} {name:>18}"
                    if cpu_clock:
                        line += f" {cpu:>9.1f} {cpu / peer_cpu:>9.2f}x"
                    line += f" {wall:>10.1f} {wall / peer_wall:>9.2f}x"
                    if args.memory:
                        line += f" {fmt_mem(memory.measure(lambda fit=fits[name]: fit([]))):>7}"
                    print(line, flush=True)
                if args.profile:
                    for name, fit in fits.items():
                        print(
                            f"\n--- {name}, {size} px, {precision}: one fit of {args.steps} steps, top operators by self CPU time"
                        )
                        print(profile_top(fit, args.profile), flush=True)
                os.environ.pop(KEEP_ENV, None)


if __name__ == "__main__":
    main()
