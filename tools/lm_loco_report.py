"""Print the flow LM's leave-one-capture-out table, the unigram baseline on the same rows.

Reads the score terms written by ``zeekml train lm --corpus ... --loco OUT.parquet``
(``OUT.terms.parquet``: every flow of every capture, scored by a fold model that never
trained on it) and prints, per capture and pooled, for the model and the unigram
baseline side by side: ROC AUC, recall and false-positive rate at the thresholds
calibrated on the other captures, recall at the same false-positive rate (1% of the
capture's benign flows), and notices per 10,000 benign flows through the real notice
policy with default suppression (600 s).

``--weights`` recomputes everything for another score rule from the same terms (no
retraining): this is how the shipped rule was compared with the alternatives.

``--bootstrap N`` also prints, per capture, the model's ROC AUC minus the unigram's with a
95% interval from N resamples of whole host pairs (a capture's flows of one conversation
are not independent draws), and says whether the model is below, above or level with
the unigram beyond that interval.

    python tools/lm_loco_report.py onnx_models/flow_lm.loco.terms.parquet
    python tools/lm_loco_report.py TERMS --weights nll=1 --weights nll=0.5,unigram=0.5
    python tools/lm_loco_report.py onnx_models/flow_lm.loco.terms.parquet --bootstrap 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zeekml.eval.metrics import auc_difference_ci  # noqa: E402
from zeekml.models.lm_score import ScoreRule  # noqa: E402
from zeekml.train import flow_lm as F  # noqa: E402
from zeekml.train.lm_loco import apply_rule, capture_metrics, pooled_metrics  # noqa: E402
from zeekml.train.lm_training import parse_weights  # noqa: E402
from zeekml.windows.conversation import conversation_key_codes  # noqa: E402


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def table(scored: pd.DataFrame, rule: ScoreRule, cfg: F.LmConfig) -> tuple[str, dict[str, Any]]:
    """The per-capture and pooled table of ``scored`` (the terms under ``rule``)."""
    caps = capture_metrics(scored)
    pooled = pooled_metrics(scored)
    head = (f"{'capture':34}{'fold':>9}{'benign':>7}{'mal':>7}{'AUC lm/uni':>14}{'recall lm/uni':>15}"
            f"{'FPR lm/uni':>15}{'rec@1%FPR lm/uni':>18}{'notices/10k lm/uni':>20}")
    lines = [f"score rule: {rule.how} of {rule.to_json()}  (threshold: FPR {cfg.fpr} of the other captures' "
             f"benign flows, >= {cfg.min_flows_above} of them)", head, "-" * len(head)]
    for c in caps:
        lines.append(
            f"{c['capture'][:33]:34}{c['fold'][:8]:>9}{c['benign'] + c['presumed_benign']:>7}"
            f"{c['malicious']:>7}"
            f"{_f(c['lm_auc']):>7}/{_f(c['unigram_auc']):<6}"
            f"{_f(c['lm_recall']):>8}/{_f(c['unigram_recall']):<6}"
            f"{_f(c['lm_fpr'], '.4f'):>8}/{_f(c['unigram_fpr'], '.4f'):<6}"
            f"{_f(c.get('lm_recall_at_fpr_0.01')):>11}/{_f(c.get('unigram_recall_at_fpr_0.01')):<6}"
            f"{_f(c['lm_notices_per_10k_benign'], '.1f'):>13}/{_f(c['unigram_notices_per_10k_benign'], '.1f'):<6}"
            + ("" if c["labeled"] else f"  (unlabeled: {c['lm_notices_per_10k_flows']:.1f}/"
               f"{c['unigram_notices_per_10k_flows']:.1f} notices per 10k flows)")
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'pooled':34}{'':>9}{pooled['negatives']:>7}{pooled['malicious']:>7}"
        f"{_f(pooled['lm_auc']):>7}/{_f(pooled['unigram_auc']):<6}"
        f"{_f(pooled['lm_recall']):>8}/{_f(pooled['unigram_recall']):<6}"
        f"{_f(pooled['lm_fpr'], '.4f'):>8}/{_f(pooled['unigram_fpr'], '.4f'):<6}"
        f"{_f(pooled['lm_recall_at_fpr_0.01']):>11}/{_f(pooled['unigram_recall_at_fpr_0.01']):<6}"
    )
    lines.append(
        f"pooled recall at FPR 0.1%: lm {_f(pooled['lm_recall_at_fpr_0.001'])}, "
        f"unigram {_f(pooled['unigram_recall_at_fpr_0.001'])}"
    )
    return "\n".join(lines), {"rule": {**rule.to_json(), "combine": rule.how}, "pooled": pooled, "captures": caps}


def auc_intervals(scored: pd.DataFrame, resamples: int) -> tuple[str, list[dict[str, Any]]]:
    """Per capture: model AUC minus unigram AUC, with its host-pair bootstrap interval."""
    lines = [f"{'capture':34}{'pairs':>7}{'AUC lm - uni':>14}{'95% interval':>20}  verdict"]
    out: list[dict[str, Any]] = []
    counts = {"below": 0, "level": 0, "above": 0}
    for name, d in scored.groupby("capture", sort=False):
        y = np.where(d["negative"].to_numpy(dtype=bool), 0, d["binary"].to_numpy())
        pairs, _ = conversation_key_codes(d)  # the flow LM's conversation: the host pair
        got = auc_difference_ci(y, d["score"].to_numpy(), d["baseline_score"].to_numpy(),
                                pairs, resamples=resamples)
        if got is None:
            continue
        diff, low, high = got
        verdict = "below" if high < 0 else "above" if low > 0 else "level"
        counts[verdict] += 1
        n_pairs = len(np.unique(pairs[(y == 0) | (y == 1)]))
        lines.append(f"{str(name)[:33]:34}{n_pairs:>7}{diff:>+14.4f}   [{low:+.4f}, {high:+.4f}]  {verdict}")
        out.append({"capture": name, "pairs": n_pairs, "auc_difference": diff,
                    "low": low, "high": high, "verdict": verdict})
    lines.append(f"lm below the unigram beyond the interval on {counts['below']} captures, "
                 f"level on {counts['level']}, above on {counts['above']} "
                 f"({resamples} host-pair resamples)")
    return "\n".join(lines), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("terms", help="OUT.terms.parquet written by zeekml train lm --loco OUT.parquet")
    ap.add_argument("--weights", action="append", default=None,
                    help="score rule TERM=W,... (repeatable; default: the shipped rule)")
    ap.add_argument("--fpr", type=float, default=F.LmConfig.fpr)
    ap.add_argument("--min-above", type=int, default=F.LmConfig.min_flows_above)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="also give each capture's AUC difference (lm - unigram) with a 95%% "
                         "interval from N resamples of whole host pairs")
    args = ap.parse_args()
    terms = pd.read_parquet(args.terms)
    cfg = F.LmConfig(fpr=args.fpr, min_flows_above=args.min_above)
    results = []
    for w in args.weights or [None]:
        rule = parse_weights(w)
        scored = apply_rule(terms, rule, cfg)
        text, res = table(scored, rule, cfg)
        print(text, end="\n\n")
        if args.bootstrap > 0:
            text, res["auc_intervals"] = auc_intervals(scored, args.bootstrap)
            print(text, end="\n\n")
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
