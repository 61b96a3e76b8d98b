"""``lm-eval-softreason compare``: strategies on the same tasks, prompts, filters and metrics.

Each (task, strategy) cell is one in-process lm-eval run of one loaded model; a results folder
holds ``cells/<task>__<strategy>.json`` (+ samples, trace, digest) and ``table.md`` and the
plot. ``cli`` reads the command line, ``plan`` says what runs, ``run`` runs cells, ``report``
and ``plot`` draw the table and figure. See examples/README.md.
"""
