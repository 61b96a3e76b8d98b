# Sourced by the set-up scripts: offline Hugging Face, the shared data, the repository root.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export SOFTREASON_DATA_DIR="${SOFTREASON_DATA_DIR:-$(cd "$ROOT/.." && pwd)/shared/data}"

# make_venv DIR EXTRAS: a virtualenv at DIR holding the pinned CPU torch (an unpinned torch
# pulls GBs of CUDA) and this checkout, editable, with the given extras.
make_venv() {
    [ -x "$1/bin/python" ] || python3 -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
    "$1/bin/python" -m pip install -q "torch==2.13.0"
    "$1/bin/python" -m pip install -q -e "$ROOT[$2]"
}
