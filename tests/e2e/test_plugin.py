"""How lm-eval finds us (registry, the .pth autoload hook, entry points, the console scripts),
and that installing us changes no run that does not ask for our model or tasks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lm_eval_softreason import autoload
from lm_eval_softreason.autoload import MODELS, flag_values, is_lm_eval_cli, seen_include_paths
from lm_eval_softreason.cli import help_header
from lm_eval_softreason.tasks_path import tasks_dir
from tests.helpers import ROOT

BIN = Path(sys.executable).parent
BAD_DATA_DIR = "/nonexistent/softreason-data"
# Run as a script named lm_eval, so the .pth hook takes it for the lm-eval CLI: what the hook
# left behind at interpreter start, before lm-eval does anything.
PROBE = """\
import json, os, sys
import lm_eval.models  # what get_model does first, so the built-ins are listed either way
from lm_eval.api.registry import model_registry
from lm_eval.tasks import TaskManager
print(json.dumps({
    "models": {name: str(target) for name, target in model_registry.items()},
    "tasks": TaskManager(include_path=sys.argv[1], include_defaults=False).all_tasks,
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    "our_modules": sorted(m for m in sys.modules if m.startswith("lm_eval_softreason")),
    "torch": "torch" in sys.modules,
}))
"""

SVAMP = [{"ID": f"chal-{i}", "Body": f"Tom had {i + 3} apples.", "Question": "He ate 2. How many are left?",
          "Equation": f"( {i + 3}.0 - 2.0 )", "Answer": float(i + 1), "Type": "Subtraction"}
         for i in range(3)]
GSM8K = [{"question": f"Ann has {i + 2} pens and buys 3. How many pens?",
          "answer": f"{i + 2} + 3 = {i + 5}\n#### {i + 5}"} for i in range(6)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "svamp").mkdir()
    (root / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP))
    (root / "gsm8k").mkdir()
    for split in ("train", "test"):
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                              for r in GSM8K))
    return str(root)


def run(args, data_dir, cwd, **env):
    env = {**os.environ, "SOFTREASON_DATA_DIR": data_dir, "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
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


@pytest.mark.parametrize("argv, expected", [
    (["lm-eval", "--model", "hf", "--include_path", "my/tasks"], ("my/tasks",)),
    (["lm-eval", "run", "--include_path=my/tasks", "--tasks", "x"], ("my/tasks",)),
    (["lm-eval", "--include_path", "a", "--include_path", "b"], ("b",)),  # argparse: last wins
    (["lm-eval", "--model", "hf", "--tasks", "x"], ()),
    (["lm-eval", "--include_path"], ()),
])
def test_seen_include_paths_reads_the_command_line(argv, expected):
    assert seen_include_paths(argv) == expected


@pytest.mark.parametrize("argv, expected", [
    (["lm-eval", "--tasks", "svamp", "gsm8k", "--model", "hf"], ["svamp", "gsm8k"]),
    (["lm-eval", "-t", "svamp", "--limit", "2"], ["svamp"]),
    (["lm-eval", "--tasks=svamp", "--tasks", "a", "b"], ["a", "b"]),  # argparse: last wins
    (["lm-eval", "--tasks", "a", "--tasks=b"], ["b"]),
    (["lm-eval", "--tasks"], []),
    (["lm-eval", "--model", "hf"], []),
])
def test_flag_values_reads_long_short_and_multi_value_flags(argv, expected):
    assert flag_values(argv, "--tasks", "-t") == expected


def probe(tmp_path, **env):
    """Run PROBE as the lm-eval CLI with a bad SOFTREASON_DATA_DIR; return what it printed."""
    script = tmp_path / "lm_eval"
    script.write_text(PROBE)
    (tmp_path / "no-tasks").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "LM_EVAL_SOFTREASON_AUTOLOAD")}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "no-tasks")],
                         capture_output=True, text=True,
                         timeout=300, env={**base, "SOFTREASON_DATA_DIR": BAD_DATA_DIR, **env})
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    return json.loads(out.stdout)


def test_hook_registers_our_models_and_tasks_and_nothing_else(tmp_path):
    """With the hook, the lm-eval CLI starts as without it (LM_EVAL_SOFTREASON_AUTOLOAD=0)
    but for lazy registry entries and our tasks in every TaskManager: no environment default is
    set, and neither torch nor our model or data loaders are imported."""
    off = probe(tmp_path, LM_EVAL_SOFTREASON_AUTOLOAD="0")
    on = probe(tmp_path)
    assert "softreason" not in off["models"] and "hf" in off["models"]
    assert off["tasks"] == []
    assert {"svamp", "svamp_cot", "gsm8k_offline", "softreason_offline"} <= set(on["tasks"])
    assert on == {**off, "models": {**off["models"], **MODELS}, "tasks": on["tasks"],
                  "our_modules": on["our_modules"]}
    assert off["omp_wait_policy"] is None and off["torch"] is False
    assert off["our_modules"] == ["lm_eval_softreason", "lm_eval_softreason.autoload"]
    assert on["our_modules"] == ["lm_eval_softreason", "lm_eval_softreason.autoload",
                                 "lm_eval_softreason.compat", "lm_eval_softreason.tasks_path"]


@pytest.fixture
def hook_calls(monkeypatch):
    """Run install() as if inside the lm-eval CLI, recording what it would do to this process."""
    calls: list[str] = []
    monkeypatch.setattr(autoload, "is_lm_eval_cli", lambda: True)
    monkeypatch.setattr(autoload, "register_model", lambda: calls.append("model"))
    monkeypatch.setattr(autoload, "add_tasks_to_task_manager", lambda: calls.append("tasks"))
    monkeypatch.delenv("LM_EVAL_SOFTREASON_AUTOLOAD", raising=False)
    return calls


def test_hook_registers_the_models_and_tasks(hook_calls):
    autoload.install()
    assert hook_calls == ["model", "tasks"]
    autoload.install(force=True)  # the console script: the same
    assert hook_calls == ["model", "tasks", "model", "tasks"]


def test_hook_steps_aside_where_lm_eval_reads_entry_points(hook_calls, monkeypatch):
    """An lm-eval with upstream's plug-in discovery finds our entry point itself."""
    import lm_eval.api.registry

    assert not autoload.harness_reads_entry_points()
    monkeypatch.setattr(lm_eval.api.registry, "load_plugins", lambda group, registry: [],
                        raising=False)
    assert autoload.harness_reads_entry_points()
    autoload.install()  # upstream reads no task entry points: our tasks still come from us
    assert hook_calls == ["tasks"]


