#!/usr/bin/env bash
# GPU check (one script, at most ~8 minutes on one GPU, all offline): each main recipe for STEPS steps
# in both mixed precisions, printing throughput (images/s, sequences/s, tokens/s), peak memory and the
# host-device synchronizations per training step (torch.cuda.set_sync_debug_mode("warn"), counted by
# lightning_transfer.callbacks.HostSyncCounter):
#   1. configs/simclr/cifar10.yaml on an ImageFolder of 32 px PNGs written here (stand-in for CIFAR-10),
#      augmentation on the device, DDP strategy with sync_batchnorm, bf16-mixed and 16-mixed (GradScaler)
#   2. configs/bert/reviews_tiny.yaml (the offline review corpus), bf16-mixed and 16-mixed
#   3. fine-tuning from both: configs/finetune/cifar10_from_simclr.yaml (10 labels per class) and
#      configs/finetune/reviews_from_bert.yaml, from the bf16 checkpoints of 1 and 2
#   bash scripts/gpu_check.sh [STEPS]          (default 150; output under runs/gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-150}
OUT=${OUT:-runs/gpu_check}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (nvidia-smi missing or failing); run this on a machine with an NVIDIA GPU" >&2
  exit 3
fi
VENV=${VENV:-.venv}  # the same variable scripts/setup.sh reads
export VENV
bash scripts/setup.sh
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch $("$PY" -c 'import torch; print(torch.__version__)') in $VENV sees no CUDA device (CPU-only wheel?)" >&2
  exit 3
fi
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}')"
mkdir -p "$OUT"
"$PY" - "$OUT/images" <<'PY'
import sys
from pathlib import Path
from tests.helpers.images import write_image_folder
write_image_folder(Path(sys.argv[1]), classes=tuple(f"class{c}" for c in range(10)), per_class=300, size=32)
PY

COMMON=(--trainer.accelerator gpu --trainer.devices 1 --trainer.num_nodes 1
        --trainer.max_steps "$STEPS" --trainer.max_epochs -1
        --trainer.limit_val_batches 2 --trainer.val_check_interval 1.0 --trainer.num_sanity_val_steps 0
        --trainer.enable_progress_bar false
        "--trainer.callbacks+=lightning_transfer.callbacks.ThroughputReport"
        "--trainer.callbacks+=lightning_transfer.callbacks.HostSyncCounter")
FOLDER=(--data.init_args.source folder --data.init_args.root "$OUT/images" --data.init_args.image_size 32
        --data.init_args.decode_size 32 --data.init_args.val_size 200 --data.init_args.test_size 200
        --data.init_args.num_workers 4 --data.init_args.download false)
run() {  # name, precision, then lightning-transfer fit arguments
  local name=$1 precision=$2
  shift 2
  echo "gpu_check: $name ($precision)"
  if ! "$PY" -m lightning_transfer.cli fit "$@" "${COMMON[@]}" --trainer.precision "$precision" \
      --trainer.default_root_dir "$OUT/$name" >"$OUT/$name.log" 2>&1; then
    tail -n 20 "$OUT/$name.log" >&2
    echo "gpu_check: $name FAILED, full log in $OUT/$name.log" >&2
    exit 1
  fi
  grep -E "^(throughput|host_syncs)" "$OUT/$name.log"
}
SIMCLR=(--config configs/simclr/cifar10.yaml "${FOLDER[@]}" --data.init_args.batch_size 256
        --data.init_args.augment_on device --trainer.strategy ddp --trainer.sync_batchnorm true)
run simclr_cifar10_bf16 bf16-mixed "${SIMCLR[@]}"
run simclr_cifar10_fp16 16-mixed "${SIMCLR[@]}"
BERT=(--config configs/bert/reviews_tiny.yaml --data.init_args.cache_dir "$OUT/bert_cache" --trainer.strategy auto)
run bert_reviews_tiny_bf16 bf16-mixed "${BERT[@]}"
run bert_reviews_tiny_fp16 16-mixed "${BERT[@]}"

SIMCLR_CKPT=$(cat "$OUT/simclr_cifar10_bf16/best_checkpoint.txt")
run finetune_cifar10 bf16-mixed --config configs/finetune/cifar10_from_simclr.yaml "${FOLDER[@]}" --trainer.strategy auto \
  --model.init_args.pretrained "$SIMCLR_CKPT" --data.init_args.label_fraction null --data.init_args.labels_per_class 10 \
  --data.init_args.batch_size 64
"$PY" -m lightning_transfer.export "$OUT/bert_reviews_tiny_bf16" "$OUT/bert_hf" >/dev/null
run finetune_reviews bf16-mixed --config configs/finetune/reviews_from_bert.yaml --trainer.strategy auto \
  --model.init_args.pretrained "$(cat "$OUT/bert_reviews_tiny_bf16/best_checkpoint.txt")" \
  --data.init_args.tokenizer "$OUT/bert_hf"
# every module's training step under set_sync_debug_mode("error"): a synchronization is a failure here
"$PY" scripts/gpu_sync_check.py || { echo "gpu_check: gpu_sync_check FAILED" >&2; exit 1; }
echo "gpu_check: done (samples_per_s: images/s or sequences/s; tokens_per_s for text; host_syncs per_step: syncs per training step)"
