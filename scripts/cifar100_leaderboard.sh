#!/usr/bin/env bash
# The CIFAR-100 leaderboard (CRD / mdistiller recipe) on a SLURM cluster: every preset pair x methods x seeds,
# one GPU per job, then the table beside the published numbers.
#   PARTITION=gpu KDBENCH_DATA=/data KDBENCH_TEACHERS=/ckpt/cifar_teachers bash scripts/cifar100_leaderboard.sh
set -euo pipefail
PAIRS=${PAIRS:-cifar100/res32x4_res8x4,cifar100/wrn40_2_wrn16_2,cifar100/res56_res20,cifar100/vgg13_vgg8,cifar100/res32x4_shuv2,cifar100/wrn40_2_mv2}
METHODS=${METHODS:-ce,kd,dkd,crd,reviewkd,dist,fitnet,at,pkt,sp,rkd,vid,ofd,mlkd,kdpp,pld}
SEEDS=${SEEDS:-0,1,2}
SWEEP=${SWEEP:-multirun/cifar100-leaderboard}

kdbench -m "experiment=${PAIRS}" "method=${METHODS}" "seed=${SEEDS}" \
  hydra/launcher=slurm "hydra.launcher.partition=${PARTITION:-null}" \
  "hydra.sweep.dir=${SWEEP}" logger.mode="${WANDB_MODE:-offline}"

kdbench-table "${SWEEP}" --reference crd --format md csv tex png --out "${SWEEP}/tables"
