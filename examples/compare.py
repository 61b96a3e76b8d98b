from lm_eval_softreason.compare import main  # the script became `lm-eval-softreason compare`

raise SystemExit(main())
