#!/usr/bin/env bash
# The tuning study of docs/tuning.md: settings are chosen on tuning problems only (SVAMP
# documents 500-599; GSM8K train via the gsm8k_cot_zeroshot_train_offline task), never on the
# reported ones (SVAMP 0-99, GSM8K test 0-49). Qwen2.5-Coder-0.5B-Instruct on the vLLM engine.
#   bash examples/tuning.sh              # every stage, in order; rerun to resume
#   bash examples/tuning.sh base sigma   # some stages
# Each stage is one `lm-eval-softreason compare` folder under $OUT; finished cells are skipped,
# so an interrupted study continues where it stopped. `rescore` of the traces is free. $OUT is
# committed as it fills (cell files, digests, tables: `git add docs/results/tuning`); git
# ignores the samples and traces, which hold the documents.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/stages.sh"
MODEL_DIR="${MODEL_DIR:-.models/qwen0.5b}"
OUT="${OUT:-docs/results/tuning}"
get_model qwen0.5b "$MODEL_DIR"
# One budget for every softreason cell: stages.sh's BUDGET, 4 initial candidates and one BO
# round of 4. vLLM runs compiled (no enforce_eager): ~1.5 min more start, 1.5x the softreason
# questions per hour (docs/performance.md, "compiled vs eager").
# The stages after `sigma` tune one axis at a time from the sigma it chose (docs/tuning.md:
# 2 std, the smallest sigma whose candidates differ enough for selection, verifier and search
# to matter; at 1 std, 73 of 100 questions had a single answer across all candidates).
SIGMA="${SIGMA:-2}"
SR="$BUDGET,sigma=$SIGMA,sigma_scale=embedding_std"

svamp() {  # svamp FOLDER compare-args...: SVAMP tuning problems 500-599
    local folder=$1
    shift
    "$BIN/lm-eval-softreason" compare --model "$MODEL_DIR" --engine vllm --dtype float32 \
        --batch-size auto --tasks svamp --limit svamp=500:600 --apply-chat-template \
        --out "$OUT/svamp-$folder" "$@"
}

gsm8k() {  # gsm8k FOLDER compare-args...: the first 100 GSM8K train problems
    local folder=$1
    shift
    "$BIN/lm-eval-softreason" compare --model "$MODEL_DIR" --engine vllm --dtype float32 \
        --batch-size auto --tasks gsm8k_cot_zeroshot_train_offline --limit 100 \
        --apply-chat-template --out "$OUT/gsm8k-$folder" "$@"
}

stage_base() {  # greedy, the paper's softreason and budget-matched self-consistency (T=0.7)
    svamp base --strategies greedy,softreason,sc --extra-model-args "$BUDGET"
}
stage_sigma() {  # perturbation scale relative to the embedding table (sigma=1 absolute is ~58x);
    # 1 std left the candidates nearly greedy and 3 std damaged them like base's 58, so the grid
    # looks between them (10 was dropped unrun, docs/tuning.md)
    for s in 1 2 3; do
        svamp "sigma-std$s" --strategies softreason \
            --extra-model-args "$BUDGET,sigma=$s,sigma_scale=embedding_std"
    done
}
stage_inject() {  # the model reads the perturbed vector in place of the first token, no text
    svamp "inject-replace-std$SIGMA" --strategies softreason --extra-model-args "$SR,inject=replace"
}
stage_verifier() {  # the paper's other three verifier designs (base's softreason is multi_generate)
    for v in multi_judge single_judge single_generate; do
        svamp "verifier-$v-std$SIGMA" --strategies softreason --extra-model-args "$SR,verifier=$v"
    done
}
stage_shape() {  # base's 8 candidates spent differently (later keys win): no BO, or 3 small rounds
    svamp "shape-init8-std$SIGMA" --strategies softreason \
        --extra-model-args "$SR,n_init=8,max_rounds=0"
    svamp "shape-2x4-std$SIGMA" --strategies softreason \
        --extra-model-args "$SR,n_init=2,batch=2,max_rounds=3"
}
stage_sc_temperature() {  # self-consistency gets the same care: the paper's grid, base's N
    local n
    n=$("$BIN/python" -c "import json,sys; print(json.load(open(sys.argv[1]))['budget']['n_samples'])" \
        "$OUT/svamp-base/cells/svamp__sc.json")
    for t in 0.4 0.6 0.8; do
        svamp "sc-t$t" --strategies sc --sc-n "$n" --sc-temperature "$t"
    done
}

stage_gsm8k() {  # the generation cap: greedy at lm-eval's 256 tokens and at the report's 512
    local cap
    for cap in 256 512; do
        gsm8k "greedy-cap$cap" --strategies greedy --gen-kwargs "max_gen_toks=$cap"
    done
}

run_stages tuning.sh "base sigma inject sc_temperature verifier shape gsm8k" "$@"