def test_hook_switch_off(hook_calls, monkeypatch):
    monkeypatch.setenv("LM_EVAL_SOFTREASON_AUTOLOAD", "0")
    autoload.install()
    assert hook_calls == []


def test_hook_never_raises(hook_calls, monkeypatch, capsys):
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(autoload, "register_model", broken)
    autoload.install()
    assert capsys.readouterr().err == (
        "lm_eval_softreason: autoload skipped (RuntimeError('boom'))\n")
    with pytest.raises(RuntimeError, match="boom"):
        autoload.install(force=True)


def test_entry_points_match_upstream_plugin_discovery():
    """Upstream's group "lm_eval.models" maps the --model name to "module:Class" of an LM
    subclass; it reads no task entry points. The hook registers the same target."""
    from lm_eval.api.model import LM

    from lm_eval_softreason.harness.hf_model import SoftReasonLM

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"] == {"lm_eval.models": MODELS}
    assert MODELS == {"softreason": "lm_eval_softreason.harness.hf_model:SoftReasonLM",
                      "softreason-vllm": "lm_eval_softreason.harness.vllm_model:SoftReasonVLLM",
                      "softreason-server":
                          "lm_eval_softreason.harness.server_model:SoftReasonServer"}
    assert issubclass(SoftReasonLM, LM)


@pytest.mark.parametrize("env, expected", [
    ({}, "PASSIVE"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),  # the user's choice stays
])
def test_cpu_defaults_for_our_model_start_up(env, expected):
    code = ("import os; from lm_eval_softreason.harness.runtime_env import apply_cpu_defaults; "
            "apply_cpu_defaults(); print(os.environ.get('OMP_WAIT_POLICY'))")
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**base, **env})
    assert out.stdout.strip() == expected, out.stderr[-2000:]


