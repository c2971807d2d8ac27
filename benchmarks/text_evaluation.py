"""Scoring labelled texts (validation / test) with a real MiniLM: ours vs ``transformers``' evaluation loop.

Ours: ``Trainer.validate(FineTuneModule(pretrained="minilm_demo"), TextClassificationDataModule(...))``, the
path ``fit``, ``test`` and ``lightning-transfer transfer`` run: the DataModule's evaluation loader scores the
texts longest first (``LengthSortedSampler``), each batch padded to its longest row. "Ours, dataset order"
is the same module and ``Trainer.validate`` on the same tokenized rows in dataset order (what the loader
did before), so the two rows of ours isolate the order. Peer: ``transformers.BertForSequenceClassification``
loaded from the same MiniLM directory (SDPA attention, its default), the same tokenizer, and the loop of the
``transformers`` Trainer's ``evaluate``: a sequential sampler and ``DataCollatorWithPadding`` (each batch
padded to its longest row, in dataset order), forward under ``torch.no_grad``.

Texts: the review snippets of the offline demo (validation split of ``TextClassificationDataModule(
source="reviews_demo")``: 500 texts; 200 with ``--quick``), truncated at 128 tokens, batch 32, float32.
Rate: texts per CPU-second of this process (``--threads`` torch threads for all), contenders alternating,
one warm-up round excluded, median over the rounds. Each contender's accuracy is printed: all three score
the same token ids with the same weights (ours with ``pooling="pooler"``, the peer's architecture, and the
peer given our head), so the three accuracies agree.

    python benchmarks/text_evaluation.py --quick      # ~1-2 minutes on one CPU thread
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Clock, alternate, machine, pick_device, setup_threads  # noqa: E402

BATCH, MAX_LENGTH = 32, 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 texts and 3 rounds instead of 500 and 7")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for all (0: torch's default)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import datasets
    import lightning.pytorch as pl
    import transformers
    from torch.utils.data import DataLoader

    from lightning_transfer import FineTuneModule
    from lightning_transfer.data.sources import minilm_directory
    from lightning_transfer.data.text_classification import TextClassificationDataModule, token_lengths

    datasets.disable_progress_bars()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # Trainer notices, once per validate
    transformers.logging.set_verbosity_error()
    device = pick_device(args.device)
    threads = setup_threads(args.threads or None)
    clock = Clock(device)
    texts, reps = (200, 3) if args.quick else (500, 7)

    data = TextClassificationDataModule(tokenizer="minilm_demo", source="reviews_demo", val_size=texts,
                                        batch_size=BATCH, max_seq_length=MAX_LENGTH, num_workers=0)
    data.setup()
    rows = data.val_dataset
    torch.manual_seed(0)
    ours = FineTuneModule(pretrained="minilm_demo", num_classes=data.num_classes, strategy="linear", pooling="pooler")
    trainer = pl.Trainer(accelerator=device.type, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    in_order = DataLoader(rows, batch_size=BATCH, collate_fn=data._collator())
    accuracy: dict[str, float] = {}

    def validate(loader_or_data, name):
        def run():
            results = trainer.validate(ours, loader_or_data, verbose=False)[0]
            accuracy[name] = results["val/acc"]

        return run

    peer = transformers.BertForSequenceClassification.from_pretrained(minilm_directory(), num_labels=data.num_classes)
    peer.classifier.load_state_dict(ours.classifier.state_dict())  # pooler, then the same head: same predictions
    peer = peer.to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_directory())
    # the same token ids (one tokenizer.json), each row unpadded, for the peer's collator to pad
    features = [{"input_ids": row["input_ids"], "token_type_ids": row["token_type_ids"],
                 "attention_mask": [1] * len(row["input_ids"]), "labels": int(row["labels"])}
                for row in rows.with_format(None)]
    peer_loader = DataLoader(features, batch_size=BATCH, collate_fn=transformers.DataCollatorWithPadding(tokenizer))

    def transformers_evaluate():
        correct = 0
        with torch.no_grad():
            for batch in peer_loader:
                batch = {key: value.to(device) for key, value in batch.items()}
                logits = peer(**{key: value for key, value in batch.items() if key != "labels"}).logits
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
        accuracy["transformers"] = correct / len(features)

    lengths = token_lengths(rows)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; {machine(device)}; {threads} thread(s); "
          f"texts/s = texts per {clock.unit}; {reps} alternating rounds, median, warm-up excluded")
    print(f"{len(rows)} review snippets, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
          f"batch {BATCH}, float32")
    rates = alternate({
        "ours (longest first)": (validate(data.val_dataloader(), "ours (longest first)"), len(rows)),
        "ours, dataset order": (validate(in_order, "ours, dataset order"), len(rows)),
        "transformers evaluate loop": (transformers_evaluate, len(rows)),
    }, reps, clock)
    peer_rate = rates["transformers evaluate loop"]
    print(f"{'':28s} {'texts/s':>9s} {'ours/peer':>10s} {'accuracy':>9s}")
    for name, rate in rates.items():
        key = "transformers" if name.startswith("transformers") else name
        print(f"{name:28s} {rate:9.1f} {rate / peer_rate:9.2f}x {accuracy[key]:9.4f}")


if __name__ == "__main__":
    main()
