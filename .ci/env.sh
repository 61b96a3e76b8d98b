# Sourced by the set-up scripts: offline Hugging Face, the shared data, the repository root.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export SOFTREASON_DATA_DIR="${SOFTREASON_DATA_DIR:-$(cd "$ROOT/.." && pwd)/shared/data}"
