"""The module and DataModule of each stage of ``transfer``: what is trained, on which data.

Images: SimCLR, with the encoder chosen by image size (:func:`image_encoder`); fine-tuning from the
exported encoder (``pretrained``) or the same architecture at random init (``scratch``), on the
labeled images as they are (no augmentation, so that the table measures what the initialization
brings), AdamW with warmup and cosine decay.
Text: masked language modelling (no NSP: single texts), continuing ``--init-from`` or, without it, a
small BERT with a WordPiece tokenizer trained on the corpus; fine-tuning with mean pooling, AdamW
with warmup and linear decay (the recipe our reviews demo measured).

The strategy per label count (:func:`finetune_strategy`): a random encoder trains fully; a
pretrained one is probed linearly below 5 labels per class (too few to move an encoder without
overfitting); above that an image encoder is fine-tuned with LP-FT below 50 labels per class and
fully from 50 on, a text encoder fully (on the reviews, LP-FT at BERT's fine-tuning LR left the head
undertrained: 0.44 against 0.55 for full fine-tuning at 10 labels per class). ``--strategy``
overrides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_transfer.transfer.inputs import TransferData
from lightning_transfer.transfer.settings import TransferSettings

if TYPE_CHECKING:
    from lightning_transfer.transfer.budget import FinetuneRun

INITS = ("pretrained", "init_from", "scratch")
IMAGE_FINETUNE_STEPS = 100  # optimizer steps per fine-tuning run at a comfortable budget
TEXT_FINETUNE_STEPS = 60
# Fine-tuning views: the labeled images as they are (a center view, no crop, no flip).
NO_AUGMENT = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_prob": 0.0}


def inits_of(settings: TransferSettings) -> tuple[str, ...]:
    return INITS if settings.init_from else ("pretrained", "scratch")


def finetune_strategy(init: str, labels_per_class: int, settings: TransferSettings, kind: str) -> str:
    """The strategy of a run of ``init`` at ``labels_per_class`` on ``kind`` (``"image"`` or
    ``"text"``) data: ``--strategy``, or by label count (see the module docstring). The plan decides it
    once per run (:class:`~lightning_transfer.transfer.budget.FinetuneRun`); the recipes read it there."""
    if settings.strategy != "auto":
        return settings.strategy
    if init == "scratch":
        return "full"
    if labels_per_class < 5:
        return "linear"
    return "lp_ft" if kind == "image" and labels_per_class < 50 else "full"


# ------------------------------------------------------------------------------------------ images
def image_encoder(data: TransferData, settings: TransferSettings) -> dict[str, Any]:
    """SimCLRModule's encoder arguments: up to 32 px the small CNN, up to 64 px ResNet-18 with the
    small-image stem (3x3 stride-1 first conv, no max-pool), above that ResNet-18; ``--backbone``
    overrides the network (the stem still follows the size)."""
    size = data.image_size or 32
    backbone = settings.backbone
    if backbone == "auto":
        backbone = "convnet" if size <= 32 else "resnet18"
    encoder: dict[str, Any] = {"backbone": backbone, "in_channels": data.channels, "small_images": size <= 64}
    if backbone == "convnet":
        encoder["width"] = 16
    return encoder


def image_augmentation(data: TransferData, settings: TransferSettings) -> dict[str, Any]:
    """SimCLR's views, minus colour jitter on grayscale images; ``--augment`` wins."""
    augment: dict[str, Any] = {}
    if data.channels == 1:
        augment.update(hue=0.0, saturation=0.0)
    augment.update(settings.augment)
    return augment


def image_data(data: TransferData, settings: TransferSettings, **arguments: Any):
    from lightning_transfer.data.images import ImageDataModule

    return ImageDataModule(
        source="folder",
        root=str(data.root),
        image_size=data.image_size,
        channels=data.channels,
        **data.split_arguments(settings),
        **arguments,
    )


def simclr_stage(data: TransferData, settings: TransferSettings, batch_size: int):
    """``(SimCLRModule, ImageDataModule)`` for pretraining on the pool and the unlabeled images."""
    from lightning_transfer.modules.simclr import SimCLRModule

    encoder = image_encoder(data, settings)
    module = SimCLRModule(
        **encoder,
        projection_hidden_dim=512,
        projection_dim=128,
        temperature=settings.temperature,
        optimizer="adamw",
        lr=2e-3 if encoder["backbone"] == "convnet" else 1e-3,
        lr_scaling="none",
        weight_decay=1e-4,
        warmup_fraction=0.05,
        probe_lr=0.01,
        num_classes=data.num_classes,
    )
    datamodule = image_data(
        data,
        settings,
        mode="simclr",
        unlabeled_root=str(data.unlabeled_root) if data.unlabeled_root else None,
        batch_size=batch_size,
        augment=image_augmentation(data, settings),
        knn_bank_size=2000,
    )
    return module, datamodule


