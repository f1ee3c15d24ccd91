"""Attach findings (what was measured beside the training run, what was tried, why targets
were missed) to an AMF-LSTM model card and regenerate its ``NAME.md`` from the card.

The training figures are untouched: only the card's ``findings`` list is replaced, and the
summary is re-rendered by the same code ``zeekml train amf`` uses. Usage::

    python tools/amf_card_notes.py onnx_models/amf_lstm.onnx tools/amf_findings.json

where the JSON file is ``{"findings": ["...", ...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zeekml.models.card import card_path, write_card
from zeekml.train.amf_training import markdown


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="NAME.onnx (its card NAME.card.json is rewritten)")
    ap.add_argument("findings", help='JSON file {"findings": [str, ...]}')
    a = ap.parse_args()
    onnx = Path(a.model)
    card = json.loads(card_path(onnx).read_text(encoding="utf-8"))
    notes = json.loads(Path(a.findings).read_text(encoding="utf-8"))
    findings = notes.get("findings") if isinstance(notes, dict) else None
    if not isinstance(findings, list) or not all(isinstance(x, str) for x in findings):
        ap.error(f"{a.findings}: expected {{\"findings\": [str, ...]}}")
    card["findings"] = findings
    data = {k: v for k, v in card.items() if k not in ("format", "onnx_sha256")}
    write_card(onnx, data)
    md = onnx.with_name(onnx.name.removesuffix(".onnx") + ".md")
    md.write_text(markdown(json.loads(card_path(onnx).read_text(encoding="utf-8"))), encoding="utf-8")
    print(f"wrote {card_path(onnx)} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
