"""No host-device synchronization on the training hot path (issue #15).

On a GPU, reading a tensor's value on the host (``.item()``, ``bool(t)``, ``.tolist()``, printing),
an operation whose output size depends on the values (``nonzero``, boolean indexing, ``unique``) or a
blocking copy from the host (``torch.tensor(..., device=...)``) makes the host wait until the device
has finished everything queued: the GPU then idles while Python catches up. CPU tests cannot see
that, so they count the calls that would do it (a CPU proxy): :class:`HostReads`, a
``torch.overrides.TorchFunctionMode``, sees every tensor operation made from Python, and each
module trains a few steps in ``Trainer.fit`` on the user path (the collators of the DataModules,
the progress bar, a logger, the recipes' step-level callbacks). The assertions:

- a step at which Lightning writes no logger makes no such call at all (ours, torchmetrics' or
  Lightning's: a value on the progress bar is read with ``.item()`` after every step);
- a step at which it writes the loggers (every ``log_every_n_steps``) reads where logging does:
  Lightning reads ``train/loss`` (the one step-level value each module logs) once to hand it to the
  loggers, Lightning's ``LearningRateMonitor`` copies each learning rate it logs to the device, and
  ``StopOnNonFiniteLoss`` reads its device-side record of non-finite losses once (by default at those
  steps, where the device is waited for anyway); nothing else.

What the proxy cannot see: work done in C++ (a kernel that synchronizes internally) and
``tensor.to(device)`` copies from the host (on the CPU they are no-ops). ``scripts/gpu_sync_check.py``
runs the same steps under ``torch.cuda.set_sync_debug_mode("error")`` on a GPU.

Work on host data is not counted: the DataLoader (datasets, collators), and Lightning's
``on_before_batch_transfer`` / ``transfer_batch_to_device``, before the batch reaches the device.
"""

from __future__ import annotations

import traceback
from collections import Counter

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader

from lightning_transfer import BertPretrainModule, FineTuneModule, SimCLRModule
from lightning_transfer.callbacks import StopOnNonFiniteLoss, ThroughputReport
from lightning_transfer.data.collators import ClassificationCollator, PretrainingCollator
from lightning_transfer.modules import bert_pretrain
from tests.helpers.token_examples import classification_examples, pretraining_examples

# Tensor calls that make the host wait for the device (when the tensor is on a GPU).
READS_VALUES = {
    "item",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "__complex__",
    "tolist",
    "numpy",
    "__array__",
    "__format__",
    "__repr__",
    "__str__",
    "cpu",
    "is_nonzero",
    "equal",
    "allclose",
}
VALUE_SIZED = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}
HOST_SIDE_FILES = ("/torch/utils/data/",)  # DataLoader, datasets, collate functions: host data
HOST_SIDE_FUNCTIONS = {"_on_before_batch_transfer", "transfer_batch_to_device"}  # before the batch is on the device


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in parts)


def syncs_on_a_gpu(name: str, args: tuple, kwargs: dict) -> bool:
    """Would this call make the host wait for the device, were its tensors on a GPU?"""
    if name in READS_VALUES or name in VALUE_SIZED:
        return True
    if name in ("__getitem__", "__setitem__", "index_put", "index_put_", "index"):
        return len(args) > 1 and _bool_index(args[1])  # boolean mask: output size read from the device
    if name in ("tensor", "as_tensor"):
        return kwargs.get("device") is not None  # a blocking copy from host memory
    if name == "repeat_interleave":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    return False


class HostReads(TorchFunctionMode):
    """Records, while :attr:`counting`, every tensor call for which :func:`syncs_on_a_gpu` says yes,
    as ``(name, origin)``: the innermost frame in lightning_transfer (what we can change), else in
    Lightning's own code (not its utilities), else outside torch (torch.optim counts as outside)."""

    def __init__(self):
        super().__init__()
        self.counting = False
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.counting:
            name = getattr(func, "__name__", str(func))
            if syncs_on_a_gpu(name, args, kwargs):
                stack = traceback.extract_stack()[:-1]
                if not any(
                    f.name in HOST_SIDE_FUNCTIONS or any(p in f.filename for p in HOST_SIDE_FILES) for f in stack
                ):
                    self.calls.append((name, _origin(stack)))
        return func(*args, **kwargs)


