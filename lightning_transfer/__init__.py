"""lightning-transfer: Lightning modules for self-supervised pretraining and few-label fine-tuning.

Public API (see DESIGN.md): :class:`SimCLRModule`, :class:`BertPretrainModule`,
:class:`FineTuneModule` and the DataModules :class:`ImageDataModule`,
:class:`TextPretrainDataModule`, :class:`TextClassificationDataModule`. They are imported lazily,
so ``import lightning_transfer.losses`` does not pull in Lightning.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SimCLRModule": "lightning_transfer.modules.simclr",
    "BertPretrainModule": "lightning_transfer.modules.bert_pretrain",
    "FineTuneModule": "lightning_transfer.modules.finetune",
    "ImageDataModule": "lightning_transfer.data.images",
    "TextPretrainDataModule": "lightning_transfer.data.text_pretraining",
    "TextClassificationDataModule": "lightning_transfer.data.text_classification",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightning_transfer' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
