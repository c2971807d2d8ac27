"""FineTuneModule: strategies (what trains, what stays frozen, eval modes), learning rates, every kind
of ``pretrained=``, errors, metrics, predictions and a short few-label run on MNIST."""
import csv
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from lightning_transfer import BertPretrainModule, ImageDataModule, SimCLRModule, TextClassificationDataModule
from lightning_transfer.callbacks import PredictionWriter
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.tokenizer import save_tokenizer, train_wordpiece
from lightning_transfer.errors import UserInputError
from lightning_transfer.models.bert import BertConfig, BertModel
from lightning_transfer.models.encoder_blocks import encoder_blocks
from lightning_transfer.models.encoder_handoff import save_encoder
from lightning_transfer.models.loading import load_encoder
from lightning_transfer.models.vision import build_backbone
from lightning_transfer.modules.finetune import FineTuneModule

IMAGE_CONFIG = {"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 8}
TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=32)


# -------------------------------------------------------------------------------- helpers
def image_module(**overrides) -> FineTuneModule:
    settings = dict(encoder_config=IMAGE_CONFIG, num_classes=3, lr=1e-2, warmup_steps=0, schedule="constant")
    settings.update(overrides)
    return FineTuneModule(**settings)


def text_module(**overrides) -> FineTuneModule:
    settings = dict(encoder_config=TINY_BERT, num_classes=3, lr=1e-2, warmup_steps=0, schedule="constant")
    settings.update(overrides)
    return FineTuneModule(**settings)


def image_batch(n: int = 8, classes: int = 3) -> dict:
    return {"images": torch.randn(n, 1, 16, 16), "labels": torch.arange(n) % classes}


