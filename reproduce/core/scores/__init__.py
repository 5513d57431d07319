"""Head scores and model-level measurements (docs/METHODS.md, "Head and model scores").

Patterns are [L, B, H, T(dest), T(src)] as returned by ``forward(..., return_patterns=True)``;
every score comes back as [L, H] unless said otherwise.  The figures measure on many full-length
windows through ``pattern_statistics`` and ``sequence_losses`` instead, which compute the same
numbers window chunk by window chunk (sized by ``kernels.windows_per_chunk``), never holding every
window's patterns or logits.

One module per topic; every public name is re-exported here, so ``scores.X`` reaches all of them:

- ``patterns``: attention-pattern scores: the previous-token and induction stripes, IH's
  prefix-matching score and its probe, the copying score, attention by offset, resting on BOS;
- ``losses``: next-token losses in chunks of windows, IH's in-context-learning score (also with
  groups of heads ablated), the loss drop on repeated tokens;
- ``ablations``: zero-ablated heads, and the losses at chosen positions with groups of heads
  ablated (fully, or with every pattern preserved: IH's "Argument 3"), from one shared pass;
- ``direct_path``: the direct path W_E W_U as a bigram model against the corpus's bigram table;
- ``skip_trigrams``: the full QK and OV circuits restricted to a token set (ranked
  skip-trigrams, the own-logit rank of each token in its OV row) and skip-trigram counts.

Imports point one way: ``ablations`` ← ``losses`` ← ``patterns``; ``direct_path`` and
``skip_trigrams`` stand alone.
"""

from reproduce.core.scores.ablations import (ablated_position_losses, pattern_preserving_logits,
                                             pattern_preserving_losses, zero_ablated)
from reproduce.core.scores.direct_path import bigram_statistics, pair_logits
from reproduce.core.scores.losses import (ICL_WINDOWS, ablations_icl, icl_of_losses,
                                          icl_positions, in_context_learning_score,
                                          pattern_preserving_repeat_drops, position_losses,
                                          repeat_loss_drop, sequence_losses,
                                          spread_positions)
from reproduce.core.scores.patterns import (COPYING_MIN_ATTENDED, COPYING_MIN_DEFINED,
                                            PREFIX_LENGTH, PREFIX_REPEATS, PREFIX_SAMPLES,
                                            MaskedBos, MaskedTopOffBos, Offsets,
                                            PrefixMatching, Stripe,
                                            attention_by_offset, bos_attention, copying_score,
                                            first_occurrences, frequency_band,
                                            pattern_statistics, positional_offsets,
                                            prefix_matching_score, prefix_probe,
                                            previous_token_and_induction, previous_token_on,
                                            previous_token_score, repeated_sequences,
                                            stripe_mean, stripe_score)
from reproduce.core.scores.skip_trigrams import (SkipTrigramCounter, own_logit_row_rank,
                                                 ranked_skip_trigrams, restricted, top_k_in_rows)
