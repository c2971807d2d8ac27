"""The two text DataModules, each in its own module: :class:`TextPretrainDataModule` (unlabeled text ->
BERT pretraining batches, :mod:`lightning_transfer.data.text_pretraining`) and
:class:`TextClassificationDataModule` (labeled text -> fine-tuning batches,
:mod:`lightning_transfer.data.text_classification`). What they share is in
:mod:`lightning_transfer.data.text_datamodule_base`.

This module keeps the names it has always exported importable from here.
"""

from __future__ import annotations

from lightning_transfer.data.collators import ClassificationCollator, PretrainingCollator
from lightning_transfer.data.encoding import encode_labels
from lightning_transfer.data.pretraining_examples import create_nsp_examples, pack_sequences
from lightning_transfer.data.text_classification import TextClassificationDataModule
from lightning_transfer.data.text_pretraining import TextPretrainDataModule

__all__ = [  # the collators, example builders and encode_labels are re-exported from their own modules
    "ClassificationCollator",
    "PretrainingCollator",
    "TextClassificationDataModule",
    "TextPretrainDataModule",
    "create_nsp_examples",
    "encode_labels",
    "pack_sequences",
]