def text_batch(n: int = 8, classes: int = 3, length: int = 10) -> dict:
    lengths = torch.randint(4, length + 1, (n,))
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    segment_b = (torch.arange(length)[None] >= (lengths[:, None] // 2)).long() * mask  # sentence pairs
    return {"input_ids": torch.randint(5, 64, (n, length)) * mask, "attention_mask": mask,
            "token_type_ids": segment_b, "labels": torch.arange(n) % classes}


def trainer(**overrides) -> pl.Trainer:
    settings = dict(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    settings.update(overrides)
    return pl.Trainer(**settings)


def fit(module: FineTuneModule, batches: list[dict], **trainer_overrides) -> pl.Trainer:
    """Fit on a fixed list of batches (the same ones every epoch)."""
    run = trainer(**trainer_overrides)
    run.fit(module, DataLoader(batches, batch_size=None))
    return run


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, value in module.state_dict().items() if not torch.equal(before[name], value)}


def block_params_changed(module: FineTuneModule, before: dict[str, torch.Tensor]) -> list[bool]:
    """Per encoder block (bottom to top): did any of its parameters change?"""
    after = dict(module.named_parameters())
    names = {id(p): n for n, p in after.items()}
    return [any(not torch.equal(before[names[id(p)]], p) for p in block.parameters()) for block in module.blocks]


def param_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory):
    """A tiny SimCLRModule trained one step on MNIST, saved by the Trainer."""
    torch.manual_seed(0)
    module = SimCLRModule(backbone="convnet", width=8, in_channels=1, projection_hidden_dim=16, projection_dim=8,
                          optimizer="adamw", lr=1e-2, lr_scaling="none", num_classes=0)
    data = ImageDataModule(source="mnist_demo", batch_size=16, val_size=20, test_size=20, image_size=16)
    run = trainer(max_steps=1, limit_val_batches=0)
    run.fit(module, data)
    path = tmp_path_factory.mktemp("simclr") / "last.ckpt"
    run.save_checkpoint(path)
    return path, module


@pytest.fixture(scope="module")
def tiny_bert_directory(tmp_path_factory):
    torch.manual_seed(1)
    model = BertModel(BertConfig(**TINY_BERT))
    return model.save_pretrained(tmp_path_factory.mktemp("bert") / "hf"), model


# -------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("kind", ["convnet", "resnet18", "bert"])
def test_encoder_blocks_cover_every_parameter_once_bottom_to_top(kind):
    if kind == "bert":
        encoder = BertModel(BertConfig(**TINY_BERT))
        expected_first, expected_count = encoder.embeddings, 1 + TINY_BERT["num_hidden_layers"]
    else:
        encoder, _ = build_backbone(kind, 1, True, width=8)
        expected_first = encoder.features[0] if kind == "convnet" else encoder.conv1
        expected_count = 4 if kind == "convnet" else 5
    blocks = encoder_blocks(encoder).ordered
    assert len(blocks) == expected_count
    assert any(m is expected_first for m in blocks[0].modules())  # bottom first
    ids = [id(p) for block in blocks for p in block.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in encoder.parameters()}


# -------------------------------------------------------------------------------- strategies
def test_linear_strategy_updates_only_the_head_and_keeps_batchnorm_statistics():
    module = image_module(strategy="linear")
    before = snapshot(module)
    modes = []

    class RecordModes(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(any(m.training for m in pl_module.encoder.modules()))

    fit(module, [image_batch() for _ in range(3)], max_epochs=2, callbacks=[RecordModes()])
    assert changed(before, module) == {"classifier.weight", "classifier.bias"}  # running_mean/var included
    assert modes == [False] * 6  # eval mode in every step of both epochs, after Lightning's .train() calls
    assert module.classifier.training and not module.encoder.training
    assert all(not p.requires_grad for p in module.encoder.parameters())


def test_linear_strategy_encoder_stays_in_eval_mode_after_train_is_called():
    module = image_module(strategy="linear")
    module.eval()
    module.train()
    assert not any(m.training for m in module.encoder.modules()) and module.dropout.training


def test_full_strategy_updates_every_encoder_block_and_batchnorm_statistics():
    module = image_module(strategy="full")
    before = param_snapshot(module)
    buffers = snapshot(module.encoder)
    fit(module, [image_batch() for _ in range(2)])
    assert block_params_changed(module, before) == [True] * 4
    assert any(name.endswith("running_mean") for name in changed(buffers, module.encoder))


def test_partial_strategy_freezes_the_first_convnet_stages_and_their_batchnorm():
    module = image_module(strategy="partial", freeze_layers=2)
    before = param_snapshot(module)
    statistics = [[b.running_mean.clone() for b in block.modules() if isinstance(b, torch.nn.BatchNorm2d)]
                  for block in module.blocks]
    fit(module, [image_batch() for _ in range(2)])
    assert block_params_changed(module, before) == [False, False, True, True]
    statistics_changed = [any(not torch.equal(old, b.running_mean) for old, b in
                              zip(stats, [b for b in block.modules() if isinstance(b, torch.nn.BatchNorm2d)]))
                          for stats, block in zip(statistics, module.blocks)]
    assert statistics_changed == [False, False, True, True]


def test_partial_strategy_freezes_bert_embeddings_and_the_first_layers():
    module = text_module(strategy="partial", freeze_layers=1, pooling="pooler")
    before = param_snapshot(module)
    fit(module, [text_batch() for _ in range(2)])
    assert block_params_changed(module, before) == [False, False, True]  # embeddings, layer 0, layer 1 + pooler
    assert not torch.equal(before["encoder.pooler.dense.weight"], module.encoder.pooler.dense.weight)


def test_partial_strategy_on_resnet_freezes_the_stem_and_the_first_n_layers():
    module = FineTuneModule(encoder_config={"backbone": "resnet18", "in_channels": 1, "small_images": True},
                            num_classes=3, strategy="partial", freeze_layers=3)
    groups = module.param_groups()
    trainable = {id(p) for group in groups for p in group["params"]}
    encoder = module.encoder
    frozen = [encoder.conv1, encoder.bn1, encoder.layer1, encoder.layer2, encoder.layer3]
    assert all(not p.requires_grad and id(p) not in trainable for m in frozen for p in m.parameters())
    assert all(p.requires_grad and id(p) in trainable for p in encoder.layer4.parameters())
    module.train()
    assert not encoder.bn1.training and not encoder.layer3.training and encoder.layer4.training


def test_unused_bert_pooler_is_frozen_and_left_out_of_the_optimizer():
    module = text_module(strategy="full", pooling="cls")
    pooler = {id(p) for p in module.encoder.pooler.parameters()}
    in_groups = {id(p) for group in module.param_groups() for p in group["params"]}
    assert not pooler & in_groups
    assert all(not p.requires_grad for p in module.encoder.pooler.parameters())
    assert all(p.requires_grad for p in module.encoder.encoder.layer[-1].parameters())


def test_gradual_unfreezes_one_more_top_block_each_epoch_with_the_same_optimizer():
    module = image_module(strategy="gradual")
    record = {"changed": [], "optimizer": [], "groups": [], "frozen_modes": []}

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.before = param_snapshot(pl_module)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                record["frozen_modes"].append([any(m.training for m in b.modules()) for b in pl_module.blocks])

        def on_train_epoch_end(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            record["changed"].append(block_params_changed(pl_module, self.before))
            record["optimizer"].append(id(optimizer))
            record["groups"].append([[id(p) for p in g["params"]] for g in optimizer.param_groups])

    fit(module, [image_batch() for _ in range(2)], max_epochs=3, callbacks=[Record()])
    assert record["changed"] == [[False, False, False, False], [False, False, False, True], [False, False, True, True]]
    assert record["frozen_modes"] == record["changed"]  # frozen blocks run in eval mode
    assert len(set(record["optimizer"])) == 1 and record["groups"][0] == record["groups"][2]
    assert sum(len(g) for g in record["groups"][0]) == len(list(module.parameters()))  # every block is in from the start


def test_lp_ft_probes_for_lp_epochs_then_trains_everything():
    module = image_module(strategy="lp_ft", lp_epochs=2)
    assert [module.unfrozen_blocks(epoch) for epoch in range(4)] == [0, 0, 4, 4]
    per_epoch = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.before, self.buffers = param_snapshot(pl_module), snapshot(pl_module.encoder)

        def on_train_epoch_end(self, trainer, pl_module):
            per_epoch.append((block_params_changed(pl_module, self.before), bool(changed(self.buffers, pl_module.encoder)),
                              not torch.equal(self.before["classifier.weight"], pl_module.classifier.weight)))

    fit(module, [image_batch() for _ in range(2)], max_epochs=3, callbacks=[Record()])
    assert per_epoch == [([False] * 4, False, True), ([False] * 4, False, True), ([True] * 4, True, True)]


def test_masked_gradients_keep_frozen_blocks_fixed_when_requires_grad_cannot_change():
    """The DDP path of gradual / lp_ft: every parameter keeps requires_grad, frozen blocks lose their
    gradients before the step (weight decay would otherwise still move them)."""
    module = image_module(strategy="gradual", weight_decay=0.5)
    module._mask_frozen_grads = True
    module.apply_strategy(epoch=1)
    assert all(p.requires_grad for p in module.encoder.parameters())
    optimizer = torch.optim.AdamW(module.param_groups(), lr=1e-2)
    before = param_snapshot(module)
    for _ in range(2):
        optimizer.zero_grad()
        module.training_step(image_batch(), 0).backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
    assert block_params_changed(module, before) == [False, False, False, True]


# -------------------------------------------------------------------------------- learning rates
def test_layer_decay_gives_block_i_from_the_top_lr_times_factor_times_decay_to_the_i():
    module = text_module(strategy="full", pooling="pooler", lr=1e-3, encoder_lr_factor=0.5, layer_decay=0.8,
                         weight_decay=0.1)
    run = fit(module, [text_batch()])
    blocks = len(module.blocks)
    for group in run.optimizers[0].param_groups:
        if group["name"].startswith("head"):
            expected = 1e-3
        else:
            depth = blocks - 1 - int(group["name"].split(".")[1])
            expected = 1e-3 * 0.5 * 0.8 ** depth
        assert math.isclose(group["lr"], expected, rel_tol=1e-9), group["name"]
        no_decay = all(p.ndim <= 1 for p in group["params"])
        assert group["weight_decay"] == (0.0 if no_decay else 0.1)
    names = [g["name"] for g in run.optimizers[0].param_groups]
    assert len(names) == len(set(names))  # LearningRateMonitor refuses duplicate names
    assert {name.removesuffix(".no_decay") for name in names} == {"head", "encoder.0", "encoder.1", "encoder.2"}


def test_learning_rate_defaults_follow_the_modality():
    defaults = dict(lr=None, warmup_steps=None, schedule=None)
    text, image = text_module(**defaults), image_module(**defaults)
    assert (text.hparams.lr, text.hparams.schedule, text.hparams.warmup_fraction, text.hparams.head_dropout) == (3e-5, "linear", 0.1, 0.1)
    assert (image.hparams.lr, image.hparams.schedule) == (1e-3, "cosine")


def test_label_smoothing_changes_the_training_loss():
    batch = image_batch()
    plain, smoothed = image_module(), image_module(label_smoothing=0.2)
    smoothed.load_state_dict(plain.state_dict())
    plain.eval(), smoothed.eval()
    logits = plain(batch)
    assert torch.isclose(smoothed.training_step(batch, 0), F.cross_entropy(logits, batch["labels"], label_smoothing=0.2))
    assert not torch.isclose(plain.training_step(batch, 0), smoothed.training_step(batch, 0))


# -------------------------------------------------------------------------------- text heads
def test_mean_pooling_ignores_padding_tokens():
    module = text_module(pooling="mean").eval()
    batch = text_batch(n=4)
    padded = {key: F.pad(value, (0, 5)) if value.dim() == 2 else value for key, value in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(module.features(batch), module.features(padded))


def test_pooler_pooling_uses_bert_pooler_and_cls_uses_the_first_hidden_state():
    batch = text_batch(n=4)
    cls, pooler = text_module(pooling="cls").eval(), text_module(pooling="pooler").eval()
    pooler.load_state_dict(cls.state_dict())
    with torch.no_grad():
        hidden = cls.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        torch.testing.assert_close(cls.features(batch), hidden[:, 0])
        torch.testing.assert_close(pooler.features(batch), cls.encoder.pooled(hidden))


# -------------------------------------------------------------------------------- pretrained=
def test_simclr_lightning_checkpoint_loads_the_exact_backbone_weights(simclr_checkpoint):
    path, simclr = simclr_checkpoint
    module = FineTuneModule(pretrained=str(path), num_classes=10)
    assert module.source_info["kind"] == "simclr" and module.source_info["source"] == "lightning_checkpoint"
    expected = simclr.backbone_state_dict()
    assert module.encoder.state_dict().keys() == expected.keys()
    assert all(torch.equal(module.encoder.state_dict()[k], v) for k, v in expected.items())
    assert module.hparams.encoder_config == {"modality": "image", **IMAGE_CONFIG}


def test_exported_simclr_encoder_file_loads_the_exact_weights(simclr_checkpoint, tmp_path):
    _, simclr = simclr_checkpoint
    simclr.export_encoder(str(tmp_path / "encoder"))
    module = FineTuneModule(pretrained=str(tmp_path / "encoder"), num_classes=10)
    assert module.source_info["source"] == "encoder_directory" and module.modality == "image"
    assert all(torch.equal(module.encoder.state_dict()[k], v) for k, v in simclr.backbone_state_dict().items())


def test_scratch_init_keeps_the_checkpoint_architecture_with_new_weights(simclr_checkpoint, tiny_bert_directory):
    path, simclr = simclr_checkpoint
    for pretrained, reference in ((path, simclr.backbone), tiny_bert_directory):
        scratch = FineTuneModule(pretrained=str(pretrained), init="scratch", num_classes=3)
        theirs, ours = reference.state_dict(), scratch.encoder.state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
        weights = [k for k in ours if k.endswith("weight") and ours[k].ndim > 1]
        assert all(not torch.equal(ours[k], theirs[k]) for k in weights)


def test_hf_directory_of_a_tiny_bert_loads_the_exact_weights(tiny_bert_directory):
    directory, model = tiny_bert_directory
    module = FineTuneModule(pretrained=str(directory), num_classes=2)
    assert module.source_info["kind"] == "bert" and module.modality == "text" and module.feature_dim == 32
    assert all(torch.equal(module.encoder.state_dict()[k], v) for k, v in model.state_dict().items())


def test_saved_bert_encoder_is_a_hugging_face_directory_with_the_exact_weights(tiny_bert_directory, tmp_path):
    _, model = tiny_bert_directory
    save_encoder(tmp_path / "bert", model, model.config.to_dict())
    assert (tmp_path / "bert" / "config.json").is_file() and (tmp_path / "bert" / "model.safetensors").is_file()
    encoder, modality, dim, info = load_encoder(tmp_path / "bert")
    assert (modality, dim, info["kind"], info["source"]) == ("text", 32, "bert", "hf_directory")
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in model.state_dict().items())


def test_bert_pretrain_checkpoint_loads_the_exact_encoder_weights(tmp_path):
    pretrain = BertPretrainModule(**TINY_BERT, lr=1e-2, warmup_steps=0)
    batch = text_batch(n=4)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1] = batch["input_ids"][:, 1]
    batch = {**batch, "labels": labels, "next_sentence_label": torch.tensor([0, 1, 0, 1])}
    run = trainer(max_steps=1)
    run.fit(pretrain, DataLoader([batch], batch_size=None))
    run.save_checkpoint(tmp_path / "bert.ckpt")
    module = FineTuneModule(pretrained=str(tmp_path / "bert.ckpt"), num_classes=2)
    assert (module.source_info["kind"], module.modality) == ("bert", "text")
    expected = pretrain.encoder.state_dict()
    assert module.encoder.state_dict().keys() == expected.keys()
    assert all(torch.equal(module.encoder.state_dict()[k], v) for k, v in expected.items())
    assert module.hparams.encoder_config["num_attention_heads"] == 2


def test_real_minilm_directory_and_its_alias_load_the_same_pretrained_weights():
    module = FineTuneModule(pretrained="minilm_demo", num_classes=2, strategy="linear")
    reference = BertModel.from_pretrained(minilm_directory())
    assert module.source_info["path"] == str(minilm_directory()) and module.feature_dim == 384
    assert all(torch.equal(module.encoder.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_finetuned_checkpoint_reloads_from_its_recorded_architecture_without_the_pretrained_file(simclr_checkpoint, tmp_path):
    path, _ = simclr_checkpoint
    module = FineTuneModule(pretrained=str(path), num_classes=3, lr=1e-2)
    run = fit(module, [image_batch()])
    run.save_checkpoint(tmp_path / "finetuned.ckpt")
    reloaded = FineTuneModule.load_from_checkpoint(tmp_path / "finetuned.ckpt", pretrained=None)
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in module.state_dict().items())
    # and a fine-tuned checkpoint is itself a valid starting point
    again = FineTuneModule(pretrained=str(tmp_path / "finetuned.ckpt"), num_classes=5)
    assert again.source_info["kind"] == "finetune"
    assert all(torch.equal(again.encoder.state_dict()[k], v) for k, v in module.encoder.state_dict().items())


# -------------------------------------------------------------------------------- errors
def test_missing_pretrained_path_is_a_one_line_error(tmp_path):
    with pytest.raises(UserInputError, match="no such file") as excinfo:
        FineTuneModule(pretrained=str(tmp_path / "nope.ckpt"), num_classes=2)
    one_line_error(excinfo)


def test_empty_and_corrupt_checkpoints_are_one_line_errors(tmp_path, simclr_checkpoint):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(UserInputError, match="empty") as excinfo:
        FineTuneModule(pretrained=str(tmp_path / "empty.ckpt"), num_classes=2)
    one_line_error(excinfo)
    truncated = simclr_checkpoint[0].read_bytes()[:2000]
    (tmp_path / "truncated.ckpt").write_bytes(truncated)
    with pytest.raises(UserInputError, match="not a readable PyTorch checkpoint") as excinfo:
        FineTuneModule(pretrained=str(tmp_path / "truncated.ckpt"), num_classes=2)
    one_line_error(excinfo)


def test_checkpoint_of_another_kind_is_a_one_line_error(tmp_path):
    torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}, "hyper_parameters": {"hidden": 3}}, tmp_path / "other.ckpt")
    with pytest.raises(UserInputError, match="unsupported model") as excinfo:
        FineTuneModule(pretrained=str(tmp_path / "other.ckpt"), num_classes=2)
    one_line_error(excinfo)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(UserInputError, match="not a checkpoint"):
        FineTuneModule(pretrained=str(tmp_path / "tensor.pt"), num_classes=2)
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": "convnet"}}, tmp_path / "hollow.ckpt")
    with pytest.raises(UserInputError, match="without weights"):
        FineTuneModule(pretrained=str(tmp_path / "hollow.ckpt"), num_classes=2)


