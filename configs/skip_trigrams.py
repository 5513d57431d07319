"""Figure `skip_trigrams` (FW, 'Interpretation as Skip-Trigrams'): every head of the 1L model as
skip-trigrams "source … destination → output", read off the QK and OV circuits.  FW's tables fix
a source and list the destinations and outputs with its largest QK and OV entries; ours fix a
destination and rank sources only within its QK row (the softmax over sources never compares
two destinations' scores), then rank each source's outputs within its OV row, as FW does.

    python -m reproduce.figure --name skip_trigrams

Per head: its most selective destinations (the largest gain of a source over the row's mean in
the destination's QK row); for each, the sources it attends to most (compared only within that
row); for each source, the outputs it raises most (compared only within the source's OV row)
(scores.ranked_skip_trigrams), with how often each trigram occurs in the training text (PNG,
markdown and HTML tables).  Claims: most heads copy (a token's own logit ranks high in the row of
what attending to it raises: its median rank above the row's median and above every random-init
head's); the QK circuit attends to plausible next tokens (within a
destination's row, tokens seen right after it outrank the others, more than at random init);
the factored form's "bugs" (FW's keep … in mind / at bay → keep … in bay need English; on code
we look for the same pattern: s … d1 → o1 and s … d2 → o2 both occur but s … d1 → o2 never
does, yet the head raises it), counted once per distinct trigram."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l",)  # model configs (configs/<name>.py) trained at the preset and analysed
  c.min_count = 50 if preset != "test" else 2  # tokens seen fewer times are left out (noise)
  c.destinations_per_head = 8  # destinations in each head's table
  c.top_k = 3  # sources kept per destination, outputs per source
  c.corpus_tokens = 2_000_000 if preset != "test" else 100_000  # training tokens searched for the trigrams' counts
  c.window = 32  # "source … destination": the source within this many tokens before
  # A head copies when the median rank of a token's own logit within its OV row (the fraction
  # of other outputs below it) is above max(0.5, every random-init head's median rank): FW's
  # words, that attending to a token raises "that token" (its logit above the row's median
  # output), and above chance (a random head ranks it at 0.5 ± a few hundredths: 0.47–0.53 on
  # the cpu 1L model).  FW gives no number; until issue 32 this was 0.9, our own.
  c.copy_rank = 0.5
  # A "bug" needs its two learned trigrams seen at least this often (so that the unseen third is
  # not just a rare pair) in the searched tokens.
  c.min_seen = 5
  c.lock()
  return c
