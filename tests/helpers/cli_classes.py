"""A user's own LightningModule and DataModule for CLI tests, named by ``class_path``: a DataModule with a
``vocab_size`` hyperparameter of its own, and a model without a ``vocab_size`` argument."""
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class DataWithVocabulary(pl.LightningDataModule):
    def __init__(self, vocab_size: int = 7, rows: int = 8):
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(self.hparams.rows, 3, generator=generator)), batch_size=4)


class ModelWithoutVocabulary(pl.LightningModule):
    def __init__(self, width: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