def test_no_pretrained_and_no_encoder_config_is_an_error():
    with pytest.raises(UserInputError, match="encoder_config"):
        FineTuneModule(num_classes=2)


def test_text_encoder_on_image_data_is_rejected_in_setup(tiny_bert_directory):
    module = FineTuneModule(pretrained=str(tiny_bert_directory[0]), num_classes=10)
    data = ImageDataModule(source="mnist_demo", mode="supervised", batch_size=8, val_size=20, test_size=20, image_size=16)
    with pytest.raises(UserInputError, match="text encoder but the data is image") as excinfo:
        trainer(max_steps=1).fit(module, data)
    one_line_error(excinfo)


def test_image_encoder_on_text_batches_is_rejected():
    with pytest.raises(UserInputError, match="image encoder needs 'images'"):
        image_module().training_step(text_batch(), 0)


def test_num_classes_and_channel_mismatches_with_the_data_are_rejected():
    data = ImageDataModule(source="mnist_demo", mode="supervised", batch_size=8, val_size=20, test_size=20, image_size=16)
    with pytest.raises(UserInputError, match="the data has 10 classes but model.num_classes=3") as excinfo:
        trainer(max_steps=1).fit(image_module(num_classes=3), data)
    one_line_error(excinfo)
    rgb = image_module(num_classes=10, encoder_config={**IMAGE_CONFIG, "in_channels": 3})
    with pytest.raises(UserInputError, match="in_channels=3"):
        trainer(max_steps=1).fit(rgb, data)
    simclr_views = ImageDataModule(source="mnist_demo", mode="simclr", batch_size=8, val_size=20, test_size=20, image_size=16)
    with pytest.raises(UserInputError, match="mode: supervised"):
        trainer(max_steps=1).fit(image_module(num_classes=10), simclr_views)


