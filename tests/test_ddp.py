"""DDP correctness of every module: two CPU processes with gloo against one process in this one.

The two processes run once for the whole file (see tests/helpers/ddp.py: torchrun-style children,
``Trainer(strategy="ddp", devices=2)``), each scenario writing its results; every test below checks
one scenario's results against a single-process run of the same thing on the concatenated batch.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.collators import ClassificationCollator
from tests.helpers import ddp
from tests.helpers.ddp import tiny_trainer
from tests.helpers.once import once_for_all_workers


@pytest.fixture(scope="module")
def initial_states():
    torch.manual_seed(0)
    states = {"simclr_state": ddp.simclr_module().state_dict(), "bert_state": ddp.bert_module().state_dict()}
    states["finetune_state"] = ddp.finetune_module().state_dict()
    states["finetune_text_state"] = ddp.finetune_text_module().state_dict()
    return states


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory, worker_id, initial_states):
    out = once_for_all_workers(tmp_path_factory, worker_id, "ddp_two_process_results",
                               lambda folder: ddp.run_two_processes(folder, initial_states))

    def results(name: str) -> list[dict]:
        errors = sorted(out.glob(f"{name}_rank*.err"))
        if errors:
            pytest.fail(f"scenario {name} failed under DDP:\n" + "\n".join(e.read_text() for e in errors))
        files = [out / f"{name}_rank{r}.pt" for r in range(2)]
        if not all(f.exists() for f in files):
            pytest.fail(f"scenario {name} did not finish on both processes (hang?): "
                        f"{(out / 'deadline').read_text() if (out / 'deadline').exists() else 'a process died'}")
        return [torch.load(f, weights_only=False) for f in files]

    return results


def test_simclr_ddp_step_equals_one_process_step_on_the_concatenated_batch(two_process_results, initial_states):
    ranks = two_process_results("simclr")
    assert sorted(ranks[0]["indices"] + ranks[1]["indices"]) == list(range(8))  # DistributedSampler: disjoint halves
    assert ranks[0]["losses"][0] != pytest.approx(ranks[1]["losses"][0], rel=1e-3)  # really different data

    single = ddp.simclr_module()
    single.load_state_dict(initial_states["simclr_state"])
    trainer = tiny_trainer(max_steps=1)
    trainer.fit(single, DataLoader(ddp.simclr_data(), batch_size=8))

    # linear LR scaling sees the global batch: 2 processes x 4 = 1 process x 8
    assert ranks[0]["lr"] == pytest.approx(trainer.optimizers[0].param_groups[0]["lr"]) == pytest.approx(8.0 * 8 / 256)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(single.state_dict()["projection.net.0.weight"], initial_states["simclr_state"]["projection.net.0.weight"])


def test_bert_ddp_loss_curve_equals_one_process_with_the_same_global_batch(two_process_results, initial_states):
    ranks = two_process_results("bert")
    single = ddp.bert_module()
    single.load_state_dict(initial_states["bert_state"])
    record = ddp.RecordLosses()
    # Lightning's DistributedSampler shuffles (seeded); step k of one process sees the union of what the
    # two processes saw at step k
    steps = [ranks[0]["indices"][4 * k:4 * k + 4] + ranks[1]["indices"][4 * k:4 * k + 4] for k in range(3)]
    assert sorted(sum(steps, [])) == list(range(24))
    tiny_trainer(max_steps=3, gradient_clip_val=1.0, callbacks=[record]).fit(
        single, DataLoader(ddp.ListDataset(ddp.bert_rows()), batch_sampler=steps))
    assert len(record.losses) == len(ranks[0]["losses"]) == 3
    for curve in (ranks[0]["losses"], ranks[1]["losses"]):
        assert curve == pytest.approx(record.losses, rel=1e-4)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    # epoch metrics are torchmetrics objects: both processes report the same, global value
    assert ranks[0]["metrics"]["train/mlm_loss"] == ranks[1]["metrics"]["train/mlm_loss"]


def test_finetune_ddp_metrics_are_reduced_over_processes(two_process_results, initial_states):
    ranks = two_process_results("finetune")
    assert ranks[0]["val"] == ranks[1]["val"]
    single = ddp.finetune_module()
    dm = ddp.finetune_data()
    single.load_state_dict(initial_states["finetune_state"], strict=False)
    trainer = tiny_trainer(limit_val_batches=None)
    trainer.validate(single, dm, verbose=False)  # builds the head from the data ...
    single.load_state_dict({**single.state_dict(), **ranks[0]["head"]})  # ... and gets the DDP run's head weights
    trainer.validate(single, dm, verbose=False)
    for key in ("val/acc", "val/f1", "val/loss"):
        assert math.isclose(ranks[0]["val"][key], float(trainer.callback_metrics[key]), rel_tol=1e-5), key


def test_finetune_ddp_same_label_subset_disjoint_shards_and_a_rank_only_key_does_not_hang(two_process_results):
    ranks = two_process_results("finetune")
    assert ranks[0]["train_subset"] == ranks[1]["train_subset"] and len(ranks[0]["train_subset"]) == 20
    assert ranks[0]["sampler"] == "DistributedSampler"
    assert not set(ranks[0]["train_shard"]) & set(ranks[1]["train_shard"])
    assert sorted(ranks[0]["train_shard"] + ranks[1]["train_shard"]) == list(range(20))
    assert ranks[0]["fit_steps"] == ranks[1]["fit_steps"] == 2  # LogOnRankZeroOnly did not stall process 1


def test_text_fine_tuning_ddp_equals_one_process_on_the_concatenated_batches(two_process_results, initial_states):
    ranks = two_process_results("finetune_text")
    # different data on each process: disjoint shards, different losses
    assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
    assert ranks[0]["losses"] != pytest.approx(ranks[1]["losses"], rel=1e-3)
    steps = [ranks[0]["indices"][4 * k:4 * k + 4] + ranks[1]["indices"][4 * k:4 * k + 4] for k in range(3)]
    assert sorted(sum(steps, [])) == list(range(24))

    single = ddp.finetune_text_module()
    single.load_state_dict(initial_states["finetune_text_state"])
    record = ddp.RecordLosses()
    tiny_trainer(max_steps=3, callbacks=[record]).fit(single, DataLoader(ddp.ListDataset(ddp.classification_rows()),
                                                                         batch_sampler=steps))
    # the DDP loss is the mean over processes of each process's mean loss: equal shards, so the global mean
    for k in range(3):
        assert (ranks[0]["losses"][k] + ranks[1]["losses"][k]) / 2 == pytest.approx(record.losses[k], rel=1e-5)
    initial = initial_states["finetune_text_state"]
    for name, value in single.state_dict().items():
        if name.endswith("attention.self.key.bias"):
            # softmax ignores a shift of every score: this gradient is zero but for rounding noise, which
            # AdamW normalizes into an update that differs between any two summation orders; it stays tiny
            for state in (ranks[0]["state"], ranks[1]["state"], single.state_dict()):
                assert (state[name] - initial[name]).abs().max() < 1e-4, name
            continue
        for r in range(2):
            torch.testing.assert_close(ranks[r]["state"][name], value, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, r=r, name=name: f"process {r}: {name}: {m}")
    unchanged = [n for n, v in single.state_dict().items() if torch.equal(v, initial[n])]
    assert all(n.startswith("encoder.pooler.") for n in unchanged), unchanged  # strategy "full": all else trained


def test_text_evaluation_sorted_by_length_scores_each_example_once_under_ddp(two_process_results):
    ranks = two_process_results("finetune_text")
    assert [r["test_sampler"] for r in ranks] == ["LengthSortedSampler"] * 2  # Lightning kept it, did not wrap it
    assert sorted(ranks[0]["test_indices"] + ranks[1]["test_indices"]) == list(range(24))
    assert ranks[0]["test"] == ranks[1]["test"]
    single = ddp.finetune_text_module()
    single.load_state_dict(ranks[0]["state"])
    trainer = tiny_trainer()  # one process, the rows in order, each batch padded to its longest row
    trainer.test(single, DataLoader(ddp.ListDataset(ddp.unpadded_classification_rows()), batch_size=4,
                                    collate_fn=ClassificationCollator(pad_id=0)), verbose=False)
    for key in ("test/acc", "test/f1", "test/loss"):
        assert math.isclose(ranks[0]["test"][key], float(trainer.callback_metrics[key]), rel_tol=1e-5), key


def test_ddp_resume_gives_each_process_its_own_random_state_back(two_process_results):
    """Each process draws its own dropout masks (SeedPerRank); a run killed mid-epoch and resumed from
    the checkpoint process 0 wrote ends with the uninterrupted run's weights on both processes."""
    ranks = two_process_results("resume_rng")
    k, n = ddp.RESUME_CRASH_STEP, ddp.RESUME_STEPS
    assert ranks[0]["checkpoint"] == ranks[1]["checkpoint"]  # one file, written by process 0, read by both
    checkpoint = torch.load(ranks[0]["checkpoint"], weights_only=True)  # tensors and plain values only
    (loader_state,) = [s for s in _loader_states(checkpoint) if "rng" in s]
    per_rank = loader_state["rng_per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["torch"], per_rank[1]["torch"])
    assert torch.equal(loader_state["rng"]["torch"], per_rank[0]["torch"])
    assert not torch.equal(ranks[0]["full_rng"][k], ranks[1]["full_rng"][k])  # really different streams
    for r, result in enumerate(ranks):
        assert result["steps"] == (n, n)
        assert sorted(result["resumed_rng"]) == list(range(k, n))
        assert torch.equal(per_rank[r]["torch"], result["full_rng"][k])  # what process r had at step k
        for step in range(k, n):  # the resumed process r draws what the uninterrupted process r drew
            assert torch.equal(result["resumed_rng"][step], result["full_rng"][step]), \
                f"process {r} resumed with another random state than it had at step {step}"
    for r, result in enumerate(ranks):
        for name, value in result["full"].items():
            torch.testing.assert_close(result["resumed"][name], value, rtol=1e-6, atol=1e-7,
                                       msg=lambda m, r=r, name=name: f"process {r}: {name}: {m}")


def _loader_states(checkpoint: dict) -> list[dict]:
    """The train-loader state dicts in a Lightning checkpoint, wherever the loop nests them."""
    found = []

    def visit(value):
        if isinstance(value, dict):
            if "consumed" in value and "epoch" in value:
                found.append(value)
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(checkpoint["loops"])
    return found


def test_simclr_probe_with_an_unlabeled_batch_on_one_process_does_not_hang(two_process_results):
    ranks = two_process_results("simclr_probe")
    assert ranks[0]["metrics"]["train/probe_acc"] == ranks[1]["metrics"]["train/probe_acc"]


def test_augmentation_and_masking_draw_differently_on_each_process(two_process_results):
    rank0 = two_process_results("seeding")[0]
    views, masks = rank0["views"], rank0["masks"]
    assert views[0].shape == views[1].shape and not torch.equal(views[0], views[1])
    assert not torch.equal(masks[0], masks[1])


def test_sync_batchnorm_is_converted_by_lightning_but_needs_a_gpu_to_run(two_process_results):
    """Lightning swaps BatchNorm for SyncBatchNorm with ``sync_batchnorm=True``; torch's SyncBatchNorm
    runs on GPU (CUDA/XPU/HPU) only (torch 2.x raises ValueError for a CPU input in a process group),
    so on CPU/gloo we check the conversion and the clear error. A torch that does run it on CPU must
    really synchronize: each process's output is its slice of BatchNorm over both processes' batches."""
    import lightning.pytorch as pl

    from lightning_transfer import SimCLRModule

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", sync_batchnorm=True, logger=False)
    module = SimCLRModule(backbone="convnet", width=4, in_channels=1, projection_hidden_dim=8, projection_dim=4, num_classes=0)
    converted = trainer.strategy._layer_sync.apply(module)
    kinds = {type(m).__name__ for m in converted.modules() if "BatchNorm" in type(m).__name__}
    assert kinds == {"SyncBatchNorm"}
    ranks = two_process_results("seeding")
    errors = [r["sync_bn_error"] for r in ranks]
    if errors == [None, None]:  # a torch that runs SyncBatchNorm on CPU
        both = torch.cat([r["sync_bn_input"] for r in ranks])
        expected = torch.nn.BatchNorm1d(4).train()(both).detach()
        torch.testing.assert_close(torch.cat([r["sync_bn_output"] for r in ranks]), expected, rtol=1e-5, atol=1e-6)
    else:
        assert all(e is not None and e.startswith("ValueError") and "GPU" in e for e in errors), errors
