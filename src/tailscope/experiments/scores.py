"""Every per-example score a run's pool of models supports: ``ts.scores(run)``.

From one run: memorization (``mem``, ``mem_se``, ``mem_q``), held-out accuracy (Data-OOB,
per ratio in a multi-ratio run), the C-score (several ratios), LiRA membership scores and a
vulnerability score, label quality with suggested labels (cleanlab), on the train split; and
held-out accuracy, C-score and label issues on the test split (every model holds a test
example out). In a multi-ratio run the held-out accuracy and the C-score use every ratio;
memorization, LiRA and the label issues use one ratio's models (0.7 when present, else the
one named), never a pool across ratios, which would bias them by the effect of training-set
size. The tables are saved into the run (``train_scores.csv``, ``test_scores.csv``) with the
LiRA evaluation (``lira.json``) for the report.
"""

from __future__ import annotations

import warnings

import numpy as np

from tailscope.estimate import UndefinedEstimateWarning
from tailscope.run import Run
from tailscope.scores import ScoreTables, compute_scores, vulnerability_by_memorization

__all__ = ["scores"]


def scores(
    run: Run,
    *,
    ratio: float | None = None,
    save: bool = True,
    lira_options: dict | None = None,
) -> ScoreTables:
    """The per-example score tables of ``run`` (see the module docstring).

    Args:
        run: the run; its finished models are used.
        ratio: the subset ratio whose models memorization, LiRA and label issues use
            (default: the run's analysis ratio: the only one, or 0.7).
        save: write the tables and the LiRA evaluation into the run (when it is writable).
        lira_options: keyword arguments for :func:`tailscope.scores.lira_evaluation`.

    Returns:
        :class:`~tailscope.scores.ScoreTables`: ``train`` and ``test`` DataFrames (one row
        per example in the dataset's order, ``index`` its id in the source split), the
        one-line reasons of the scores left out (``skipped``), the LiRA evaluation and the
        notes the report states.
    """
    store, spec = run.store, run.spec
    models = store.finished()
    analysis = run.models_of(ratio)
    ratio = spec.ratios[int(analysis[0]) // spec.n_models] if len(analysis) else ratio
    per_model_ratio = np.repeat(spec.ratios, spec.n_models)[models]
    has_phi = store.has_rows("phi")
    source = f"this run's store (format {spec.format})"
    tables = compute_scores(
        store.y_train,
        store.y_test,
        masks=np.asarray(store.masks[models]),
        ratios=per_model_ratio,
        correct_train=store.rows("correct_train", models),
        correct_test=store.rows("correct_test", models),
        phi_train=store.rows("phi_train", models) if has_phi else None,
        membership_models=np.searchsorted(models, analysis),
        oos_prob_train=store.oos_probabilities(ratio)[0] if has_phi else None,
        oos_prob_test=store.oos_probabilities(ratio)[1] if has_phi else None,
        train_index=store.train_index,
        test_index=store.test_index,
        source=source,
        lira_options=lira_options,
    )
    with warnings.catch_warnings():  # the examples without an estimate are NaN in the table
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        mem = run.estimate(ratio).memorization_result
    train = tables.train
    for position, (column, values) in enumerate(
        (("mem", mem.value), ("mem_se", mem.se), ("mem_q", mem.q)), start=2
    ):
        train.insert(position, column, values)
    notes = list(tables.notes)
    if len(spec.ratios) > 1:
        notes.append(
            f"mem, lira and the label issues use the {len(analysis)} models of ratio "
            f"{ratio:g}; heldout_acc and cscore every ratio's"
        )
    result = ScoreTables(train, tables.test, tables.skipped, tables.lira, notes)
    if save and store.writable:
        store.save_result("train_scores", result.train)
        store.save_result("test_scores", result.test)
        if result.lira is not None:
            store.save_result("lira", lira_record(result, ratio))
    return result


def lira_record(tables: ScoreTables, ratio: float) -> dict:
    """What the report shows of the LiRA evaluation, as JSON: the summary table, the ROC
    curves (log-spaced FPRs), the vulnerability by memorization bin, and the notes."""
    lira = tables.lira
    curves = {
        variant: [list(map(float, c)) for c in lira.roc_curve(variant)] for variant in lira.roc
    }
    by_mem = vulnerability_by_memorization(
        tables.train["vulnerability"].to_numpy(), tables.train["mem"].to_numpy()
    )
    return {
        "ratio": ratio,
        "summary": lira.frame().to_dict(orient="records"),
        "roc": curves,
        "vulnerability_by_memorization": by_mem.to_dict(orient="records"),
        "spearman_vulnerability_mem": float(by_mem.attrs.get("spearman", np.nan)),
        "notes": list(tables.notes),
        "skipped": list(tables.skipped),
    }