def test_bad_settings_are_rejected_at_construction():
    with pytest.raises(UserInputError, match="unknown strategy"):
        image_module(strategy="freeze_all")
    with pytest.raises(UserInputError, match="freeze_layers=5 but the encoder has only 4"):
        image_module(strategy="partial", freeze_layers=5)
    with pytest.raises(UserInputError, match="layer_decay"):
        image_module(layer_decay=0.0)


# -------------------------------------------------------------------------------- metrics, predictions, end to end
class DictDataset(Dataset):
    def __init__(self, n: int = 11):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 1, 16, 16, generator=generator)
        self.labels = torch.arange(n) % 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"images": self.images[index], "labels": self.labels[index]}


class DumpParametersEachEpoch(pl.Callback):
    """Saves every process's parameters at the end of each epoch (module level: ddp_spawn pickles it)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def on_train_epoch_end(self, trainer, pl_module):
        torch.save(param_snapshot(pl_module), self.directory / f"epoch{trainer.current_epoch}_rank{trainer.global_rank}.pt")

    def on_validation_epoch_end(self, trainer, pl_module):
        torch.save({k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
                   self.directory / f"val_rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_gradual_under_two_process_ddp_keeps_frozen_blocks_fixed_and_metrics_global(tmp_path):
    torch.manual_seed(0)
    module = image_module(strategy="gradual", weight_decay=0.5)
    initial = param_snapshot(module)
    dataset = DictDataset(16)
    run = trainer(max_epochs=2, strategy="ddp_spawn", devices=2, callbacks=[DumpParametersEachEpoch(tmp_path)])
    validation = DictDataset(12)  # 6 per process in batches of 3: no padding duplicates from the DistributedSampler
    run.fit(module, DataLoader(dataset, batch_size=4), DataLoader(validation, batch_size=3))
    snapshots = {(e, r): torch.load(tmp_path / f"epoch{e}_rank{r}.pt") for e in range(2) for r in range(2)}
    for epoch in range(2):
        assert all(torch.equal(snapshots[epoch, 0][k], snapshots[epoch, 1][k]) for k in initial)  # replicas agree
    encoder_keys = [k for k in initial if k.startswith("encoder.")]
    assert all(torch.equal(snapshots[0, 0][k], initial[k]) for k in encoder_keys)  # epoch 0: head only
    moved = {k for k in encoder_keys if not torch.equal(snapshots[1, 0][k], snapshots[0, 0][k])}
    top = {f"encoder.{n}" for n, _ in module.encoder.named_parameters() if n.startswith("features.") and
           int(n.split(".")[1]) >= 21}  # the fourth stage starts at features.21
    assert moved == top
    metrics = [torch.load(tmp_path / f"val_rank{r}.pt") for r in range(2)]
    assert metrics[0] == metrics[1]  # each process saw half the validation set, both log the global value
    module.load_state_dict({**module.state_dict(), **snapshots[1, 0]})  # buffers: ddp_spawn returned rank 0's
    with torch.no_grad():
        predicted = module.eval()({"images": validation.images}).argmax(1)
    assert math.isclose(metrics[0]["val/acc"], (predicted == validation.labels).float().mean().item(), rel_tol=1e-6)


def test_val_accuracy_and_macro_f1_are_computed_over_the_whole_split_not_averaged_per_batch():
    module = image_module().eval()
    dataset = DictDataset(11)  # batches of 4, 4, 3
    run = trainer()
    run.validate(module, DataLoader(dataset, batch_size=4), verbose=False)
    with torch.no_grad():
        predicted = module({"images": dataset.images}).argmax(1)
    labels = dataset.labels
    f1s = []
    for c in range(3):
        tp = ((predicted == c) & (labels == c)).sum().item()
        fp, fn = ((predicted == c) & (labels != c)).sum().item(), ((predicted != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert math.isclose(run.callback_metrics["val/acc"].item(), (predicted == labels).float().mean().item(), rel_tol=1e-6)
    assert math.isclose(run.callback_metrics["val/f1"].item(), sum(f1s) / 3, rel_tol=1e-6)


def test_prediction_writer_writes_index_prediction_and_class_probabilities(tmp_path):
    module = image_module().eval()
    dataset = DictDataset(7)
    trainer(callbacks=[PredictionWriter(tmp_path / "out")]).predict(module, DataLoader(dataset, batch_size=3),
                                                                    return_predictions=False)
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["index"]) for r in rows] == list(range(7))
    with torch.no_grad():
        expected = module({"images": dataset.images}).softmax(1)
    probabilities = torch.tensor([[float(r[f"prob_{c}"]) for c in range(3)] for r in rows])
    torch.testing.assert_close(probabilities, expected, atol=1e-6, rtol=1e-5)
    assert [int(r["prediction"]) for r in rows] == expected.argmax(1).tolist()
    assert [int(r["label"]) for r in rows] == dataset.labels.tolist()


def test_few_label_mnist_fit_then_test_beats_chance():
    torch.manual_seed(0)
    data = ImageDataModule(source="mnist_demo", mode="supervised", labels_per_class=5, image_size=28, batch_size=10,
                           val_size=100, test_size=200, augment={"crop_scale": (0.8, 1.0), "flip_prob": 0.0})
    module = FineTuneModule(encoder_config={**IMAGE_CONFIG, "width": 8}, strategy="full", lr=3e-3, weight_decay=0.0,
                            warmup_steps=0)
    run = trainer(max_epochs=12, limit_val_batches=1, check_val_every_n_epoch=6)
    run.fit(module, data)
    assert module.hparams.num_classes == 10
    result = run.test(module, data, verbose=False)[0]
    assert result["test/acc"] > 0.3 and result["test/f1"] > 0.2


def write_pairs_csv(path: Path, rows: int = 40) -> Path:
    """Sentence pairs labeled ``same`` when both sentences talk about the same animal."""
    animals = ["cat", "dog", "horse", "bird"]
    lines = ["premise,hypothesis,label"]
    for i in range(rows):
        a, b = animals[i % 4], animals[(i // 4) % 4]
        lines.append(f"the {a} sleeps on the mat,a {b} is resting,{'same' if a == b else 'different'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_data_tokenizer_other_than_the_pretraining_one_is_rejected(tmp_path):
    directory = BertModel(BertConfig(**{**TINY_BERT, "vocab_size": 200})).save_pretrained(tmp_path / "bert")
    save_tokenizer(train_wordpiece(["the cat sleeps on the mat"] * 20, vocab_size=100), directory)
    other = save_tokenizer(train_wordpiece(["a horse is resting quietly"] * 20, vocab_size=100), tmp_path / "other")
    data = TextClassificationDataModule(tokenizer=str(other), source=str(write_pairs_csv(tmp_path / "pairs.csv")),
                                        text_column="premise", text_pair_column="hypothesis", val_size=8, test_size=8,
                                        batch_size=4)
    with pytest.raises(UserInputError, match="vocabularies differ") as excinfo:
        trainer(max_steps=1).fit(FineTuneModule(pretrained=str(directory), num_classes=2), data)
    assert str(directory) in one_line_error(excinfo)


def test_data_tokenizer_larger_than_the_encoder_vocabulary_is_rejected(tmp_path, tiny_bert_directory):
    data = TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(write_pairs_csv(tmp_path / "pairs.csv")),
                                        text_column="premise", text_pair_column="hypothesis", val_size=8, test_size=8,
                                        batch_size=4)
    module = FineTuneModule(pretrained=str(tiny_bert_directory[0]), init="scratch", num_classes=2)
    with pytest.raises(UserInputError, match="has 30522 tokens but the encoder's vocabulary has 64") as excinfo:
        trainer(max_steps=1).fit(module, data)
    one_line_error(excinfo)


def test_sentence_pairs_fine_tune_from_minilm_through_fit_test_and_predict(tmp_path):
    data = TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(write_pairs_csv(tmp_path / "pairs.csv")),
                                        text_column="premise", text_pair_column="hypothesis", val_size=8, test_size=8,
                                        batch_size=8, max_seq_length=24)
    module = FineTuneModule(pretrained="minilm_demo", strategy="partial", freeze_layers=5, pooling="mean", lr=1e-3)
    seen = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch["token_type_ids"].max().item())

    run = trainer(max_epochs=1, limit_train_batches=2, callbacks=[Record(), PredictionWriter(tmp_path / "out")])
    run.fit(module, data)
    assert module.hparams.num_classes == 2 and seen and min(seen) == 1  # second segments reach the encoder
    result = run.test(module, data, verbose=False)[0]
    assert {"test/acc", "test/f1", "test/loss"} <= set(result) and math.isfinite(result["test/loss"])
    run.predict(module, data, return_predictions=False)
    assert len((tmp_path / "out" / "predictions.csv").read_text().splitlines()) == 1 + 8
