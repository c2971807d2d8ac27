"""BERT pretraining step (forward, backward, AdamW step): ours vs ``transformers.BertForPreTraining``.

Ours: :class:`lightning_transfer.BertPretrainModule` (its ``BertForPretraining``) and its own loss,
``pretraining_losses`` (the vocabulary projection at the masked rows only, plus NSP), optimized by the
library's AdamW (:func:`lightning_transfer.optim.build_optimizer`). Peer: ``transformers``'
``BertForPreTraining`` with the same config (SDPA attention, its default), ``model(..., labels=,
next_sentence_label=).loss``, optimized by ``torch.optim.AdamW`` with torch's default implementation
(what the ``transformers`` Trainer's ``adamw_torch`` uses). Same settings for both: lr 1e-4, betas
(0.9, 0.999), weight decay 0.01 except on biases and LayerNorm weights, dropout 0.1, same batch.

Batch: random token ids (the cost does not depend on them), ``[CLS] A [SEP] B [SEP]`` segments, no
padding (packed sequences), 15% of the tokens selected by :func:`mask_tokens`, NSP labels. Precision:
float32, and bfloat16 autocast (forward and loss under ``torch.autocast``, float32 weights and optimizer).

Measured in one process: the contenders alternate, one warm-up round excluded, median over the rounds.
Throughput is tokens per second (batch x length per step): per CPU-second of this process on CPU, per
wall-second on CUDA. MFU = useful model FLOPs per second / the measured rate of a large matmul of the
same dtype in the same run, where the useful FLOPs of a step are 3x the forward matmul FLOPs of the
encoder (QKV/output/FFN, attention scores and values) plus the MLM head at the masked rows only and
the pooler/NSP head; the same count for both sides, so the peer's projection at every position is not
counted as useful work. Memory: see ``_common.PeakMemory`` (printed with the results).

    python benchmarks/bert_step.py --quick            # ~2-3 minutes on 1 CPU thread
    python benchmarks/bert_step.py --compile          # adds ours with compile=True (torch.compile)
    python benchmarks/bert_step.py --device cuda --threads 0
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Clock, PeakMemory, alternate, fmt_mem, machine, matmul_rate, pick_device, setup_threads  # noqa: E402


@dataclass
class Size:
    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    batch: int
    length: int
    reps: int
    vocab: int = 30522

    def fields(self) -> dict:
        return dict(vocab_size=self.vocab, hidden_size=self.hidden, num_hidden_layers=self.layers,
                    num_attention_heads=self.heads, intermediate_size=self.ffn, max_position_embeddings=512)


def useful_flops(size: Size, masked: int) -> float:
    """Forward + backward (3x forward) matmul FLOPs of one step, MLM head at the masked rows only."""
    tokens, h = size.batch * size.length, size.hidden
    per_layer = 2 * tokens * (4 * h * h + 2 * h * size.ffn) + 4 * size.batch * size.length**2 * h
    head = 2 * masked * (h * h + h * size.vocab) + 2 * size.batch * (h * h + 2 * h)
    return 3 * (size.layers * per_layer + head)


def make_batch(size: Size, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    from lightning_transfer.data.masking import mask_tokens

    g = torch.Generator().manual_seed(seed)
    B, L, half = size.batch, size.length, size.length // 2
    ids = torch.randint(1000, size.vocab, (B, L), generator=g)
    ids[:, 0], ids[:, half], ids[:, -1] = 101, 102, 102  # [CLS] A [SEP] B [SEP]
    special = torch.zeros(B, L, dtype=torch.bool)
    special[:, [0, half, L - 1]] = True
    inputs, labels = mask_tokens(ids, special, mask_token_id=103, vocab_size=size.vocab, generator=g)
    token_type = torch.zeros(B, L, dtype=torch.long)
    token_type[:, half + 1:] = 1
    batch = {"input_ids": inputs, "token_type_ids": token_type,
             "labels": labels, "next_sentence_label": torch.randint(0, 2, (B,), generator=g)}
    return {key: value.to(device) for key, value in batch.items()}


def ours_step(size: Size, device: torch.device, batch, dtype: torch.dtype | None, compile: bool = False):
    from lightning_transfer import BertPretrainModule
    from lightning_transfer.optim import build_optimizer

    module = BertPretrainModule(**size.fields()).to(device).train()
    if compile:
        compiled = module.compile_modules()
        if not compiled:
            return None
    optimizer = build_optimizer("adamw", module.param_groups(), lr=1e-4, weight_decay=0.01)

    from lightning_transfer.data.collators import label_positions

    # what our collator adds: where the MLM labels are, found on the host (no device sync in the step)
    batch = {**batch, "mlm_positions": label_positions(batch["labels"].cpu()).to(device)}

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = module.pretraining_losses(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_step(size: Size, device: torch.device, batch, dtype: torch.dtype | None):
    import transformers

    from lightning_transfer.optim import split_decay_groups

    config = transformers.BertConfig(**size.fields(), attn_implementation="sdpa")
    model = transformers.BertForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(split_decay_groups(model.named_parameters(), 0.01), lr=1e-4, weight_decay=0.01)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (~2-3 minutes on one CPU thread)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time ours with compile=True (small size)")
    parser.add_argument("--sizes", default="small,base", help="comma-separated: small, base")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    args = parser.parse_args()
    device = pick_device(args.device)
    threads = setup_threads(args.threads or None)
    clock, memory = Clock(device), PeakMemory(device)
    cuda = device.type == "cuda"
    sizes = {
        "small": Size("4L-256H", 4, 256, 4, 1024, batch=32, length=128, reps=3 if args.quick else 7),
        "base": Size("BERT-base", 12, 768, 12, 3072, batch=32 if cuda else 4, length=128, reps=2 if args.quick else 5),
    }
    if cuda:
        sizes["small"].reps = sizes["base"].reps = 20
    precisions = {"fp32": None, "bf16": torch.bfloat16}
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}; {machine(device)}; "
          f"{threads} thread(s); tokens/s per {clock.unit}; median of alternating rounds, warm-up excluded")
    print(f"memory: {memory.what}, MiB")
    peaks = {name: matmul_rate(device, dtype or torch.float32, clock) for name, dtype in precisions.items()}
    print("measured matmul rate: " + ", ".join(f"{name} {rate / 1e9:,.0f} GFLOP/s" for name, rate in peaks.items()))
    header = (f"{'model':>10} {'batch':>7} {'prec':>5} {'side':>13} {'tokens/s':>10} {'vs HF':>7} {'MFU':>6} "
              f"{'mem MiB':>8}")
    print(header)
    for size_name in args.sizes.split(","):
        size = sizes[size_name]
        batch = make_batch(size, device)
        masked = int((batch["labels"] != -100).sum())
        tokens = size.batch * size.length
        for prec in args.precisions.split(","):
            dtype = precisions[prec]
            contenders = {"ours": ours_step(size, device, batch, dtype), "transformers": hf_step(size, device, batch, dtype)}
            if args.compile and size_name == "small":
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    step = ours_step(size, device, batch, dtype, compile=True)
                if step is None:
                    print(f"  ours+compile skipped: {caught[0].message if caught else 'torch.compile unavailable'}")
                else:
                    contenders["ours+compile"] = step
            # warm-up: 2 rounds (the compiled side compiles in its first call)
            rates = alternate({name: (fn, tokens) for name, fn in contenders.items()}, size.reps, clock, warmup=2)
            mems = {name: memory.measure(fn) for name, fn in contenders.items()}
            for name in contenders:
                mfu = useful_flops(size, masked) / tokens * rates[name] / peaks[prec]
                print(f"{size.name:>10} {f'{size.batch}x{size.length}':>7} {prec:>5} {name:>13} {rates[name]:>10,.0f} "
                      f"{rates[name] / rates['transformers']:>6.2f}x {mfu:>6.1%} {fmt_mem(mems[name]):>8}", flush=True)
            del contenders


if __name__ == "__main__":
    main()
