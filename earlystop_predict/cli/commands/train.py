"""``earlystop-predict train``: train the accModels, or fine-tune them on your own runs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the accModels, or fine-tune them on your own runs (--from)",
        description="Without --from: train the LSTM, the LightGBM fallback and the zero-epoch "
                    "model on the shared LCBench corpus and the real corpus (LCBench split by "
                    "task; real families cross-validated, one model per fold written to "
                    "OUTPUT/folds; augmented) into a model directory. With --from: "
                    "fine-tune a model directory (--base) on your own past runs, grow a "
                    "history model on them alone (from 100 runs; served blended with the "
                    "LSTM) and report errors before and after on a held-out part of them; "
                    "a fine-tuned model that does not beat the base there is not served "
                    "(see --min-gain). "
                    "Needs the 'train' extra (torch).")
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--from", dest="source", default=None, metavar="RUNS",
                   help="fine-tune on these runs: a ledger (.db), a corpus (.jsonl.gz) or "
                        "run records (JSONL)")
    p.add_argument("--base", default="bundled",
                   help="with --from: the model to start from, 'bundled' or a model "
                        "directory (default bundled)")
    p.add_argument("--lcbench", default=None,
                   help="path of lcbench_surrogate/train.npz (default: ../shared/data/...)")
    p.add_argument("--corpus", default=None,
                   help="real-run corpus to train on beside LCBench (default: the bundled "
                        "models/corpus/runs.jsonl.gz; 'none' for LCBench only)")
    p.add_argument("--lstm-epochs", type=int, default=None,
                   help="LSTM training epochs (20; 30 when fine-tuning)")
    p.add_argument("--lgbm-draws", type=int, default=6,
                   help="augmented prefixes per curve for LightGBM (6)")
    p.add_argument("--min-gain", type=float, default=0.0, metavar="POINTS",
                   help="with --from: held-out MAE points the fine-tuned model must gain "
                        "over the base to be served; otherwise a warning, the base is "
                        "served and the fine-tuned model kept in OUTPUT/rejected "
                        "(default 0; --min-gain=-inf serves it always)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from earlystop_predict.errors import ConfigError

    if args.lstm_epochs is not None and args.lstm_epochs < 1:
        raise ConfigError("--lstm-epochs", "an integer >= 1", args.lstm_epochs)
    if args.lgbm_draws < 1:
        raise ConfigError("--lgbm-draws", "an integer >= 1", args.lgbm_draws)
    from earlystop_predict.cli._paths import output_dir

    base = None
    if args.source is not None and args.base in ("bundled", "auto"):
        from earlystop_predict.forecast.artifacts import bundled_dir

        base = str(bundled_dir())
    output_dir(args.output, [("--from", args.source), ("--base", base or args.base),
                             ("--corpus", args.corpus), ("--lcbench", args.lcbench)])
    if args.source is not None:
        from earlystop_predict.training.finetune import fine_tune

        fine_tune(args.source, args.output, base=args.base, seed=args.seed,
                  threads=args.threads, lstm_epochs=args.lstm_epochs or 30,
                  min_gain=args.min_gain)
    else:
        from earlystop_predict.training.pipeline import train_bundle

        corpus = args.corpus or "bundled"
        if corpus.lower() == "none":
            corpus = None
        train_bundle(args.output, lcbench=args.lcbench, corpus=corpus,
                     lstm_epochs=args.lstm_epochs or 20, lgbm_draws=args.lgbm_draws,
                     seed=args.seed, threads=args.threads)
    print(f"wrote {args.output}/manifest.json and {args.output}/MODEL_CARD.md")
    return 0
