"""Fine-tuning a pretrained encoder for classification, on images or on text.

``FineTuneModule(pretrained=...)`` takes the encoder of a SimCLR or BERT pretraining run (or of a
real pretrained BERT) and puts a linear classifier on its features. How much of the encoder trains
is the ``strategy``:

- ``linear``: linear probing. The encoder is frozen and kept in eval mode (BatchNorm statistics and
  dropout frozen too), only the head trains.
- ``full``: everything trains.
- ``partial``: the bottom of the encoder stays frozen: the stem (BERT embeddings, ResNet stem) and
  the first ``freeze_layers`` blocks above it (BERT layers, ResNet ``layer1..4``, convnet stages).
- ``gradual``: gradual unfreezing (ULMFiT, Howard & Ruder 2018): epoch 0 trains the head only, and
  each later epoch unfreezes one more block from the top.
- ``lp_ft``: linear probing for ``lp_epochs`` epochs, then full fine-tuning (LP-FT, Kumar et al.
  2022): a head fitted first distorts the pretrained features less once the encoder trains.

The blocks are :func:`~lightning_transfer.models.encoder_blocks.encoder_blocks`. A frozen block never
receives an update and always runs in eval mode, even after Lightning calls ``.train()`` (so
Lightning's "Found N module(s) in eval mode at the start of training" is expected for
``linear``, ``partial``, ``gradual`` and ``lp_ft``).
Learning rates: the head trains at ``lr``; encoder block ``i`` counted from the top (0 = the top
block) at ``lr * encoder_lr_factor * layer_decay ** i`` (layer-wise LR decay as in ELECTRA, Clark et
al. 2020, and BEiT, Bao et al. 2022; those papers' top block is at ``lr * layer_decay``, which is
``encoder_lr_factor=layer_decay`` here). Every block has its own param groups from the start, so
an LR schedule spans the whole run even while blocks unfreeze. No weight decay on biases and norm
weights. Defaults follow the literature per modality (:data:`MODALITY_DEFAULTS`): text as BERT
(AdamW, lr 3e-5, weight decay 0.01, 10% warmup, linear decay, dropout 0.1 before the classifier),
images as BEiT/MAE fine-tuning (AdamW, weight decay 0.05, warmup, cosine).

``train/loss`` goes to the loggers every ``log_every_n_steps``, not to the progress bar (Lightning reads
progress-bar values with ``.item()`` after every step, a host-device synchronization).

Batches: images ``{"images": float B x C x H x W, "labels"}`` (``ImageDataModule(mode="supervised")``);
text ``{"input_ids", "attention_mask", "token_type_ids", "labels"}`` (``TextClassificationDataModule``,
single sentences or sentence pairs alike).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from lightning_transfer.errors import UserInputError, require
from lightning_transfer.models.bert import BertModel, init_bert_weights
from lightning_transfer.models.encoder_blocks import encoder_blocks
from lightning_transfer.models.encoder_handoff import HANDOFF_KEY, encoder_marker
from lightning_transfer.models.loading import INITS, load_encoder, pretrained_tokenizer
from lightning_transfer.models.vision import resolve_memory_format, set_memory_format, to_memory_format
from lightning_transfer.modules.base import OptimizedModule
from lightning_transfer.optim import split_decay_groups

STRATEGIES = ("linear", "full", "partial", "gradual", "lp_ft")
POOLINGS = ("cls", "pooler", "mean")
MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    # BERT (Devlin et al. 2018): Adam lr in {5e-5, 3e-5, 2e-5}, decay 0.01, 10% warmup, linear decay, dropout 0.1.
    "text": {"lr": 3e-5, "weight_decay": 0.01, "warmup_fraction": 0.1, "schedule": "linear", "head_dropout": 0.1},
    # BEiT / MAE fine-tuning recipes: AdamW, decay 0.05, short warmup, cosine.
    "image": {"lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.05, "schedule": "cosine", "head_dropout": 0.0},
}
BATCH_KEYS = {"image": "images", "text": "input_ids"}
DATA_HINT = {"image": "an ImageDataModule(mode=supervised)", "text": "a TextClassificationDataModule"}


def data_modality(datamodule: Any) -> str | None:
    """``"image"`` / ``"text"`` for our DataModules (and look-alikes), ``None`` when unknown."""
    if datamodule is None:
        return None
    if hasattr(datamodule, "num_channels") or type(datamodule).__name__ == "ImageDataModule":
        return "image"
    if hasattr(datamodule, "tokenizer") or type(datamodule).__name__ == "TextClassificationDataModule":
        return "text"
    return None


class FineTuneModule(OptimizedModule):
    """Classification on top of a pretrained (or scratch) encoder; see the module docstring.

    Args:
        pretrained: a SimCLRModule / BertPretrainModule / FineTuneModule Lightning checkpoint, an
            exported encoder file, a local Hugging Face BERT directory, ``"minilm_demo"`` (the
            offline MiniLM-L6), or ``None`` (random weights, architecture from ``encoder_config``).
            The kind is read from the file (:func:`~lightning_transfer.models.loading.load_encoder`).
        init: ``"pretrained"`` loads the weights; ``"scratch"`` keeps only the architecture of
            ``pretrained`` (the from-scratch baseline with exactly the same network).
        encoder_config: the architecture when ``pretrained=None``: ``{backbone, in_channels,
            small_images, width}`` or BertConfig fields. Filled in from ``pretrained`` otherwise, so a
            fine-tuned checkpoint records it: ``FineTuneModule.load_from_checkpoint(path,
            pretrained=None)`` reloads without the pretraining file.
        num_classes: ``None`` takes it from the DataModule; a number that differs from the data's
            is an error.
        strategy: linear / full / partial / gradual / lp_ft.
        freeze_layers: ``partial``: blocks frozen above the stem. lp_epochs: ``lp_ft``: probe epochs.
        pooling: text only: ``cls`` (the [CLS] hidden state), ``pooler`` (BERT's pretrained
            ``tanh(W h_cls)``) or ``mean`` (mean over real tokens).
        head_dropout: dropout before the classifier (``None``: the modality default).
        label_smoothing: of the training loss (validation and test losses are plain cross-entropy).
        encoder_lr_factor, layer_decay: encoder LRs, see the module docstring.
        optimizer, lr, weight_decay, momentum, betas, warmup_steps, warmup_fraction, schedule,
            min_lr_factor: as :class:`~lightning_transfer.modules.base.OptimizedModule`; ``None``
            means the modality default (:data:`MODALITY_DEFAULTS`), resolved at construction.
        compile: compile the encoder with ``torch.compile`` when training starts (speed only; see
            :class:`~lightning_transfer.modules.base.OptimizedModule`).
        trust_checkpoint: allow a ``pretrained`` file that needs full unpickling (a checkpoint that is
            not ours, whose hyperparameters hold Python objects). Unpickling can run code: only for
            files you trust. Ours never need it.
        memory_format: image encoders only (text ignores it): ``"channels_last"`` (the default) or
            ``"contiguous"``, the memory layout of the convolution filters and of the images (speed
            only; :func:`~lightning_transfer.models.vision.set_memory_format`). Checkpoints hold
            contiguous weights either way.

    Raises :class:`UserInputError` on a bad setting or pretrained file at construction, and in
    :meth:`setup` when the data does not fit (modality, classes, channels, vocabulary).
    """

    checkpoint_metric = ("val/acc", "max")  # the best checkpoint (callbacks.BestCheckpoint): highest accuracy

    def __init__(
        self,
        pretrained: str | None = None,
        init: str = "pretrained",
        encoder_config: dict | None = None,
        num_classes: int | None = None,
        strategy: str = "full",
        freeze_layers: int = 0,
        lp_epochs: int = 1,
        pooling: str = "cls",
        head_dropout: float | None = None,
        label_smoothing: float = 0.0,
        encoder_lr_factor: float = 1.0,
        layer_decay: float = 1.0,
        optimizer: str = "adamw",
        lr: float | None = None,
        weight_decay: float | None = None,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int | None = None,
        warmup_fraction: float | None = None,
        schedule: str | None = None,
        min_lr_factor: float = 0.0,
        compile: bool = False,
        trust_checkpoint: bool = False,
        memory_format: str = "channels_last",
    ):
        super().__init__()
        for name, value, choices in (
            ("strategy", strategy, STRATEGIES),
            ("pooling", pooling, POOLINGS),
            ("init", init, INITS),
        ):
            require(value in choices, f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        require(freeze_layers >= 0, f"freeze_layers must be >= 0, got {freeze_layers}")
        require(lp_epochs >= 1, f"lp_epochs must be >= 1, got {lp_epochs}")
        require(0.0 < layer_decay <= 1.0, f"layer_decay must be in (0, 1], got {layer_decay}")
        require(encoder_lr_factor >= 0.0, f"encoder_lr_factor must be >= 0, got {encoder_lr_factor}")
        require(0.0 <= label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {label_smoothing}")
        require(
            head_dropout is None or 0.0 <= head_dropout < 1.0, f"head_dropout must be in [0, 1), got {head_dropout}"
        )
        require(num_classes is None or num_classes >= 2, f"num_classes must be at least 2, got {num_classes}")
        resolve_memory_format(memory_format)  # a bad name fails before the encoder is loaded, for text too
        self.save_hyperparameters()

        self.encoder, self.modality, self.feature_dim, self.source_info = load_encoder(
            pretrained, init, encoder_config, trust_checkpoint
        )
        self.hparams.encoder_config = self.source_info["config"]  # saved with the checkpoint: the architecture
        self._memory_format = (
            set_memory_format(self.encoder, memory_format) if self.modality == "image" else torch.contiguous_format
        )
        for key, value in MODALITY_DEFAULTS[self.modality].items():
            if self.hparams[key] is None:
                self.hparams[key] = value
        self.validate_optimization_settings()

        blocks = encoder_blocks(self.encoder)
        self.blocks: list[nn.Module] = blocks.ordered  # a plain list: views, not registered twice
        if strategy == "partial":
            require(
                freeze_layers <= len(blocks.layers),
                f"freeze_layers={freeze_layers} but the encoder has only {len(blocks.layers)} blocks above its stem; "
                f"use at most {len(blocks.layers)} (or strategy=linear)",
            )
        self._partial_frozen = (blocks.stem is not None) + freeze_layers
        uses_pooler = self.modality == "text" and pooling == "pooler"
        self._unused = (
            list(cast(BertModel, self.encoder).pooler.parameters())
            if self.modality == "text" and not uses_pooler
            else []
        )

        self.dropout = nn.Dropout(self.hparams.head_dropout)
        self.classifier: nn.Linear | None = None
        self.test_confusion_matrix: torch.Tensor | None = None  # C x C counts of the last test (rows: true class)
        if num_classes:
            self._build_head(num_classes)
        self._frozen = [False] * len(self.blocks)
        self._mask_frozen_grads = False
        self.apply_strategy(epoch=0)

    # ---------------------------------------------------------------- set-up
    def _build_head(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        if self.modality == "text":
            init_bert_weights(self.classifier, cast(BertModel, self.encoder).config.initializer_range)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)  # not logged: plotted at the end of test

    def setup(self, stage: str) -> None:
        """Check that the data fits the encoder, size the head from the data when ``num_classes``
        is ``None``, and pick how frozen blocks are kept frozen (see :meth:`apply_strategy`)."""
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        self._check_data(datamodule)
        classes = getattr(datamodule, "num_classes", None) if datamodule is not None else None
        if self.classifier is None:
            require(
                bool(classes), "num_classes is unknown: set model.num_classes, or use a DataModule with num_classes"
            )
            assert classes is not None  # require() above
            self.hparams.num_classes = classes  # saved with the checkpoint, so loading rebuilds the head
            self._build_head(classes)
        elif classes and classes != self.hparams.num_classes:
            raise UserInputError(
                f"the data has {classes} classes but model.num_classes={self.hparams.num_classes}; "
                f"set model.num_classes: {classes} (or null to take it from the data)"
            )
        # Under DDP the parameters that require grad must not change after wrapping (the gradient
        # reducer is built once), so there gradual/lp_ft keep requires_grad on and drop the frozen
        # blocks' gradients before each step instead.
        self._mask_frozen_grads = self.hparams.strategy in ("gradual", "lp_ft") and self.trainer.world_size > 1
        self.apply_strategy(self.trainer.current_epoch)

    def _check_data(self, datamodule: Any) -> None:
        if datamodule is None:
            return
        kind = data_modality(datamodule)
        if kind is not None and kind != self.modality:
            raise UserInputError(
                f"pretrained={self.hparams.pretrained} is a{'n' if self.modality == 'image' else ''} {self.modality} encoder "
                f"but the data is {kind}; use {DATA_HINT[self.modality]} or a {kind} checkpoint"
            )
        hp = getattr(datamodule, "hparams", {})
        if kind == "image":
            require(
                hp.get("mode", "supervised") == "supervised",
                "fine-tuning needs labeled single-view batches; set data.mode: supervised",
            )
            channels, expected = getattr(datamodule, "num_channels", None), self.hparams.encoder_config["in_channels"]
            require(
                channels is None or channels == expected,
                f"the data has {channels} channel(s) but the encoder takes in_channels={expected}; "
                f"set data.channels: {expected} (or use an encoder pretrained on {channels}-channel images)",
            )
        if kind == "text":
            self._check_tokenizer(getattr(datamodule, "tokenizer", None), getattr(datamodule, "vocab_size", None))

    def _check_tokenizer(self, data_tokenizer: Any, vocab: int | None) -> None:
        """The data's token ids must index the encoder's embeddings, and with pretrained weights mean
        the same tokens: the data's vocabulary must equal the pretraining tokenizer's, when known."""
        if data_tokenizer is not None:
            vocab = data_tokenizer.get_vocab_size(with_added_tokens=True)
        expected = self.hparams.encoder_config["vocab_size"]
        source = self.source_info.get("tokenizer")
        hint = (
            f"set data.tokenizer: {source}"
            if source and not source.lstrip().startswith("{")
            else "set data.tokenizer to the tokenizer the encoder was pretrained with"
        )
        require(
            vocab is None or vocab <= expected,
            f"the data's tokenizer has {vocab} tokens but the encoder's vocabulary has {expected}; {hint}",
        )
        own = (
            pretrained_tokenizer(self.source_info)
            if self.hparams.init == "pretrained" and data_tokenizer is not None
            else None
        )
        require(
            own is None or own.get_vocab(with_added_tokens=True) == data_tokenizer.get_vocab(with_added_tokens=True),
            f"the data's tokenizer is not the one pretrained={self.hparams.pretrained} was trained with "
            f"(the vocabularies differ), so token ids would mean other words; {hint}",
        )

    # ---------------------------------------------------------------- strategies
    def unfrozen_blocks(self, epoch: int) -> int:
        """How many encoder blocks, counted from the top, train during ``epoch`` (0-based)."""
        n, hp = len(self.blocks), self.hparams
        return {
            "linear": 0,
            "full": n,
            "partial": n - self._partial_frozen,
            "gradual": min(epoch, n),
            "lp_ft": 0 if epoch < hp.lp_epochs else n,
        }[hp.strategy]

    def _ever_unfrozen(self) -> int:
        """Blocks (from the top) that train at some epoch: those get optimizer param groups."""
        return {"linear": 0, "partial": len(self.blocks) - self._partial_frozen}.get(
            self.hparams.strategy, len(self.blocks)
        )

    def apply_strategy(self, epoch: int) -> None:
        """Freeze and unfreeze blocks for ``epoch``: the bottom ``len(blocks) - unfrozen_blocks(epoch)``
        blocks get ``requires_grad=False`` (or, under DDP with a changing set, their gradients are
        dropped in :meth:`on_before_optimizer_step`) and run in eval mode. The unused BERT pooler
        (``pooling`` other than ``pooler``) stays frozen."""
        n = len(self.blocks)
        top = self.unfrozen_blocks(epoch)
        self._frozen = [i < n - top for i in range(n)]
        for block, frozen in zip(self.blocks, self._frozen):
            block.requires_grad_(self._mask_frozen_grads or not frozen)
        for param in self._unused:
            param.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> FineTuneModule:
        """``nn.Module.train``, except that frozen blocks stay in eval mode: a frozen BatchNorm keeps
        its running statistics and a frozen block runs without dropout."""
        super().train(mode)
        frozen = getattr(self, "_frozen", [])
        if mode:
            for block, is_frozen in zip(self.blocks, frozen):
                if is_frozen:
                    block.eval()
            if frozen and all(frozen):
                self.encoder.eval()  # the containers outside the blocks too, so encoder.training reads False
        return self

    def on_train_epoch_start(self) -> None:
        self.apply_strategy(self.current_epoch)

    def on_train_start(self) -> None:
        super().on_train_start()
        # A run resumed mid-epoch gets no on_train_epoch_start from Lightning: set that epoch's blocks here.
        self.apply_strategy(self.current_epoch)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._mask_frozen_grads:
            for block, frozen in zip(self.blocks, self._frozen):
                if frozen:
                    for param in block.parameters():
                        param.grad = None  # no update, and no weight decay either

    # ---------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict]:
        """Head groups at ``lr``; encoder block ``i`` from the top at ``lr * encoder_lr_factor *
        layer_decay ** i``, for every block that trains at some epoch (frozen-for-now ones included).
        Groups are named ``head`` / ``encoder.<block index from the bottom>``, plus ``.no_decay``."""
        hp = self.hparams
        require(self.classifier is not None, "num_classes is unknown: set model.num_classes, or fit with a DataModule")
        assert self.classifier is not None  # require() above
        groups = split_decay_groups(
            self.classifier.named_parameters(), hp.weight_decay, name="head", keep_frozen=True, lr=hp.lr
        )
        unused = {id(p) for p in self._unused}
        n, trainable = len(self.blocks), self._ever_unfrozen()
        for i, block in enumerate(self.blocks):
            depth = n - 1 - i  # 0 = top block
            if depth >= trainable:
                continue
            named = [(name, p) for name, p in block.named_parameters() if id(p) not in unused]
            groups += split_decay_groups(
                named,
                hp.weight_decay,
                name=f"encoder.{i}",
                keep_frozen=True,
                lr=hp.lr * hp.encoder_lr_factor * hp.layer_decay**depth,
            )
        return groups

    # ---------------------------------------------------------------- steps
    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Encoder features ``B x feature_dim``: image features, or the pooled text representation."""
        key = BATCH_KEYS[self.modality]
        if key not in batch:
            raise UserInputError(
                f"the batch has {sorted(batch)} but this {self.modality} encoder needs {key!r}; "
                f"use {DATA_HINT[self.modality]} or a checkpoint of the data's modality"
            )
        if self.modality == "image":
            return self.encoder(to_memory_format(batch["images"], self._memory_format))
        mask = batch.get("attention_mask")
        hidden = self.encoder(batch["input_ids"], mask, batch.get("token_type_ids"))  # B x L x H
        if self.hparams.pooling == "cls":
            return hidden[:, 0]
        if self.hparams.pooling == "pooler":
            return cast(BertModel, self.encoder).pooled(hidden)
        weights = torch.ones_like(batch["input_ids"]) if mask is None else mask
        weights = weights.to(hidden.dtype).unsqueeze(-1)  # B x L x 1
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Class logits ``B x num_classes``."""
        assert self.classifier is not None, "num_classes is unknown: the head is built at construction or in setup()"
        return self.classifier(self.dropout(self.features(batch)))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.hparams.label_smoothing)
        # Not on the progress bar: Lightning reads every progress-bar value with .item() after each step
        # (a host-device synchronization); the loggers get it every log_every_n_steps.
        self.log("train/loss", loss, batch_size=len(logits))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str, metrics: MetricCollection) -> None:
        logits = self(batch).float()
        loss = F.cross_entropy(logits, batch["labels"])
        metrics.update(logits, batch["labels"])
        if stage == "test":
            self.test_confusion.update(logits, batch["labels"])
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(logits))
        self.log_dict(metrics, prog_bar=stage == "val")  # metric objects: synchronized across processes

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """Keep the test confusion matrix (summed over all processes by torchmetrics) as
        :attr:`test_confusion_matrix` and, when the run has a logger, process 0 writes it as
        ``confusion_matrix.png`` into the run's log folder."""
        from lightning_transfer.callbacks import run_log_dir
        from lightning_transfer.plots import class_names_of, plot_confusion_matrix

        self.test_confusion_matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        folder = run_log_dir(self.trainer)
        if folder is not None and self.trainer.is_global_zero:
            plot_confusion_matrix(
                self.test_confusion_matrix,
                folder / "confusion_matrix.png",
                class_names=class_names_of(getattr(self.trainer, "datamodule", None), self.hparams.num_classes),
            )

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """``{"prediction": int64 B, "probabilities": float32 B x C}`` (plus ``labels`` when the
        batch has them); :class:`~lightning_transfer.callbacks.PredictionWriter` writes them out."""
        probabilities = self(batch).float().softmax(-1)
        out = {"prediction": probabilities.argmax(-1), "probabilities": probabilities}
        if "labels" in batch:
            out["labels"] = batch["labels"]
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Mark the checkpoint (:mod:`~lightning_transfer.models.encoder_handoff`), so that a fine-tuned
        model is itself a starting point: its encoder's description, its weights under ``encoder.``."""
        config = self.hparams.encoder_config
        checkpoint[HANDOFF_KEY] = encoder_marker("finetune", config["modality"], config, "encoder.")
