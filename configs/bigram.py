"""Figure `bigram` (FW, zero-layer transformers): a zero-layer model against the corpus's bigram
table, and the direct path of the 1L/2L models against the same table.

    python -m reproduce.figure --name bigram

Scatter of model vs empirical log p(next | current) over frequent pairs, and a table of frequent
tokens with their top next tokens by model and by counts.  Claims, each against a unigram model:
the 0L correlation and held-out KL close at least half the gap from the unigram's value to a
perfect one; the 1L/2L direct paths hold bigram statistics beyond the unigram (FW: a
"residual" of them, not the whole table)."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  # model configs (configs/<name>.py) trained at the preset and analysed
  c.models = ("attn0l", "attn1l", "attn2l")
  c.min_count = 20  # pairs seen at least this often enter the scatter and the correlation
  # Every vocabulary row of W_E W_U is normalised, in row blocks (never vocab × vocab).
  # "Well above a unigram model": at least half-way from the unigram's correlation (KL) to a
  # perfect 1 (0).  The unigram knows only how common the next token is.
  c.gap_closed = 0.5
  # The direct path of a 1L/2L model (FW: a "residual" of the bigram statistics): its
  # correlation with the empirical table above the unigram's by more than this many bootstrap
  # standard errors (resampling the pairs).
  c.standard_errors = 2.0
  c.bootstrap_resamples = 200 if preset != "test" else 50
  c.table_tokens = 8  # frequent tokens listed with their top next tokens
  c.top_next = 4
  c.lock()
  return c
