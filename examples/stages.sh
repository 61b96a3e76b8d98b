# Sourced by tuning.sh and report.sh (not run): the vLLM virtualenv both studies run in, the
# model build and their stage dispatcher. Expects HERE, the examples folder.
source "$HERE/../.ci/env.sh"
cd "$ROOT"
BIN="${VLLM_VENV:-$ROOT/.venv-vllm}/bin"
[ -x "$BIN/lm-eval-softreason" ] || bash "$ROOT/.ci/setup-vllm.sh"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-1}"
# The study's common softreason budget (8 candidates: 4 initial and one BO round of 4); the
# report runs the paper and reference presets at it too, so the two scripts share it.
BUDGET="n_init=4,batch=4,max_rounds=1,verifier_max_tokens=256"

get_model() {  # get_model NAME DIR: build a ../shared/assets/get-model folder once
    [ -f "$2/config.json" ] || PATH="$BIN:$PATH" ../shared/assets/get-model "$1" "$2"
}

run_stages() {  # run_stages SCRIPT ALL [STAGE...]: check every stage name, then run them in order
    local script=$1 all=$2 stage
    shift 2
    for stage in ${@:-$all}; do
        if ! declare -F "stage_$stage" >/dev/null; then
            echo "$script: unknown stage '$stage'; stages: $all" >&2
            exit 2
        fi
    done
    for stage in ${@:-$all}; do
        echo "== stage $stage"
        "stage_$stage"
    done
}
