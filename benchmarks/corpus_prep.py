"""Corpus preparation (tokenize and pack into 128-token examples): ours vs the ``run_mlm.py`` recipe.

Ours: :class:`~lightning_transfer.data.text.TextPretrainDataModule` on the offline demo corpus
(``source="reviews_demo"``), ``setup("fit")`` with a fresh ``cache_dir`` every round, so each round
reads the corpus, sentence-splits, tokenizes, packs (``nsp=False``: RoBERTa-style full sentences;
``--nsp``: BERT's sentence pairs) and writes the cache. Peer: the Hugging Face ``run_mlm.py`` recipe on
the same documents and the same tokenizer: ``PreTrainedTokenizerFast`` + ``datasets.Dataset.map``
tokenization (``return_special_tokens_mask=True``) then ``group_texts`` (concatenate, cut into 128-token
blocks), in memory (no cache written, which favours the peer). Both: one process (``num_proc=1``), the
same ``RAYON_NUM_THREADS`` for the Rust tokenizer.

The tokenizer is a WordPiece the DataModule trains once before timing (its training time is reported
separately, not counted). Throughput is corpus tokens (the documents' word pieces under that tokenizer,
counted once) per CPU-second of this process (threads included), median of alternating rounds after
one warm-up round.

    python benchmarks/corpus_prep.py --quick      # ~1-2 minutes
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Clock, PeakMemory, alternate, fmt_mem, machine, setup_threads  # noqa: E402

MAX_LENGTH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--nsp", action="store_true", help="ours builds NSP sentence pairs instead of packing")
    parser.add_argument("--rayon-threads", type=int, default=1, help="RAYON_NUM_THREADS for both (tokenizers)")
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.rayon_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import datasets
    import torch
    import transformers

    from lightning_transfer.data.text import TextPretrainDataModule

    datasets.disable_progress_bars()
    setup_threads(1)
    reps = 3 if args.quick else 7
    device = torch.device("cpu")
    clock, memory = Clock(device), PeakMemory(device)
    work = Path(tempfile.mkdtemp(prefix="corpus-bench-"))

    start = time.process_time()
    trainer = TextPretrainDataModule(source="reviews_demo", tokenizer_vocab_size=8192, cache_dir=str(work / "tokenizer"))
    tokenizer = trainer.tokenizer  # trained (WordPiece) and cached
    train_seconds = time.process_time() - start
    tokenizer_file = next((work / "tokenizer").glob("tokenizer-*/tokenizer.json"))
    documents = trainer._read_documents()
    corpus_tokens = sum(len(enc.ids) for enc in tokenizer.encode_batch(documents, add_special_tokens=False))

    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file), unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]")
    rounds = iter(range(10**6))

    def ours():
        data = TextPretrainDataModule(source="reviews_demo", tokenizer=str(tokenizer_file), max_seq_length=MAX_LENGTH,
                                      nsp=args.nsp, val_fraction=0.0, cache_dir=str(work / f"ours-{next(rounds)}"))
        data.setup("fit")
        return data.train_dataset

    def run_mlm():
        raw = datasets.Dataset.from_dict({"text": documents})

        def tokenize_function(examples):
            return hf_tokenizer(examples["text"], return_special_tokens_mask=True)

        def group_texts(examples):  # run_mlm.py's, verbatim in substance
            concatenated = {k: sum(examples[k], []) for k in examples.keys()}
            total_length = len(concatenated[list(examples.keys())[0]])
            total_length = (total_length // MAX_LENGTH) * MAX_LENGTH
            return {k: [t[i: i + MAX_LENGTH] for i in range(0, total_length, MAX_LENGTH)]
                    for k, t in concatenated.items()}

        tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
        return tokenized.map(group_texts, batched=True)

    print(f"datasets {datasets.__version__}, transformers {transformers.__version__}; {machine(device)}; "
          f"RAYON_NUM_THREADS={args.rayon_threads}; tokens/s = corpus tokens per {clock.unit}; "
          f"{reps} alternating rounds, median, warm-up excluded")
    print(f"corpus: reviews_demo, {len(documents):,} documents, {corpus_tokens:,} word pieces; tokenizer training "
          f"(once, not timed below): {train_seconds:.1f} CPU-s; ours: {'NSP pairs' if args.nsp else 'packing'}, "
          f"cache written each round")
    print(f"memory: {memory.what}, MiB")
    rates = alternate({"ours": (ours, corpus_tokens), "run_mlm": (run_mlm, corpus_tokens)}, reps, clock)
    mems = {"ours": memory.measure(ours), "run_mlm": memory.measure(run_mlm)}
    print(f"{'side':>8} {'tokens/s':>12} {'vs run_mlm':>11} {'mem MiB':>8}")
    for name in rates:
        print(f"{name:>8} {rates[name]:>12,.0f} {rates[name] / rates['run_mlm']:>10.2f}x {fmt_mem(mems[name]):>8}")


if __name__ == "__main__":
    main()
