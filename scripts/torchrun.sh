#!/usr/bin/env bash
# Multi-GPU / multi-node training without SLURM: torchrun starts one process per GPU and Lightning
# (TorchElasticEnvironment) joins them. Run the same command on every node with its NODE_RANK.
#   GPUS=4 bash scripts/torchrun.sh configs/simclr/cifar10.yaml                       # one node
#   NODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=4 bash scripts/torchrun.sh configs/bert/reviews_tiny.yaml
#   ACCELERATOR=cpu GPUS=2 bash scripts/torchrun.sh configs/bert/reviews_tiny.yaml   # 2 CPU processes (gloo)
# Further arguments go to `lightning-transfer fit`, e.g. --ckpt_path last to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: scripts/torchrun.sh CONFIG [lightning-transfer fit arguments]}
shift
ACCELERATOR=${ACCELERATOR:-gpu}
GPUS=${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}  # processes per node
if [ "$GPUS" -lt 1 ]; then
  echo "$0: no GPU found; set GPUS=<processes per node> (and ACCELERATOR=cpu on a machine without GPUs)" >&2
  exit 2
fi
NODES=${NODES:-1}
PYTHON=${PYTHON:-${VENV:-.venv}/bin/python}
exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$GPUS" --nnodes "$NODES" --node_rank "${NODE_RANK:-0}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m lightning_transfer.cli fit --config "$CONFIG" \
  --trainer.accelerator "$ACCELERATOR" --trainer.devices "$GPUS" --trainer.num_nodes "$NODES" --trainer.strategy ddp "$@"
