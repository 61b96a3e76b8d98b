"""This project's own regression eval: tiny model, 3 SVAMP problems, gate vs a baseline.

    python .ci/regression_gate.py            # run and gate (exit 1 on a regression)
    python .ci/regression_gate.py --update   # after an intended change: new golden + baseline

Any change to what the search returns changes a generation, which drops ``matches_golden``
below the committed 1.0 and fails the gate. Needs SOFTREASON_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = HERE / "gate-baseline.json"
GOLDEN = HERE / "golden_outputs.json"
MODEL_DIR = ".ci/cache/tiny-llama"
MODEL_ARGS = "max_rounds=2,n_init=3,batch=2,proj_dim=8,verifier_max_tokens=16,seed=7"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write new golden + baseline")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.conftest import build_tiny_model

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # A fixed relative model path: the baseline records model_args, and the gate refuses to
    # compare runs of differently named models.
    build_tiny_model(str(ROOT / MODEL_DIR))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "lm_eval_softreason", "--model", "softreason",
               "--model_args", f"pretrained={MODEL_DIR},{MODEL_ARGS}",
               "--tasks", "ci_svamp_golden", "--include_path", ".ci/tasks",
               "--limit", "3", "--seed", "1234", "--gen_kwargs", "max_gen_toks=24",
               "--log_samples", "--output_path", str(out)]
        subprocess.run(cmd, env=env, check=True, cwd=ROOT)
        results = max(out.rglob("results_*.json"))
        if args.update:
            samples = next(out.rglob("samples_ci_svamp_golden_*.jsonl"))
            rows = [json.loads(line) for line in samples.read_text().splitlines()]
            GOLDEN.write_text(json.dumps(
                {r["doc"]["ID"]: r["resps"][0][0] for r in rows}, indent=2, sort_keys=True) + "\n")
            # Rerun so the baseline itself shows matches_golden = 1.0 with the new golden file.
            subprocess.run(cmd, env=env, check=True, cwd=ROOT)
            results = max(out.rglob("results_*.json"))
        gate = [sys.executable, "-m", "lm_eval_softreason", "gate", str(results),
                "--baseline", str(BASELINE), "--tolerance", "0"]
        return subprocess.run(gate + (["--update"] if args.update else []), env=env,
                              cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
