"""Helpers shared by the benchmark scripts: machine info, model loading, questions, memory.

The scripts are run as ``python benchmarks/<script>.py`` (this folder is then on ``sys.path``).
Nothing here writes machine paths anywhere; every path comes in as an argument.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent

# The task each --dataset stands for, its prompt (the task's doc_to_text, as a str.format
# template; tests/unit/test_tasks.py checks that they agree) and the tasks' stop strings.
TASKS = {"svamp": "svamp", "gsm8k": "gsm8k_cot_zeroshot_offline"}
PROMPTS = {
    "svamp": "Q: {question}\nEnd your response with \"The answer is N.\", where N is the final "
             "answer as a number.\nA: Let's think step by step.",
    "gsm8k": "Q: {question}\nA: Let's think step by step.",
}
PROMPT = PROMPTS["svamp"]
UNTIL = ["Q:", "</s>", "<|im_end|>"]

# Used only when SOFTREASON_DATA_DIR is unset (CI without the shared data).
BUILTIN_QUESTIONS = [
    "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
    "have left in total?",
    "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After "
    "they are done, there will be 21 trees. How many trees did the grove workers plant today?",
    "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many "
    "toys does he have now?",
    "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
    "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 "
    "more. How many golf balls did he have at the end of wednesday?",
    "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
    "many lollipops did Jason give to Denny?",
]


def set_offline_env() -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE",
                "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny(tmp: str) -> str:
    """The tests' tiny random Llama (tests/conftest.py::build_tiny_model) in ``tmp``."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from conftest import build_tiny_model
    finally:
        sys.path.pop(0)
    return build_tiny_model(os.path.join(tmp, "tiny-llama"))


@contextmanager
def model_dir(path: str | None) -> Iterator[tuple[str, str]]:
    """Yield (folder, label): ``path`` as given, or the tiny model built in a temp dir."""
    if path:
        yield path, Path(path).name
        return
    with tempfile.TemporaryDirectory(prefix="softreason-bench-") as tmp:
        yield build_tiny(tmp), "tiny-random-llama (tests/conftest.py)"


def questions(n: int, dataset: str) -> tuple[list[str], str]:
    """The first ``n`` test questions of ``dataset`` from SOFTREASON_DATA_DIR, else built-ins.

    Returns (questions, source description).
    """
    from lm_eval_softreason import data

    if data.data_dir() is None:
        qs = (BUILTIN_QUESTIONS * (n // len(BUILTIN_QUESTIONS) + 1))[:n]
        return qs, "built-in questions (SOFTREASON_DATA_DIR unset)"
    if dataset == "svamp":
        rows = data.svamp()["test"]
    else:
        rows = data.gsm8k()["test"]
    return [rows[i]["question"] for i in range(n)], f"{dataset} test[:{n}] (SOFTREASON_DATA_DIR)"


def torch_dtype(name: str):  # type: ignore[no-untyped-def]
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# --- memory -------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakRSS:
    """Peak resident memory over a ``with`` block, in MiB.

    On Linux the kernel's high-water mark (VmHWM) is reset at entry through
    ``/proc/self/clear_refs`` and read at exit: exact, no sampling. Elsewhere a thread samples
    RSS every 10 ms with psutil.
    """

    def __init__(self) -> None:
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        self.start_mb = rss_mb()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "psutil sampling"
            self.peak_mb = self.start_mb
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, rss_mb())
        else:
            self.peak_mb = (_status_kb("VmHWM") or 0) / 1024

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


# --- machine ------------------------------------------------------------------------------


def machine_info() -> dict:
    import torch
    import transformers

    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gb": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "load_avg_at_start": load,
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def now() -> float:
    return time.perf_counter()


def cpu_seconds() -> float:
    """CPU seconds this process has used (user + system, all its threads)."""
    return time.process_time()


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """The package's table renderer, compact, every column after the first right-aligned."""
    from lm_eval_softreason.analysis.report import render_table

    return render_table(header, [[str(c) for c in r] for r in rows],
                        numeric=range(1, len(header)), align=False)
