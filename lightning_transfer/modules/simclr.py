"""SimCLR (Chen et al. 2020): contrastive pretraining of an image encoder.

One training step: two augmented views of each image (made by the DataModule) go through the
encoder f and the projection head g; NT-Xent pulls the two views of an image together and pushes
all other views of the (global) batch away. An online linear probe on detached features and a kNN
classifier monitor representation quality during pretraining without touching the encoder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_transfer.distributed import gather_no_grad, rank, world_size
from lightning_transfer.errors import UserInputError
from lightning_transfer.evaluation import WeightedMean, knn_predict
from lightning_transfer.losses import nt_xent_loss
from lightning_transfer.models.encoder_handoff import HANDOFF_KEY, encoder_marker, save_encoder
from lightning_transfer.models.vision import (
    ProjectionHead,
    build_backbone,
    resolve_memory_format,
    set_memory_format,
    to_memory_format,
)
from lightning_transfer.modules.base import OptimizedModule
from lightning_transfer.optim import split_decay_groups

LR_SCALING = ("none", "linear", "sqrt")


class SimCLRModule(OptimizedModule):
    """SimCLR pretraining. Batches are ``{"views": (v1, v2), "labels": y}`` for training (labels
    used only by the online probe; ``-1`` = unlabeled) and ``{"images", "labels"}`` for validation.

    Encoder: ``backbone`` (a name for :func:`build_backbone`, or an ``nn.Module`` with
    ``feature_dim``); head: ``ProjectionHead(feature_dim, projection_hidden_dim, projection_dim,
    projection_layers)``. Optimizer: LARS by default (bias and norm parameters excluded from decay
    and adaptation), warmup then cosine per step. ``lr_scaling="linear"`` uses
    ``lr * global_batch / 256`` (the paper's 0.3 x B/256 with LARS), ``"sqrt"``:
    ``lr * sqrt(global_batch)`` (0.075 x sqrt(B), better for small batches).
    ``num_classes`` sizes the probe; ``None`` takes it from the DataModule (0 turns probe and kNN off).
    A bad optimizer or schedule setting raises :class:`~lightning_transfer.errors.UserInputError` here,
    at construction (:meth:`~lightning_transfer.modules.base.OptimizedModule.validate_optimization_settings`).
    ``compile=True`` compiles backbone and head with ``torch.compile`` when training starts (speed only;
    see :class:`~lightning_transfer.modules.base.OptimizedModule`).
    ``memory_format`` (``"channels_last"``, the default, or ``"contiguous"``): the memory layout of a named
    backbone's convolution filters and of the images it encodes (speed only: channels_last convolutions
    are faster on CPU and GPU; :func:`~lightning_transfer.models.vision.set_memory_format`). Checkpoints
    and exports hold contiguous weights either way. A custom backbone module keeps its own layout.

    A training step never reads a tensor's value on the host (no host-device synchronization): the
    probe skips unlabeled images by ``ignore_index`` and counts on the device, and ``train/loss`` goes
    to the loggers (every ``log_every_n_steps``), not to the progress bar (Lightning reads progress-bar
    values with ``.item()`` after every step).
    """

    checkpoint_metric = ("val/knn_acc", "max")  # the best checkpoint (callbacks.BestCheckpoint): highest kNN accuracy

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        in_channels: int = 3,
        small_images: bool = True,
        pretrained_weights: str | None = None,
        feature_dim: int | None = None,
        width: int = 32,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_layers: int = 2,
        temperature: float = 0.5,
        gather: bool = True,
        optimizer: str = "lars",
        lr: float = 0.3,
        lr_scaling: str = "linear",
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int | None = None,
        warmup_fraction: float = 0.1,
        schedule: str = "cosine",
        min_lr_factor: float = 0.0,
        num_classes: int | None = None,
        probe_lr: float = 0.1,
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        compile: bool = False,
        memory_format: str = "channels_last",
    ):
        super().__init__()
        if lr_scaling not in LR_SCALING:
            raise UserInputError(f"unknown lr_scaling {lr_scaling!r}; choose one of {', '.join(LR_SCALING)}")
        if temperature <= 0:
            raise UserInputError(f"temperature must be > 0, got {temperature}")
        resolve_memory_format(memory_format)  # a bad name fails here, before any model is built
        # A custom backbone module is not a hyperparameter: checkpoints hold plain values only (they load
        # with torch.load(weights_only=True)); its weights are in the state dict, and
        # load_from_checkpoint(path, backbone=<the same module>) rebuilds it.
        self._custom_backbone = isinstance(backbone, nn.Module)
        self.save_hyperparameters(ignore=["backbone"] if self._custom_backbone else None)
        if self._custom_backbone:
            self.hparams.backbone = None
        self.validate_optimization_settings()
        self.backbone, self.feature_dim = build_backbone(
            backbone, in_channels, small_images, pretrained_weights, feature_dim, width
        )
        # A custom module is the user's: it may reshape with .view(), which a channels_last input breaks.
        self._memory_format = (
            torch.contiguous_format if self._custom_backbone else set_memory_format(self.backbone, memory_format)
        )
        self.projection = ProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim, projection_layers)
        self.probe: nn.Linear | None = None
        if num_classes:
            self._build_probe(num_classes)

    # ---------------------------------------------------------------- set-up
    def _build_probe(self, num_classes: int) -> None:
        self.probe = nn.Linear(self.feature_dim, num_classes)
        self.train_probe_acc = WeightedMean()  # correct / labeled, updated on the device (no host read per step)
        self.val_probe_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_knn_acc = MulticlassAccuracy(num_classes, average="micro")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule: Any = getattr(self.trainer, "datamodule", None)  # any DataModule (duck-typed)
        channels = getattr(datamodule, "num_channels", None)
        if channels is not None and channels != self.hparams.in_channels and not self._custom_backbone:
            raise UserInputError(
                f"the data has {channels} channel(s) but model.in_channels={self.hparams.in_channels}; set model.in_channels: {channels}"
            )
        if self.hparams.num_classes is None and self.probe is None:
            if hasattr(datamodule, "setup"):
                datamodule.setup(stage)
            classes = getattr(datamodule, "num_classes", None) or 0
            self.hparams.num_classes = classes  # saved with the checkpoint, so loading rebuilds the probe
            if classes:
                self._build_probe(classes)

    def learning_rate(self) -> float:
        batch = self.trainer.train_dataloader.batch_size if self.trainer.train_dataloader is not None else 256
        global_batch = batch * self.trainer.world_size * self.trainer.accumulate_grad_batches
        scale = {"none": 1.0, "linear": global_batch / 256, "sqrt": math.sqrt(global_batch)}[self.hparams.lr_scaling]
        return self.hparams.lr * scale

    def param_groups(self) -> list[dict]:
        encoder = [(n, p) for n, p in self.named_parameters() if not n.startswith("probe.")]
        groups = split_decay_groups(encoder, self.hparams.weight_decay)
        if self.probe is not None:  # plain SGD/Adam step for the probe: no LARS adaptation, no decay
            groups.append(
                {
                    "params": list(self.probe.parameters()),
                    "lr": self.hparams.probe_lr,
                    "weight_decay": 0.0,
                    "lars_exclude": True,
                }
            )
        return groups

    def configure_optimizers(self):
        self.total_steps()  # makes the Trainer load the train dataloader, whose batch size scales the LR
        return super().configure_optimizers()

    # ---------------------------------------------------------------- steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features h = f(x), ``B x feature_dim`` (what fine-tuning transfers), for images
        ``B x C x H x W`` in any memory layout (taken to the backbone's ``memory_format`` here)."""
        return self.backbone(to_memory_format(images, self._memory_format))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        view1, view2 = batch["views"]
        features = self(torch.cat([view1, view2]))  # one pass over both views: 2B x F
        z1, z2 = self.projection(features).chunk(2)
        loss = nt_xent_loss(z1, z2, self.hparams.temperature, gather=self.hparams.gather)
        # Not on the progress bar: Lightning reads every progress-bar value with .item() after each step
        # (a host-device synchronization); the loggers get it every log_every_n_steps.
        self.log("train/loss", loss)
        if self.probe is not None:
            loss = loss + self._probe_loss(features[: len(view1)].detach(), batch["labels"])
        return loss

    def _probe_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Logged on every process and step, labels or not: the epoch-end sync of the metric is a
        # collective, and a process that never logged it would leave the others waiting (DDP hang).
        assert self.probe is not None  # training_step calls this only with a probe
        self.log("train/probe_acc", self.train_probe_acc, on_step=False, on_epoch=True)
        # Unlabeled rows (-1) are ignored without selecting the labeled ones, whose number only the device
        # knows (a host-device synchronization per step): the summed loss over the labeled rows divided by
        # their count is their mean, and a batch without labels gives 0 with zero gradients (the probe
        # stays in the graph, as DDP needs).
        targets = labels.clamp(min=-1)
        labeled = targets >= 0
        count = labeled.sum()
        logits = self.probe(features.float())
        probe_loss = F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum") / count.clamp(min=1)
        self.train_probe_acc.update(((logits.detach().argmax(-1) == targets) & labeled).sum(), count)
        return probe_loss

    def on_validation_epoch_start(self) -> None:
        self._bank = self._compute_bank()

    @torch.no_grad()
    def _compute_bank(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Features and labels of clean training images for the kNN monitor, each process
        encoding its share, then gathered."""
        datamodule: Any = getattr(self.trainer, "datamodule", None)  # any DataModule (duck-typed)
        if self.probe is None or self.hparams.knn_k <= 0 or not hasattr(datamodule, "bank_dataloader"):
            return None
        loader = datamodule.bank_dataloader()
        if loader is None:
            return None
        features, labels = [], []
        for i, batch in enumerate(loader):
            if i % world_size() != rank():
                continue
            batch = datamodule.on_after_batch_transfer(self.transfer_batch_to_device(batch, self.device, 0), 0)
            features.append(self(batch["images"]).float())
            labels.append(batch["labels"])
        feats = torch.cat(features) if features else torch.zeros(0, self.feature_dim, device=self.device)
        labs = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=self.device)
        return gather_no_grad(feats), gather_no_grad(labs)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.probe is None:
            return
        # Monitors measure labeled images only: an unlabeled one (-1, e.g. STL-10's unlabeled split)
        # is not an error. Logged on every batch, so that every process takes part in the epoch-end sync.
        labeled = batch["labels"] >= 0
        images, labels = batch["images"][labeled], batch["labels"][labeled]
        features = self(images).float() if len(labels) else None
        if features is not None:
            self.val_probe_acc(self.probe(features), labels)
        self.log("val/probe_acc", self.val_probe_acc, prog_bar=True)
        if self._bank is not None and len(self._bank[0]):
            if features is not None:
                scores = knn_predict(
                    features, *self._bank, self.probe.out_features, self.hparams.knn_k, self.hparams.knn_temperature
                )
                self.val_knn_acc(scores, labels)
            self.log("val/knn_acc", self.val_knn_acc, prog_bar=True)

    # ---------------------------------------------------------------- export
    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights, keys without any module prefix (load into the same backbone)."""
        return {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}

    def encoder_config(self) -> dict[str, Any] | None:
        """The backbone's architecture record (:mod:`~lightning_transfer.models.encoder_config`), or None
        for a custom backbone module, which no file can rebuild."""
        if self._custom_backbone:
            return None
        hp = self.hparams
        return {
            "modality": "image",
            "backbone": hp.backbone,
            "in_channels": hp.in_channels,
            "small_images": hp.small_images,
            "width": hp.width,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Mark the checkpoint for fine-tuning (:mod:`~lightning_transfer.models.encoder_handoff`): the
        backbone's description, its weights under ``backbone.``."""
        checkpoint[HANDOFF_KEY] = encoder_marker("simclr", "image", self.encoder_config(), "backbone.")

    def export_encoder(self, path: str | Path) -> Path:
        """Write the encoder alone into the directory ``path`` (``encoder.safetensors`` +
        ``encoder.json``, see :func:`~lightning_transfer.models.encoder_handoff.save_encoder`), for
        ``FineTuneModule(pretrained=path)`` and other projects. Returns ``path``. A custom backbone module
        cannot be rebuilt from a file: :class:`UserInputError` (save ``self.backbone.state_dict()`` instead)."""
        if self._custom_backbone:
            raise UserInputError(
                "export_encoder needs a named backbone: a custom module cannot be rebuilt from a file; "
                "save self.backbone.state_dict() and rebuild your module yourself"
            )
        config = self.encoder_config()
        assert config is not None  # a named backbone always has a config
        return save_encoder(path, self.backbone, config, kind="simclr")
