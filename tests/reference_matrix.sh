#!/usr/bin/env bash
# Runs the whole reference matrix of ../shared/goldens/reference_results.md with the
# command line (three inits and four trained variants × three densities) and prints
# one line per measurement. Not part of CI (about 15 minutes on 2 cores); CI runs
# the subset in stories_test.go. Usage: tests/reference_matrix.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${CSKV_SHARED:-$(cd .. && pwd)/shared}
out=${1:-$(mktemp -d)}
go build -tags openblas -o "$out/cskv" ./cmd/cskv
cskv=$out/cskv
M=$shared/models/stories260K.gguf
C=$shared/data/tinystories_calib.txt
E=$shared/data/tinystories_eval.txt
ppl() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f k_rel %.4f v_rel %.4f" % (d["compressed"]["perplexity"], d["k_rel_err"], d["v_rel_err"]))'; }
for d in 0.5 0.25 0.125; do
	for init in svd asvd whiten; do
		"$cskv" init --quiet --model "$M" --data "$C" --init $init --k-density $d --v-density $d --out "$out/$init-$d.safetensors" >/dev/null
		for w in 0 32; do
			echo "$init-init d=$d W=$w: $("$cskv" eval --quiet --model "$M" --data "$E" --chunks 64 --projections "$out/$init-$d.safetensors" --window $w --json | ppl)"
		done
	done
	for variant in "kv+out:" "kv:--lambda-out 0" "qat4:--lambda-out 0 --k-bits 4 --v-bits 4" "qat2:--lambda-out 0 --k-bits 2 --v-bits 2"; do
		name=${variant%%:*}
		flags=${variant#*:}
		# shellcheck disable=SC2086
		"$cskv" train --quiet --force --model "$M" --data "$C" --k-density $d --v-density $d --init asvd --lambda-kv 1 --out-seqs 2 --out-window-alt 0 --steps 300 --out "$out/run-$name-$d" $flags >/dev/null
		bits=16
		case $name in qat4) bits=4 ;; qat2) bits=2 ;; esac
		for w in 0 32; do
			echo "trained-$name d=$d W=$w bits=$bits: $("$cskv" eval --quiet --model "$M" --data "$E" --chunks 64 --projections "$out/run-$name-$d/projections.safetensors" --window $w --k-bits $bits --v-bits $bits --json | ppl)"
		done
	done
done
