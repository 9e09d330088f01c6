#!/usr/bin/env bash
# ImageNet ResNet-34 -> ResNet-18 with DKD on one SLURM node with 8 GPUs (DDP, one process per GPU), at
# mdistiller's DKD solver settings (batch 512, lr 0.2). The teacher is torchvision's ResNet-34 (timm weights).
#   PARTITION=gpu KDBENCH_IMAGENET=/data/imagenet bash scripts/imagenet_r34_r18.sh
set -euo pipefail
GPUS=${GPUS:-8}
kdbench -m experiment=imagenet/r34_r18 method="${METHOD:-dkd}" seed="${SEED:-0}" \
  trainer.batch_size="${BATCH:-512}" optim.lr="${LR:-0.2}" trainer.precision=bf16 trainer.channels_last=true \
  hydra/launcher=slurm "hydra.launcher.partition=${PARTITION:-null}" \
  hydra.launcher.gpus_per_node="${GPUS}" hydra.launcher.tasks_per_node="${GPUS}" hydra.launcher.cpus_per_task=10 \
  hydra.launcher.mem_gb=400 hydra.launcher.timeout_min=2880
