"""Claims: one row of a figure's ``claims.json`` each.

A claim is a statement of FW or IH (kind ``paper``, with ``paper_says`` and its section) or a
sanity baseline (kind ``control``), the criterion that tests it in words and as computed, the
measured value and whether it holds.  Its id is ``<figure>.<what>[.<model label>]``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


CLAIM_KINDS = ("paper", "control")


def plain(v):
  """``v`` with NumPy scalars and arrays turned into Python numbers and lists (for JSON)."""
  if isinstance(v, (np.floating, np.integer, np.bool_)):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  if isinstance(v, dict):
    return {k: plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [plain(x) for x in v]
  return v


def claim_id(figure: str, what: str, model: Optional[str] = None) -> str:
  """A claim's id: ``<figure>.<what>`` for a claim about a figure's models together,
  ``<figure>.<what>.<model label>`` for a claim about one model (also when the figure has only
  that model).  ``figure`` and ``what`` hold no dot; the label is everything after the second."""
  for part, text in (("figure", figure), ("what", what)):
    if not text or "." in text:
      raise ValueError(f"claim id: {part} must be non-empty and hold no '.', not {text!r}")
  if model is not None and not model:
    raise ValueError("claim id: the model label must be non-empty (or None for every model)")
  return f"{figure}.{what}" + ("" if model is None else f".{model}")


def claim(*, figure: str, what: str, model: Optional[str], statement: str, source: str,
          criterion: str, measured: str, value, holds: bool, kind: str = "paper",
          paper_says: Optional[str] = None) -> dict:
  """One row of claims.json.

  Args:
    figure: the figure making the claim (its module's name).
    what: what is claimed, a short identifier unique within the figure (e.g.
      ``copying_majority``).
    model: the label of the one model the claim is about, or None for a claim about the
      figure's models together; the id is ``claim_id(figure, what, model)``, e.g.
      ``eigen_hist.copying_majority.attn1l``.
    statement: what we test, in our words, about the model(s) and layer(s) measured (the
      paper's own statement is ``paper_says``).
    source: where the paper says it ("FW fig 16", "IH §3"); for a control, what it checks.
    criterion: the test in words and as computed, with its threshold values.
    measured: what we measured, in words with the numbers.
    value: the numbers behind ``measured`` (JSON-able after ``plain``).
    holds: whether the criterion holds.
    kind: "paper" for a statement of the papers, "control" for a sanity baseline or a check of
      the method (no statement of the papers behind it).
    paper_says: for a paper claim, the statement of FW or IH it operationalises, paraphrased in
      our words with its section, the paper's own key words in quotation marks where they decide
      the reading; the criterion follows from it.  Required for a paper claim (a claim no
      statement of the papers is behind is a control).
  """
  id_ = claim_id(figure, what, model)
  if kind not in CLAIM_KINDS:
    raise ValueError(f"claim {id_!r}: kind must be one of {CLAIM_KINDS}, not {kind!r}")
  if not source or not criterion:
    raise ValueError(f"claim {id_!r}: source and criterion are required")
  if kind == "paper" and not paper_says:
    raise ValueError(f"claim {id_!r}: a paper claim needs paper_says (what the paper says)")
  if kind == "control" and paper_says:
    raise ValueError(f"claim {id_!r}: a control has no paper_says (a claim the papers state is "
                     "kind='paper')")
  record = {"paper_says": paper_says} if kind == "paper" else {}
  return {"id": id_, "kind": kind, **record, "statement": statement, "source": source,
          "criterion": criterion, "measured": measured, "value": plain(value),
          "holds": bool(holds)}
