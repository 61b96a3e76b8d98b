"""How lm-eval finds us: registry, the .pth autoload hook, the console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_softreason.autoload import is_lm_eval_cli
from lm_eval_softreason.tasks_path import tasks_dir

SVAMP = [{"ID": f"chal-{i}", "Body": f"Tom had {i + 3} apples.", "Question": "He ate 2. How many are left?",
          "Equation": f"( {i + 3}.0 - 2.0 )", "Answer": float(i + 1), "Type": "Subtraction"}
         for i in range(3)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "svamp").mkdir()
    (root / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP))
    return str(root)


def run(args, data_dir, cwd):
    env = {**os.environ, "SOFTREASON_DATA_DIR": data_dir, "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("argv, expected", [
    (["/venv/bin/python", "/venv/bin/lm_eval", "--model", "hf"], True),
    (["python", "/usr/bin/lm-eval", "run"], True),
    (["python", "-m", "lm_eval", "--tasks", "x"], True),
    (["python", "-u", "-m", "lm_eval"], True),
    (["python", "-m", "pytest"], False),
    (["python", "script.py", "lm_eval"], False),
    (["python", "-c", "import lm_eval"], False),
    (["python"], False),
])
def test_autoload_acts_only_inside_the_lm_eval_cli(argv, expected):
    assert is_lm_eval_cli(argv) is expected


def test_hook_is_inert_in_other_processes():
    out = subprocess.run([sys.executable, "-c", "import sys; print('lm_eval' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_builtin_models_still_resolve_after_our_import():
    code = ("import lm_eval_softreason.model\n"
            "from lm_eval.api.registry import get_model\n"
            "print(get_model('hf').__name__, get_model('softreason').__name__,"
            " get_model('dummy').__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["HFLM", "SoftReasonLM", "DummyLM"], out.stderr[-2000:]


def test_tasks_dir_holds_our_tasks():
    names = {p.name for p in Path(tasks_dir()).iterdir()}
    assert {"svamp", "gsm8k_offline"} <= names


@pytest.mark.slow
def test_stock_lm_eval_cli_runs_softreason_on_svamp(tiny_model_dir, data_dir, tmp_path):
    """The stock `lm_eval` command: model found through the .pth hook, svamp without
    --include_path, results table printed and results JSON carrying our settings."""
    exe = Path(sys.executable).with_name("lm_eval")
    out = run([str(exe), "--model", "softreason", "--model_args",
               f"pretrained={tiny_model_dir},max_rounds=1,n_init=2,batch=2,proj_dim=4,"
               "verifier_max_tokens=4",
               "--tasks", "svamp", "--limit", "2", "--gen_kwargs", "max_gen_toks=6",
               "--output_path", str(tmp_path / "out")], data_dir, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "|svamp|" in out.stdout and "exact_match" in out.stdout
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["config"]["softreason"]["max_rounds"] == 1
    assert results["config"]["softreason_stats"]["questions"] == 2


@pytest.mark.slow
def test_python_m_entry_point_with_stock_flags(tiny_model_dir, data_dir, tmp_path):
    out = run([sys.executable, "-m", "lm_eval_softreason", "--model", "softreason",
               "--model_args", f"pretrained={tiny_model_dir},mode=greedy", "--tasks", "svamp",
               "--limit", "1", "--gen_kwargs", "max_gen_toks=4", "--apply_chat_template",
               "--log_samples", "--output_path", str(tmp_path / "o")], data_dir, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "|svamp|" in out.stdout
    sample = next((tmp_path / "o").rglob("samples_svamp_*.jsonl")).read_text()
    assert "<|im_start|>user" in sample  # the chat template reached the prompt


def test_bad_model_arg_through_cli_names_it(tiny_model_dir, data_dir, tmp_path):
    exe = Path(sys.executable).with_name("lm-eval-softreason")
    out = run([str(exe), "--model", "softreason", "--model_args",
               f"pretrained={tiny_model_dir},sigma=-2", "--tasks", "svamp", "--limit", "1"],
              data_dir, tmp_path)
    assert out.returncode != 0
    assert "sigma=-2.0 is out of range; allowed: > 0" in out.stderr


@pytest.mark.slow
def test_wheel_ships_the_autoload_hook_and_tasks(tmp_path):
    """A normal (non-editable) install gets the .pth at site-packages' root and the tasks."""
    import zipfile

    root = Path(__file__).resolve().parent.parent
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(tmp_path), str(root)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    assert "zz_lm_eval_softreason.pth" in names
    assert "lm_eval_softreason/tasks/svamp/svamp.yaml" in names
    assert "lm_eval_softreason/tasks/gsm8k_offline/gsm8k.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(entry_points).decode()
    assert "[lm_eval.models]" in text and "softreason = lm_eval_softreason.model:SoftReasonLM" in text
