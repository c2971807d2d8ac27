#!/usr/bin/env bash
# Multi-GPU / multi-node training without SLURM: torchrun starts one process per GPU and Lightning
# (TorchElasticEnvironment) joins them. Run the same command on every node with its NODE_RANK.
#   GPUS=4 bash scripts/torchrun.sh configs/simclr/cifar10.yaml                       # one node
#   NODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=4 bash scripts/torchrun.sh configs/bert/reviews_tiny.yaml
# Further arguments go to `lightning-transfer fit`, e.g. --ckpt_path last to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: scripts/torchrun.sh CONFIG [lightning-transfer fit arguments]}
shift
GPUS=${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
NODES=${NODES:-1}
PYTHON=${PYTHON:-${VENV:-.venv}/bin/python}
exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$GPUS" --nnodes "$NODES" --node_rank "${NODE_RANK:-0}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m lightning_transfer.cli fit --config "$CONFIG" \
  --trainer.accelerator gpu --trainer.devices "$GPUS" --trainer.num_nodes "$NODES" --trainer.strategy ddp "$@"
