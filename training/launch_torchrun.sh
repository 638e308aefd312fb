#!/usr/bin/env bash
# Single node, one process per GPU (or NPROC CPU processes), through torchrun.
#
#   training/launch_torchrun.sh CONFIG.yaml [--set key=value ...]
#
# Environment (all optional):
#   NPROC         processes on this node (default: the number of visible GPUs, or 1 without CUDA)
#   PYTHON        interpreter of the environment that has spatialgeo installed (default: python3)
#   OMP_NUM_THREADS  CPU threads per process (torchrun's default: 1)
#   SPATIALGEO_INIT / SPATIALGEO_DATA / SPATIALGEO_OUTPUT   read by training/configs/*.yaml
#
# torchrun's --standalone picks a free rendezvous port on this host. The global batch of the config is
# kept whatever NPROC is (gradient accumulation fills the rest). A run stopped early with a checkpoint
# (run.max_steps_this_run, SIGTERM, SIGUSR1) exits 0 under torchrun; <output_dir>/status.json says
# "paused", and running the same command again resumes it exactly.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 CONFIG.yaml [--set key=value ...]" >&2
    exit 2
fi
config=$1
shift
python=${PYTHON:-python3}
if [[ -z "${NPROC:-}" ]]; then
    NPROC=$("$python" -c 'import torch; print(max(torch.cuda.device_count(), 1))')
fi

exec "$python" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$NPROC" \
    -m spatialgeo_core.cli -v train --config "$config" "$@"
