#!/usr/bin/env bash
# The report of docs/results.md ("Tuned preset"): the reported problems only (SVAMP documents
# 0-99, GSM8K test 0-49), never the tuning ones of examples/tuning.sh. The vLLM engine, chat
# template, fp32.
#   bash examples/report.sh                 # every stage, in order; rerun to resume
#   bash examples/report.sh svamp           # some stages
#   SC_T=0.6 bash examples/report.sh        # another sc temperature (default: 0.7, docs/tuning.md)
# Each stage fills one `lm-eval-softreason compare` folder under $OUT in three invocations,
# the report's goal (tuned against budget-matched sc) first, so that it finishes first:
#   1. greedy and softreason_tuned (preset=tuned, its own budget);
#   2. self-consistency with N matched to softreason_tuned's tokens (--sc-match);
#   3. the paper and reference presets with tuned's 8 candidates, spent as the tuning study's
#      common budget (4 initial points and one BO round of 4): their method is the search.
# Finished cells are skipped and an interrupted cell resumes. $OUT is committed as it fills
# (`git add docs/results/report`: cell files, digests, tables; git ignores samples and traces),
# so a later session on a fresh machine skips what finished and `diagnose --versus` still
# compares with it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/stages.sh"
OUT="${OUT:-docs/results/report}"
SC_T="${SC_T:-0.7}"  # the best measured temperature (docs/tuning.md, sc_temperature)
# The paper's and reference's budget is stages.sh's BUDGET, docs/tuning.md's common one:
# tuned's 8 candidates (preset=tuned draws them at once, with no BO round).

run() {  # run MODEL_DIR FOLDER TASK LIMIT SOFTREASON_STRATEGIES [compare-args...]
    local dir=$1 folder=$2 task=$3 limit=$4 others=$5
    shift 5
    local common=(--model "$dir" --engine vllm --dtype float32 --batch-size auto
                  --tasks "$task" --limit "$task=$limit" --apply-chat-template
                  --out "$OUT/$folder" "$@")
    "$BIN/lm-eval-softreason" compare "${common[@]}" --strategies greedy,softreason_tuned
    "$BIN/lm-eval-softreason" compare "${common[@]}" --strategies sc \
        --sc-match softreason_tuned --sc-temperature "$SC_T"
    [ -z "$others" ] || "$BIN/lm-eval-softreason" compare "${common[@]}" \
        --strategies "$others" --extra-model-args "$BUDGET"
}

stage_svamp() {  # Qwen-0.5B, SVAMP 0-99: greedy, sc, paper, reference, tuned
    get_model qwen0.5b .models/qwen0.5b
    run .models/qwen0.5b qwen0.5b-svamp svamp 100 softreason,softreason_reference
}
stage_gsm8k() {  # Qwen-0.5B, GSM8K test 0-49, every strategy with the 512-token cap
    get_model qwen0.5b .models/qwen0.5b
    run .models/qwen0.5b qwen0.5b-gsm8k gsm8k_cot_zeroshot_offline 50 \
        softreason,softreason_reference --gen-kwargs max_gen_toks=512
}
stage_qwen1_5b() {  # the stronger model on SVAMP 0-99: greedy, sc, paper, tuned
    get_model qwen1.5b .models/qwen1.5b
    run .models/qwen1.5b qwen1.5b-svamp svamp 100 softreason
}

run_stages report.sh "svamp gsm8k qwen1_5b" "$@"
