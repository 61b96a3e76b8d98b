#!/usr/bin/env bash
# The main job: install, build the offline Qwen2.5-Coder-0.5B-Instruct from ../shared/assets,
# and evaluate Soft Reasoning on SVAMP (zero-shot CoT, chat template) with the shared data.
#   bash examples/main.sh                 # 5 problems
#   LIMIT=100 TASKS=svamp,gsm8k_cot_zeroshot_offline bash examples/main.sh
set -euo pipefail
source "$(dirname "$0")/../.ci/setup.sh"

MODEL_DIR="${MODEL_DIR:-.models/qwen0.5b}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
    PATH="$VENV/bin:$PATH" ../shared/assets/get-model qwen0.5b "$MODEL_DIR"
fi
"$VENV/bin/lm-eval-softreason" --model softreason \
    --model_args "pretrained=$MODEL_DIR,dtype=${DTYPE:-float32},trace_path=results/trace.jsonl${MODEL_ARGS:+,$MODEL_ARGS}" \
    --tasks "${TASKS:-svamp}" --limit "${LIMIT:-5}" --apply_chat_template \
    --batch_size "${BATCH_SIZE:-32}" --seed 1234 --output_path results/