def _origin(stack) -> str:
    def where(frame) -> str:
        return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno} ({frame.name})"

    frames = list(reversed(stack))
    for wanted in ("/lightning_transfer/", "/lightning/pytorch/"):
        for frame in frames:
            if wanted in frame.filename and "/utilities/" not in frame.filename:
                return where(frame)
    outside = [f for f in frames if "/torch/" not in f.filename or "/torch/optim/" in f.filename]
    return where(outside[0]) if outside else "?"


class RecordingLogger(CSVLogger):
    """A CSVLogger that counts its writes (to tell the steps at which Lightning wrote the loggers)."""

    writes = 0

    def log_metrics(self, metrics, step=None):
        self.writes += 1
        super().log_metrics(metrics, step)


class PerStep(pl.Callback):
    """Cuts :class:`HostReads`' record into training-loop iterations: from one ``on_train_batch_start``
    to the next (the step, Lightning's logging after it and the next batch's transfer), the last one
    ending at ``on_train_epoch_end``. Each iteration: (host reads, did the logger write?)."""

    def __init__(self, reads: HostReads, logger: RecordingLogger):
        self.reads, self.logger = reads, logger
        self.steps: list[tuple[list[tuple[str, str]], bool]] = []
        self._start: tuple[int, int] | None = None

    def _close(self) -> None:
        if self._start is not None:
            calls, writes = self._start
            self.steps.append((self.reads.calls[calls:], self.logger.writes > writes))
            self._start = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close()
        self.reads.counting = True
        self._start = (len(self.reads.calls), self.logger.writes)

    def on_train_epoch_end(self, trainer, pl_module):
        self._close()
        self.reads.counting = False


def host_reads_per_step(module: pl.LightningModule, loader: DataLoader, tmp_path, steps: int = 6, log_every: int = 3):
    """Fit ``module`` for ``steps`` steps as a user would (progress bar, a logger, gradient clipping
    and the recipes' step-level callbacks, as in configs/) and return :class:`PerStep`'s record."""
    reads, logger = HostReads(), RecordingLogger(tmp_path)
    record = PerStep(reads, logger)
    callbacks = [
        record,
        StopOnNonFiniteLoss(),
        LearningRateMonitor(logging_interval="step"),
        ModelCheckpoint(dirpath=tmp_path, filename="resume-{step}", every_n_train_steps=1000, monitor=None),
        ThroughputReport(warmup_steps=1),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=1,
        log_every_n_steps=log_every,
        gradient_clip_val=1.0,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=True,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    with reads:
        trainer.fit(module, loader)
    record._close()
    assert len(record.steps) == steps
    return record.steps


def assert_no_host_reads_but_at_logging_steps(steps) -> None:
    """Zero host reads at the steps without a logger write; at those with one, only logging's: one
    ``.item()`` in Lightning's ``_LoggerConnector.log_metrics`` (``train/loss``), one read of
    StopOnNonFiniteLoss's record, and LearningRateMonitor's ``torch.tensor(lr, device=...)`` copies."""
    quiet = [calls for calls, wrote in steps if not wrote]
    logging = [calls for calls, wrote in steps if wrote]
    assert quiet and logging
    found = Counter(call for calls in quiet for call in calls)
    assert not found, f"host reads at steps without logging (calls over {len(quiet)} steps): {dict(found)}"
    for calls in logging:
        files = Counter(origin.split(":")[0].rsplit("/", 1)[-1] for _, origin in calls)
        lr_copies = files.pop("lr_monitor.py", 0)
        assert files == {"logger_connector.py": 1, "non_finite_loss.py": 1}, calls
        assert all(name == "tensor" for name, origin in calls if "lr_monitor.py" in origin) and lr_copies >= 1


# ------------------------------------------------------------------------------------------------ data
BERT = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
    warmup_steps=0,
)


def bert_loader() -> DataLoader:
    return DataLoader(
        pretraining_examples(32, length=16, vocab=100, batch=4),
        batch_size=4,
        collate_fn=PretrainingCollator(pad_id=0, mask_id=4, vocab_size=100, mlm_probability=0.3, seed=0),
    )


class OtherProcessLikeThisOne:
    """A stand-in for DDP's all_reduce with a second process that selected as many tokens as this one."""

    def __init__(self):
        self.calls = 0

    def __call__(self, tensor, *args, **kwargs):
        self.calls += 1
        tensor.mul_(2)


# ------------------------------------------------------------------------------------------------ tests
def test_bert_pretraining_steps_read_nothing_from_the_device(tmp_path):
    assert_no_host_reads_but_at_logging_steps(host_reads_per_step(BertPretrainModule(**BERT), bert_loader(), tmp_path))


