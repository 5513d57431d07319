"""Figure `skip_trigrams` (FW figs 10, 11, 14): every head of the 1L model as its strongest
skip-trigrams "source … destination → output", read off the QK and OV circuits.

    python -m reproduce.figure --name skip_trigrams

Per head, sources are ranked by their best trigram's score, the sum of the standardised QK
entry [destination, source] and OV entry [source, output] (scores.ranked_skip_trigrams), and the
top ones are shown with their best destinations and outputs (PNG, markdown and HTML tables), each
trigram with how often it occurs in the training text.  Claims: most heads copy (the source's
own logit tops its OV column); the destinations that attend to a source follow it in text more
often than chance; the factored form's "bugs" (FW's keep … in mind / at bay → keep … in bay need
English; on code we look for the same pattern: s … d1 → o1 and s … d2 → o2 both occur but
s … d1 → o2 never does, yet the head raises it)."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l",)  # model configs (configs/<name>.py) trained at the preset and analysed
  c.min_count = 50 if preset != "test" else 2  # tokens seen fewer times are left out (noise)
  c.sources_per_head = 8  # rows of each head's table
  c.top_k = 3  # destinations and outputs kept per source
  c.corpus_tokens = 2_000_000 if preset != "test" else 100_000  # training tokens searched for the trigrams' counts
  c.window = 32  # "source … destination": the source within this many tokens before
  # A head copies when the median rank of a token's own logit within its OV column is ≥ 0.9:
  # a random head ranks it at 0.5 on average (the random-init heads are measured and shown).
  c.copy_rank = 0.9
  # Destinations plausibly follow their source: the source is in the window before the
  # destination at least twice as often as before a random position (chance: lift 1).
  c.min_lift = 2.0
  # A "bug" needs its two learned trigrams seen at least this often (so that the unseen third is
  # not just a rare pair) in the searched tokens.
  c.min_seen = 5
  c.lock()
  return c
