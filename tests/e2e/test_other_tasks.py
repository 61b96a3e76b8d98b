"""Non-numeric generate tasks and loglikelihood tasks run unchanged with softreason."""

from __future__ import annotations

import json

import lm_eval
from lm_eval.tasks import TaskManager

from lm_eval_softreason.harness.hf_model import SoftReasonLM

ROWS = [{"question": "Is the sky blue?", "answer": "yes", "choices": ["yes", "no"], "label": 0},
        {"question": "Is fire cold?", "answer": "no", "choices": ["yes", "no"], "label": 1}]

YESNO = """
task: tiny_yesno
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: generate_until
doc_to_text: "Question: {{{{question}}}} Answer yes or no.\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
filter_list:
  - name: yesno
    filter:
      - function: regex
        regex_pattern: "(yes|no)"
      - function: take_first
metric_list:
  - metric: exact_match
"""

CHOICE = """
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


def test_yes_no_generation_and_multiple_choice_tasks(tiny_model_dir, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "yesno.yaml").write_text(YESNO.format(data=data))
    (tmp_path / "choice.yaml").write_text(CHOICE.format(data=data))
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", batch_size=8, max_rounds=1,
                      n_init=2, batch=2, proj_dim=4, verifier_max_tokens=6,
                      trace_path=str(tmp_path / "trace.jsonl"))
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=["tiny_yesno", "tiny_choice"],
                                  task_manager=tm, log_samples=True)
    assert set(out["results"]) == {"tiny_yesno", "tiny_choice"}
    assert "exact_match,yesno" in out["results"]["tiny_yesno"]
    assert "acc,none" in out["results"]["tiny_choice"]
    stats = out["config"]["softreason_stats"]
    assert stats["questions"] == 2 and stats["fallbacks"] == 0
    # loglikelihood requests went through HFLM unchanged: same scores as the parent class
    choice_samples = out["samples"]["tiny_choice"]
    assert all(len(s["resps"]) == 2 for s in choice_samples)