def test_bert_pretraining_under_ddp_keeps_the_global_token_count_on_the_device(tmp_path, monkeypatch):
    """The DDP branch of the MLM normaliser (all-reduced selected-token count), with a stand-in
    all_reduce: no host read, and the loss of one process among two alike is the one-process loss."""
    torch.manual_seed(0)
    single = BertPretrainModule(**BERT)
    twin = BertPretrainModule(**BERT)
    twin.load_state_dict(single.state_dict())
    batch = next(iter(bert_loader()))
    torch.manual_seed(1)  # the same dropout
    expected = single.training_step(batch, 0).detach()
    all_reduce = OtherProcessLikeThisOne()
    monkeypatch.setattr(bert_pretrain, "is_distributed", lambda: True)
    monkeypatch.setattr(bert_pretrain, "world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    torch.manual_seed(1)
    assert torch.equal(twin.training_step(batch, 0).detach(), expected)  # (2N / 2) = N: the same normaliser
    assert_no_host_reads_but_at_logging_steps(host_reads_per_step(BertPretrainModule(**BERT), bert_loader(), tmp_path))
    assert all_reduce.calls >= 7  # the DDP branch ran at every step


def test_simclr_steps_with_the_online_probe_read_nothing_from_the_device(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 48
    labels = torch.arange(n) % 3
    labels[::4] = -1  # unlabeled images (STL-10's unlabeled split): the probe skips them
    from tests.helpers.ddp import ViewsDataset

    views = ViewsDataset(torch.randn(n, 1, 16, 16, generator=g), torch.randn(n, 1, 16, 16, generator=g), labels)
    module = SimCLRModule(
        backbone="convnet",
        width=8,
        in_channels=1,
        projection_hidden_dim=16,
        projection_dim=8,
        lr=0.1,
        lr_scaling="none",
        warmup_steps=0,
        num_classes=3,
    )  # LARS, the default
    assert_no_host_reads_but_at_logging_steps(host_reads_per_step(module, DataLoader(views, batch_size=8), tmp_path))


@pytest.mark.parametrize("modality", ["text", "image"])
def test_fine_tuning_steps_read_nothing_from_the_device(modality, tmp_path):
    if modality == "text":
        module = FineTuneModule(
            encoder_config={k: v for k, v in BERT.items() if k != "warmup_steps"},
            num_classes=3,
            lr=1e-3,
            warmup_steps=0,
            pooling="mean",
        )
        loader = DataLoader(classification_examples(32, shortest=6, vocab=64), batch_size=4, collate_fn=ClassificationCollator(pad_id=0))
    else:
        config = {"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 8}
        module = FineTuneModule(encoder_config=config, num_classes=3, lr=1e-3, warmup_steps=0)
        images = [{"images": torch.randn(1, 16, 16), "labels": i % 3} for i in range(32)]
        loader = DataLoader(images, batch_size=4)
    assert_no_host_reads_but_at_logging_steps(host_reads_per_step(module, loader, tmp_path))


def test_the_proxy_sees_each_kind_of_host_read():
    """The counter itself: each kind of call it must catch, and none of the device-side look-alikes."""
    t, mask = torch.arange(4.0), torch.tensor([True, False, True, False])
    reads = HostReads()
    with reads:
        reads.counting = True
        t.sum().item(), bool(t.any()), float(t[0]), t.tolist(), t[mask], t.nonzero(), f"{t[1]}"
        torch.tensor(1.0, device=t.device), t.unique()
        # device-side: no read
        t[torch.tensor([0, 2])], t.index_select(0, torch.tensor([1])), torch.where(mask, t, 0.0), torch.full((), 2.0)
        t.clamp(min=1.0) / 2, t.shape[0] + 1, t.numel()
    assert [name for name, _ in reads.calls] == [
        "item",
        "__bool__",
        "__float__",
        "tolist",
        "__getitem__",
        "nonzero",
        "__format__",
        "tensor",
        "unique",
    ]
    assert all(origin.startswith(__file__) for _, origin in reads.calls)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the real check")
def test_the_gpu_check_script_says_so_and_exits_cleanly_without_cuda(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_sync_check.py"
    spec = importlib.util.spec_from_file_location("gpu_sync_check", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([]) == 0
    assert "no CUDA device here" in capsys.readouterr().out
