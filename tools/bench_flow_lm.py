"""Benchmark the flow LM runtime: window graph vs single-step stateful graph, dedupe, end to end.

Design question of issue 4: export a graph that scores the whole window ``[B, T+1]``
per call (what :mod:`zeekml.models.lm_scorer` does), or a single-step graph that takes
and returns each conversation's LSTM state? Both are exported here from the same
(randomly initialized: cost does not depend on the weights) :class:`FlowLM` with the
shapes of a model card, and run with onnxruntime at ``--threads`` on the same real
flows, batch by batch in log order:

* ``window``: one call per batch chunk of ``[B, T+1]`` windows (T LSTM steps per flow);
* ``window+dedupe``: the same, identical windows of a batch scored once (the scorer);
* ``step``: flows of a batch grouped by their rank inside their conversation; one call
  per rank (a conversation seen k times in a batch needs k sequential calls), the
  LSTM ``h, c`` of every conversation gathered from and scattered back to a table;
* ``window+dedupe, no nll0``: the runtime's graph without the context-free ``nll0``
  output (what the second chain of heads costs).

Prints flows/s of each and ratios against ``window`` measured in the same run, plus
the end-to-end :class:`LmScorer` (tokenize + conversation windows + ONNX) against just
reading the same flows. Needs torch (to export); the runtime itself does not.

    python tools/bench_flow_lm.py [--data PATH] [--model flow_lm] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from zeekml.features import tokens as tk
from zeekml.models.card import load_card
from zeekml.models.lm_scorer import unique_rows
from zeekml.models.registry import ScorerOptions, load_scorer, resolve_model
from zeekml.records import schema
from zeekml.sources.open import expand_inputs, read_flows
from zeekml.windows.conversation import conversation_keys

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "zeek" / "rita-rotated-archive"


def _session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _timeit(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return float(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="flow_lm", help="card whose shapes are used")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=40000)
    args = ap.parse_args()

    import torch

    from zeekml.train import flow_lm as F
    from zeekml.train.export import export_onnx

    torch.set_num_threads(args.threads)
    card = load_card(resolve_model(args.model))
    spec = tk.TokenizerSpec.from_json(card.data["tokenizer"])
    T = int(card.data["context"])
    m = card.data["model"]
    torch.manual_seed(0)
    model = F.FlowLM(spec.vocab_size, spec.radices, embed=m["embed"], hidden=m["hidden"]).eval()

    t0 = time.perf_counter()
    got, have = [], 0
    for f in expand_inputs([args.data]):
        for b in read_flows(f):
            got.append(b)
            have += len(b)
        if have >= args.rows:
            break
    flows = schema.concat(got).iloc[: args.rows].reset_index(drop=True)
    read_s = (time.perf_counter() - t0) * len(flows) / max(have, 1)
    n = len(flows)

    scorer = load_scorer(str(card.onnx_path), ScorerOptions(threads=args.threads, batch_size=args.batch))
    batches = [flows.iloc[i : i + args.batch].reset_index(drop=True) for i in range(0, n, args.batch)]
    windows = [scorer.words(b) for b in batches]  # (words, parts, uids, valid)

    class NoNll0(torch.nn.Module):
        def __init__(self, m: F.FlowLM) -> None:
            super().__init__()
            self.m = m

        def forward(self, words, parts):  # type: ignore[no-untyped-def]
            nll, _nll0, alt, alt_p = self.m(words, parts)
            return nll, alt, alt_p

    with tempfile.TemporaryDirectory() as d:
        win_path, step_path, one_path = Path(d) / "w.onnx", Path(d) / "s.onnx", Path(d) / "o.onnx"
        w0, p0 = windows[0][0][:8], windows[0][1][:8]
        export_onnx(model, {"words": w0, "parts": p0}, list(F.OUTPUT_NAMES), win_path)
        export_onnx(NoNll0(model).eval(), {"words": w0, "parts": p0}, ["nll", "alt", "alt_p"], one_path)
        F.export_step_graph(model, str(step_path))
        ws, ss = _session(win_path, args.threads), _session(step_path, args.threads)
        os_ = _session(one_path, args.threads)

        def run_window(dedupe: bool, sess: ort.InferenceSession = ws) -> None:
            for words, parts, _, _ in windows:
                if dedupe:
                    first, _inv = unique_rows(np.concatenate([words, parts.reshape(len(words), -1)], 1))
                    words, parts = words[first], parts[first]
                sess.run(None, {"words": words, "parts": parts})

        # step design: an (h, c) row per conversation; per batch, one call per rank
        conv_all = pd.factorize(conversation_keys(flows))[0]
        conv = [conv_all[i : i + args.batch] for i in range(0, n, args.batch)]
        H = m["hidden"]

        def run_step() -> int:
            table_h = np.zeros((conv_all.max() + 1, H), np.float32)
            table_c = np.zeros_like(table_h)
            calls = 0
            for (words, parts, _, _), slots in zip(windows, conv, strict=True):
                order = np.argsort(slots, kind="stable")
                _, inv, sizes = np.unique(slots, return_inverse=True, return_counts=True)
                start = np.cumsum(sizes) - sizes
                rank = np.empty(len(slots), np.int64)
                rank[order] = np.arange(len(slots)) - start[inv[order]]
                for r in range(int(rank.max()) + 1):
                    rows = np.nonzero(rank == r)[0]
                    sl = slots[rows]
                    _nll, h, c = ss.run(None, {
                        "prev_w": words[rows, -2], "prev_p": parts[rows, -2],
                        "parts": parts[rows, -1], "h": table_h[sl], "c": table_c[sl],
                    })
                    table_h[sl], table_c[sl] = h, c
                    calls += 1
            return calls

        t_win = _timeit(lambda: run_window(False))
        t_dd = _timeit(lambda: run_window(True))
        t_one = _timeit(lambda: run_window(True, os_))
        calls = run_step()
        t_step = _timeit(run_step)

    def end_to_end() -> None:
        s = load_scorer(str(card.onnx_path), ScorerOptions(threads=args.threads, batch_size=args.batch))
        for b in batches:
            s.score(b)

    t_e2e = _timeit(end_to_end, repeat=2)
    uniq_share = np.mean([len(unique_rows(np.concatenate([w, p.reshape(len(w), -1)], 1))[0]) / len(w)
                          for w, p, _, _ in windows])
    print(f"data {args.data}: {n} flows, batch {args.batch}, context T={T}, hidden {H}, "
          f"threads {args.threads}; distinct windows per batch {uniq_share:.1%}")
    print(f"{'design':28}{'flows/s':>12}{'vs window':>11}")
    for name, t in (("window [B,T+1] (baseline)", t_win), ("window + dedupe (runtime)", t_dd),
                    ("window + dedupe, no nll0", t_one), (f"single step, {calls} calls", t_step)):
        print(f"{name:28}{n / t:>12,.0f}{t_win / t:>10.2f}x")
    print(f"end to end LmScorer.score: {n / t_e2e:,.0f} flows/s; reading the same flows: "
          f"{n / read_s:,.0f} flows/s (scoring costs {t_e2e / read_s:.2f}x reading)")


if __name__ == "__main__":
    main()