def finetune_module(data: TransferData, run: FinetuneRun, encoder: Path, **recipe: Any):
    """The ``FineTuneModule`` of ``run`` on ``encoder``: its weights (``pretrained``, ``init_from``) or
    its architecture at random init (``scratch``), with the run's strategy and the ``recipe``'s
    optimizer arguments, its LR times ``run.lr_factor``; LP-FT probes linearly for the first half of
    the run's epochs (at least one)."""
    from lightning_transfer.modules.finetune import FineTuneModule

    recipe = {**recipe, "lr": recipe["lr"] * run.lr_factor}
    if run.strategy == "lp_ft":
        recipe = {"lp_epochs": max(1, run.epochs // 2), **recipe}
    return FineTuneModule(
        pretrained=str(encoder),
        init="scratch" if run.init == "scratch" else "pretrained",
        num_classes=data.num_classes,
        strategy=run.strategy,
        **recipe,
    )


def image_finetune_stage(data: TransferData, settings: TransferSettings, run: FinetuneRun, encoder: Path):
    """``(FineTuneModule, ImageDataModule)`` for ``run``: ``run.labels_per_class`` images of every
    class drawn with ``run.seed`` from the pool, in batches of ``run.batch_size``."""
    module = finetune_module(
        data,
        run,
        encoder,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_fraction=0.05,
        schedule="cosine",
        **({"encoder_lr_factor": 0.5} if run.strategy == "lp_ft" else {}),
    )
    datamodule = image_data(
        data,
        settings,
        mode="supervised",
        labels_per_class=run.labels_per_class,
        subset_seed=run.seed,
        batch_size=run.batch_size,
        augment=NO_AUGMENT,
        drop_last=False,
    )
    return module, datamodule


# ------------------------------------------------------------------------------------------- texts
def text_pretrain_stage(data: TransferData, settings: TransferSettings, batch_size: int, cache_dir: Path):
    """``(BertPretrainModule, TextPretrainDataModule)``: MLM on the corpus (the pool's texts and the
    unlabeled rows, one document per line). With ``--init-from`` it continues that model at a low LR,
    its fresh MLM head at 20x (MiniLM-like checkpoints ship without one); otherwise a 4-layer,
    256-wide BERT with a WordPiece tokenizer trained on the corpus."""
    from lightning_transfer.data.text import TextPretrainDataModule
    from lightning_transfer.modules.bert_pretrain import BertPretrainModule

    length = settings.max_seq_length
    datamodule = TextPretrainDataModule(
        source=str(data.corpus),
        txt_documents="line",
        tokenizer=settings.init_from,
        tokenizer_vocab_size=8192,
        max_seq_length=length,
        nsp=False,
        batch_size=batch_size,
        cache_dir=str(cache_dir),
        seed=settings.seed,
    )
    if settings.init_from:
        module = BertPretrainModule(
            pretrained=settings.init_from,
            tokenizer=settings.init_from,
            nsp=False,
            lr=5e-5,
            head_lr_factor=20.0,
            warmup_fraction=0.1,
            weight_decay=0.01,
        )
    else:
        module = BertPretrainModule(
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            max_position_embeddings=max(128, length),
            nsp=False,
            lr=5e-4,
            warmup_fraction=0.05,
            weight_decay=0.01,
        )
    return module, datamodule


def text_finetune_stage(data: TransferData, settings: TransferSettings, run: FinetuneRun, encoder: Path):
    """``(FineTuneModule, TextClassificationDataModule)`` for ``run``; ``encoder`` is a Hugging Face
    directory with its tokenizer (our export, or ``--init-from``)."""
    from lightning_transfer.data.text import TextClassificationDataModule

    module = finetune_module(
        data,
        run,
        encoder,
        lr=1e-4 if run.strategy != "linear" else 1e-3,
        warmup_fraction=0.1,
        pooling="mean",
    )
    datamodule = TextClassificationDataModule(
        tokenizer=str(encoder),
        source=str(data.table),
        text_column="text",
        label_column="label",
        num_classes=data.num_classes,
        max_seq_length=settings.max_seq_length,
        labels_per_class=run.labels_per_class,
        subset_seed=run.seed,
        batch_size=run.batch_size,
        **data.split_arguments(settings),
    )
    return module, datamodule


def pretrain_stage(data: TransferData, settings: TransferSettings, batch_size: int, cache_dir: Path):
    if data.kind == "image":
        return simclr_stage(data, settings, batch_size)
    return text_pretrain_stage(data, settings, batch_size, cache_dir)


def finetune_stage(data: TransferData, settings: TransferSettings, run: FinetuneRun, encoder: Path):
    """The module and DataModule of the fine-tuning ``run`` (as planned: its strategy, epochs and batch
    size are decided; a trial of it at ``run.lr_factor`` times the recipe's LR) on ``encoder``, for
    images or texts."""
    build = image_finetune_stage if data.kind == "image" else text_finetune_stage
    return build(data, settings, run, encoder)


def pretrain_batch_size(data: TransferData, world_size: int) -> int:
    """Per process: 128 images or 32 texts, fewer when the pool is small (every process needs a batch)."""
    target = 128 if data.kind == "image" else 32
    available = (data.split_sizes["pool"] + data.split_sizes["unlabeled"]) // world_size
    return max(2, min(target, available))


def finetune_batch_size(data: TransferData, labels_per_class: int, world_size: int) -> int:
    """Per process: 64 images or 16 texts at most, and no more than each process's share."""
    target = 64 if data.kind == "image" else 16
    share = max(1, labels_per_class * data.num_classes // world_size)
    return max(1, min(target, share))


def finetune_default_steps(data: TransferData) -> int:
    return IMAGE_FINETUNE_STEPS if data.kind == "image" else TEXT_FINETUNE_STEPS
