#!/usr/bin/env bash
# Submits a sharded cskv run to Slurm (README, "Beyond one machine"): the
# capture, then an array of SHARDS tasks that each train one shard
# (SLURM_ARRAY_TASK_ID is the shard) once the capture succeeded
# (--dependency=afterok), then the merge once every task succeeded.
#
#   MODEL=/models/model.gguf DATA=/data/calib.txt SHARED=/lustre/me \
#     deploy/slurm.sh [more capture flags, e.g. --k-density 0.25 --steps 300]
#
# SHARED is any directory every node mounts; the run goes to $SHARED/run and
# the projections to $SHARED/run/projections.safetensors. A requeued task
# resumes from its shard's checkpoints. MEM and TIME are per job (see the
# memory formula in deploy/kubernetes.yaml).
set -euo pipefail

: "${MODEL:?set MODEL to the model file}"
: "${DATA:?set DATA to the calibration text}"
: "${SHARED:?set SHARED to a directory every node mounts}"
SHARDS=${SHARDS:-3}
CSKV=${CSKV:-cskv}
MEM=${MEM:-26G}
TIME=${TIME:-24:00:00}
RUN="$SHARED/run"

# cmd quotes a command line for --wrap.
cmd() { printf '%q ' "$@"; }
# submit prints the job id of an sbatch --parsable submission.
submit() {
	local id
	id=$(sbatch --parsable --mem="$MEM" --time="$TIME" "$@")
	echo "${id%%;*}"
}

capture=$(submit --job-name=cskv-capture \
	--wrap "$(cmd "$CSKV" capture --model "$MODEL" --data "$DATA" --shards "$SHARDS" --out "$RUN" "$@")")
shards=$(submit --job-name=cskv-shards --dependency=afterok:"$capture" --array=0-$((SHARDS - 1)) \
	--wrap "$(cmd "$CSKV" train --from "$RUN")")
merge=$(submit --job-name=cskv-merge --dependency=afterok:"$shards" \
	--wrap "$(cmd "$CSKV" merge "$RUN" --out "$RUN/projections.safetensors")")
echo "submitted: capture $capture, shards $shards (array 0-$((SHARDS - 1))), merge $merge"
