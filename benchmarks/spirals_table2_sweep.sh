#!/usr/bin/env bash
# Table 2 variants side by side, each a `python -m benchmarks.spirals_table2 --jobs 6` run (its 6
# models in 6 processes of one torch thread), all variants at once: made for a many-core machine
# (the lent GPU host has 16 cores). On 2 cores, run the variants one at a time instead.
#
#   bash benchmarks/spirals_table2_sweep.sh OUT_DIR [ARGS for spirals_table2, e.g. --set epochs=100]
#
# Writes OUT_DIR/<variant>.json and .log and prints each variant's table. Which variant to
# report is decided on the validation numbers in the JSON, not on the test RMSE.
set -u
out=${1:?usage: spirals_table2_sweep.sh OUT_DIR [ARGS...]}
shift
mkdir -p "$out"
# Each variant changes the benchmark's own settings (BenchmarkConfig in spirals_table2.py).
# The default (odernn) is the reported one; the others read with Chen's GRU encoder.
declare -A variants=([odernn]="" [wide]="encoder=rnn"
  [chen]="encoder=rnn latent_dim=4 dynamics_layers=1 dynamics_hidden=20 decoder_hidden=20"
  [wide-latent16]="encoder=rnn latent_dim=16" [wide-encoder50]="encoder=rnn encoder_hidden=50")
chosen=${VARIANTS:-odernn wide}   # which of them to run
for name in $chosen; do
  # shellcheck disable=SC2086  # the settings are separate words on purpose
  python3 -m benchmarks.spirals_table2 --jobs 6 "$@" ${variants[$name]:+--set ${variants[$name]}} \
    --out "$out/$name.json" > "$out/$name.log" 2>&1 &
done
wait
for name in $chosen; do
  echo "== $name: ${variants[$name]}"
  grep -v "it/s" "$out/$name.log" | tail -9
done
