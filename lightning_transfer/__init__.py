"""lightning-transfer: Lightning modules for self-supervised pretraining and few-label fine-tuning.

Public API (see DESIGN.md): :class:`SimCLRModule`, :class:`BertPretrainModule`,
:class:`FineTuneModule` and the DataModules :class:`ImageDataModule`,
:class:`TextPretrainDataModule`, :class:`TextClassificationDataModule`.
"""
from lightning_transfer.data.images import ImageDataModule
from lightning_transfer.modules.simclr import SimCLRModule

__version__ = "0.1.0"
__all__ = ["SimCLRModule", "ImageDataModule"]
