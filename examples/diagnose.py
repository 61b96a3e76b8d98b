from lm_eval_softreason.diagnose import main  # the script became `lm-eval-softreason diagnose`

raise SystemExit(main())
