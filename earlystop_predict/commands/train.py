"""``earlystop-predict train``: train the accModels into a model directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the LSTM and LightGBM accModels into a model directory",
        description="Train both accModels on the shared LCBench corpus (split by task, "
                    "augmented) and write lstm.npz, lgbm.txt and manifest.json. "
                    "Needs the 'train' extra (torch).")
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--lcbench", default=None,
                   help="path of lcbench_surrogate/train.npz (default: ../shared/data/...)")
    p.add_argument("--lstm-epochs", type=int, default=20, help="LSTM training epochs (20)")
    p.add_argument("--lgbm-draws", type=int, default=6,
                   help="augmented prefixes per curve for LightGBM (6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (all)")
    p.add_argument("--refit-from", default=None, metavar="DIR",
                   help="refit on train + validation tasks with the recipe, boosting rounds "
                        "and calibration of the split run in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..training.pipeline import train_bundle

    if args.lstm_epochs < 1:
        raise ConfigError("--lstm-epochs", "an integer >= 1", args.lstm_epochs)
    if args.lgbm_draws < 1:
        raise ConfigError("--lgbm-draws", "an integer >= 1", args.lgbm_draws)
    train_bundle(args.output, lcbench=args.lcbench, lstm_epochs=args.lstm_epochs,
                 lgbm_draws=args.lgbm_draws, seed=args.seed, threads=args.threads,
                 refit_from=args.refit_from)
    print(f"wrote {args.output}/manifest.json")
    return 0
