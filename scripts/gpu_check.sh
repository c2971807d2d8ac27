#!/usr/bin/env bash
# GPU smoke check: each main recipe for a few hundred bf16 steps on one GPU, printing throughput
# (images/s or sequences/s and tokens/s) and peak memory, all offline:
#   1. configs/simclr/cifar10.yaml on an ImageFolder of 32 px PNGs written here (stand-in for CIFAR-10)
#   2. configs/bert/reviews_tiny.yaml (the offline review corpus)
#   3. configs/finetune/cifar10_from_simclr.yaml from run 1's checkpoint, 10 labels per class
#   bash scripts/gpu_check.sh [STEPS]          (default 300; output under runs/gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
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

COMMON=(--trainer.accelerator gpu --trainer.devices 1 --trainer.num_nodes 1 --trainer.strategy auto
        --trainer.precision bf16-mixed --trainer.max_steps "$STEPS" --trainer.max_epochs -1
        --trainer.limit_val_batches 2 --trainer.val_check_interval 1.0 --trainer.num_sanity_val_steps 0
        --trainer.enable_progress_bar false --trainer.sync_batchnorm false
        "--trainer.callbacks+=lightning_transfer.callbacks.ThroughputMonitor")
FOLDER=(--data.init_args.source folder --data.init_args.root "$OUT/images" --data.init_args.image_size 32
        --data.init_args.decode_size 32 --data.init_args.val_size 200 --data.init_args.test_size 200
        --data.init_args.num_workers 4 --data.init_args.download false)
run() {  # name, then lightning-transfer fit arguments
  local name=$1
  shift
  echo "gpu_check: $name"
  if ! "$PY" -m lightning_transfer.cli fit "$@" "${COMMON[@]}" --trainer.default_root_dir "$OUT/$name" \
      --trainer.callbacks.label "$name" >"$OUT/$name.log" 2>&1; then
    tail -n 20 "$OUT/$name.log" >&2
    echo "gpu_check: $name FAILED, full log in $OUT/$name.log" >&2
    exit 1
  fi
  grep -E "^throughput" "$OUT/$name.log"
}
run simclr_cifar10 --config configs/simclr/cifar10.yaml "${FOLDER[@]}" --data.init_args.batch_size 256
run bert_reviews_tiny --config configs/bert/reviews_tiny.yaml --data.init_args.cache_dir "$OUT/bert_cache"
CKPT=$(ls -t "$OUT"/simclr_cifar10/*/*/checkpoints/last*.ckpt | head -n 1)
run finetune_cifar10 --config configs/finetune/cifar10_from_simclr.yaml "${FOLDER[@]}" --model.init_args.pretrained "$CKPT" \
  --data.init_args.label_fraction null --data.init_args.labels_per_class 10 --data.init_args.batch_size 64
echo "gpu_check: done; throughput lines above (samples_per_s: images/s or sequences/s; tokens_per_s for text)"
