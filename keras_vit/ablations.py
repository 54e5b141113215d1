"""The paper's ablations as a runnable study: position embeddings, class token vs GAP.

Appendix D.4 (Table 8) of "An Image is Worth 16x16 Words" trains the same
model with no position embedding, 1-D and 2-D learned embeddings and relative
ones; appendix D.3 (Figure 9) compares the class token with global average
pooling. `run_study` trains one small ViT per (setting, seed) with
`keras_vit.cli_train.run` (the same pipeline and recipe as `keras-vit train`),
and `table` reduces the runs to mean +- sample standard deviation per setting.

Each run writes its own folder under the study's output folder; a run whose
`eval.json` is already there is read, not trained again, so a study that was
stopped goes on where it stopped. `examples/ablations.py` is the command line.
"""

import json
import math
import os
import time

# name -> (flag overrides, the row label of the paper's table)
SETTINGS = {
    "none": (dict(position_embedding="none"), "No position embedding"),
    "learned": (dict(position_embedding="learned"), "1-D learned (default)"),
    "learned_2d": (dict(position_embedding="learned_2d"), "2-D learned"),
    "relative": (dict(position_embedding="relative"), "Relative"),
    "sincos_2d": (dict(position_embedding="sincos_2d"), "2-D sin-cos (fixed)"),
    "gap": (dict(position_embedding="learned", classifier="gap"), "1-D learned, GAP classifier"),
}
DEFAULT_SETTINGS = ("none", "learned", "learned_2d", "relative", "gap")


def parse_settings(text):
    """`"none,learned"` -> `["none", "learned"]`, checking each name."""
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name not in SETTINGS]
    if unknown or not names:
        raise ValueError(f"Settings must be a comma-separated subset of {list(SETTINGS)}. Received: {text!r}")
    return names


def run_study(values, settings, seeds, output_dir, train=None):
    """Trains every (setting, seed) pair and returns the list of run records.

    Args:
        values: the training flags (`keras_vit.cli_train.define_flags`), as
            `FlagValues` or a namespace; the model size, epochs, data and
            recipe of every run.
        settings: names from `SETTINGS`.
        seeds: ints; each run uses one as `--seed` (weights, data order and
            augmentation).
        output_dir: the study's folder; run `<setting>_seed<seed>/` is made
            inside.
        train: the training function, `keras_vit.cli_train.run` by default.

    Returns:
        A list of dicts: `setting`, `seed`, `accuracy`, `loss`,
        `train_seconds`, `parameters`, `output_dir`.
    """
    from keras_vit import cli_train

    train = train or cli_train.run
    records = []
    for setting in settings:
        overrides, _ = SETTINGS[setting]
        for seed in seeds:
            run_dir = os.path.join(output_dir, f"{setting}_seed{seed}")
            eval_path = os.path.join(run_dir, "eval.json")
            if not os.path.exists(eval_path):
                started = time.time()
                train(cli_train.with_flags(values, **overrides, seed=seed, output_dir=run_dir))
                print(f"ablations: {setting} seed {seed} done in {time.time() - started:.0f} s", flush=True)
            with open(eval_path) as f:
                result = json.load(f)
            records.append(dict(
                setting=setting, seed=seed, accuracy=result["accuracy"], loss=result["loss"],
                train_seconds=result["train_seconds"], parameters=result["parameters"], output_dir=run_dir,
            ))
    return records


def mean_std(values):
    """Mean and sample standard deviation (0 for a single value).

    Example:

    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    values = list(values)
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(records):
    """One row per setting, in the order first seen: accuracies as percentages."""
    rows = []
    for setting in dict.fromkeys(r["setting"] for r in records):
        runs = [r for r in records if r["setting"] == setting]
        mean, std = mean_std([100.0 * r["accuracy"] for r in runs])
        rows.append(dict(
            setting=setting, label=SETTINGS[setting][1], runs=len(runs), mean=mean, std=std,
            seeds=[r["seed"] for r in runs], accuracies=[100.0 * r["accuracy"] for r in runs],
            parameters=runs[0]["parameters"], train_seconds=sum(r["train_seconds"] for r in runs) / len(runs),
        ))
    return rows


def table(records):
    """A Markdown table of the study, like the paper's Table 8."""
    lines = [
        "| setting | test accuracy (%), mean +- std | runs | parameters | train time per run |",
        "|---|---|---|---|---|",
    ]
    for row in summarize(records):
        lines.append(
            f"| {row['label']} | {row['mean']:.2f} +- {row['std']:.2f} | {row['runs']} | "
            f"{row['parameters']:,} | {row['train_seconds']:.0f} s |"
        )
    return "\n".join(lines)