def test_cpu_defaults_leave_the_environment_once_torch_is_loaded():
    """OpenMP has read the variable by then; setting it would only mislead."""
    code = ("import os, torch; from lm_eval_softreason.harness.runtime_env import apply_cpu_defaults; "
            "apply_cpu_defaults(); print(os.environ.get('OMP_WAIT_POLICY'))")
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=base)
    assert out.stdout.strip() == "None", out.stderr[-2000:]


def test_console_script_help_lists_our_commands():
    out = subprocess.run([str(BIN / "lm-eval-softreason"), "--help"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(help_header())
    assert (
        "\nlm-eval-softreason's own commands (each has --help):\n"
        "  compare   run strategies on the same tasks: resumable results folder, table, plot\n"
        "  diagnose  why a softreason cell of a compare folder won or lost\n"
        "  gate      compare lm-eval results with a baseline; exit 1 on a regression\n"
        "  serve     start vLLM's OpenAI server with the flags --model softreason-server needs\n"
        "  rescore   re-select a finished run's answers under another rule and re-score them\n"
        "  view      one self-contained HTML page to read a run question by question\n\n"
    ) in help_header()
    assert out.stdout[len(help_header()):].startswith("\nusage: lm-eval [-h] COMMAND ...")


def test_hook_is_inert_in_other_processes():
    out = subprocess.run([sys.executable, "-c", "import sys; print('lm_eval' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_builtin_models_still_resolve_after_our_import():
    code = ("import lm_eval_softreason.harness.hf_model\n"
            "from lm_eval.api.registry import get_model\n"
            "print(get_model('hf').__name__, get_model('softreason').__name__,"
            " get_model('dummy').__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["HFLM", "SoftReasonLM", "DummyLM"], out.stderr[-2000:]


def test_tasks_dir_holds_our_tasks():
    names = {p.name for p in Path(tasks_dir()).iterdir()}
    assert {"svamp", "gsm8k_offline"} <= names


def normalised(text):
    """A log without what differs between two identical runs: timestamps, progress bars."""
    lines = (re.sub(r"^\d{4}-\d\d-\d\d:\d\d:\d\d:\d\d ", "", line)
             for line in text.splitlines())
    return [line for line in lines if "it/s]" not in line]


@pytest.mark.slow
def test_stock_run_is_the_same_with_the_plug_in_and_a_bad_data_dir(tiny_model_dir, tmp_path):
    """`lm_eval --model hf --tasks gsm8k` with SOFTREASON_DATA_DIR pointing nowhere: the same
    exit code, output and log as with the hook off (offline it stops on lm-eval's own dataset
    error; our loaders are never involved), and no task is overridden."""
    cmd = [str(BIN / "lm_eval"), "--model", "hf", "--model_args",
           f"pretrained={tiny_model_dir}", "--tasks", "gsm8k", "--limit", "1"]
    on = run(cmd, BAD_DATA_DIR, tmp_path)
    off = run(cmd, BAD_DATA_DIR, tmp_path, LM_EVAL_SOFTREASON_AUTOLOAD="0")
    assert (on.returncode, on.stdout) == (off.returncode, off.stdout)
    assert normalised(on.stderr) == normalised(off.stderr)
    assert "overrides existing task" not in on.stderr and "DataDirError" not in on.stderr


@pytest.mark.slow
def test_console_script_adds_our_tasks_beside_stock_ones(tmp_path):
    """`lm-eval-softreason ls tasks`: ours listed, stock gsm8k still lm-eval's, nothing
    overridden."""
    out = run([str(BIN / "lm-eval-softreason"), "ls", "tasks"], BAD_DATA_DIR, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "overrides existing task" not in out.stderr
    rows = {cells[0]: cells[1] for line in out.stdout.splitlines()
            if (cells := [c.strip() for c in line.strip("|").split("|")]) and len(cells) > 1}
    assert rows["gsm8k"] == "lm_eval/tasks/gsm8k/gsm8k.yaml"
    assert rows["gsm8k_offline"] == str(Path(tasks_dir()) / "gsm8k_offline" / "gsm8k.yaml")
    assert rows["svamp"] == str(Path(tasks_dir()) / "svamp" / "svamp.yaml")


@pytest.mark.slow
def test_stock_lm_eval_cli_runs_softreason_on_our_tasks(tiny_model_dir, data_dir, tmp_path):
    """The mission's command on the stock `lm_eval`, offline: model and tasks found through
    the .pth hook, no --include_path; results table printed, results JSON with our settings."""
    out = run([str(BIN / "lm_eval"), "--model", "softreason", "--model_args",
               f"pretrained={tiny_model_dir},max_rounds=1,n_init=2,batch=2,proj_dim=4,"
               "verifier_max_tokens=4", "--tasks", "gsm8k_offline,svamp", "--limit", "2",
               "--gen_kwargs", "max_gen_toks=6", "--output_path", str(tmp_path / "out")],
              data_dir, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"^\|svamp +\|", out.stdout, re.M), out.stdout
    assert re.search(r"^\|gsm8k_offline\|", out.stdout, re.M), out.stdout
    assert "overrides existing task" not in out.stderr
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["config"]["softreason"]["max_rounds"] == 1
    assert results["config"]["softreason_stats"]["questions"] == 4


@pytest.fixture(scope="module")
def stock_task_names():
    """Every task, group and tag name of the installed lm-eval (its full index, ~15 s)."""
    from lm_eval.tasks import TaskManager

    return set(TaskManager().all_tasks)


@pytest.mark.slow
def test_our_task_names_are_not_stock_ones(stock_task_names):
    """Ours sit beneath stock tasks, so a stock task of the same name would hide ours: this
    fails the day an lm-eval release adds one of our names."""
    from lm_eval.tasks import TaskManager

    ours = set(TaskManager(include_path=tasks_dir(), include_defaults=False).all_tasks)
    assert {"svamp", "svamp_cot", "gsm8k_offline", "softreason_offline"} <= ours
    assert ours & stock_task_names == set()


@pytest.mark.slow
def test_stock_ls_and_validate_see_our_tasks_beneath_a_users(tmp_path, data_dir):
    """`lm-eval ls tasks` and `lm-eval validate` without --include_path list our tasks; a
    user's --include_path task of the same name wins, silently; stock gsm8k stays stock."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "svamp.yaml").write_text("task: svamp\ndataset_path: local/mine\n"
                                     "output_type: generate_until\ntest_split: test\n"
                                     "doc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    out = run([str(BIN / "lm-eval"), "ls", "tasks", "--include_path", str(user)], data_dir,
              tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "overrides existing task" not in out.stderr
    rows = {cells[0]: cells[1] for line in out.stdout.splitlines()
            if (cells := [c.strip() for c in line.strip("|").split("|")]) and len(cells) > 1}
    assert rows["svamp"] == str(user / "svamp.yaml")
    assert rows["svamp_cot"] == str(Path(tasks_dir()) / "svamp" / "svamp_cot.yaml")
    assert rows["gsm8k"] == "lm_eval/tasks/gsm8k/gsm8k.yaml"
    valid = run([str(BIN / "lm-eval"), "validate", "--tasks", "svamp,gsm8k_offline"],
                data_dir, tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr[-3000:]
    assert "Tasks not found" not in valid.stdout
    assert "overrides existing task" not in valid.stderr


@pytest.mark.slow
def test_hook_off_means_no_tasks_of_ours(tmp_path, data_dir):
    out = run([str(BIN / "lm-eval"), "validate", "--tasks", "svamp"], data_dir, tmp_path,
              LM_EVAL_SOFTREASON_AUTOLOAD="0")
    assert (out.returncode, out.stdout) == (1, "Validating tasks: ['svamp']\nTasks not found: "
                                                "svamp\n")


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


@pytest.mark.slow
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

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    assert "zz_lm_eval_softreason.pth" in names
    assert "lm_eval_softreason/tasks/svamp/svamp.yaml" in names
    assert "lm_eval_softreason/tasks/gsm8k_offline/gsm8k.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).read(entry_points).decode()
    assert ("[lm_eval.models]\nsoftreason = lm_eval_softreason.harness.hf_model:SoftReasonLM\n"
            "softreason-server = lm_eval_softreason.harness.server_model:SoftReasonServer\n"
            "softreason-vllm = lm_eval_softreason.harness.vllm_model:SoftReasonVLLM\n"
            ) in text  # the wheel lists them sorted
    assert "[lm_eval.tasks]" not in text
