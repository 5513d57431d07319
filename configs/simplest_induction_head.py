"""Figure `simplest_induction_head` (FW, 'Two-Layer Attention-Only Transformers' → 'How Induction
Heads Work'): the simplest induction head built by hand
(``known_circuits.simplest_induction_model``) and measured as a trained model would be.

    python -m reproduce.figure --name simplest_induction_head

It trains nothing and reads no checkpoint (a --checkpoint is ignored, and the figure says so).
Claims: the second copy of random tokens is predicted (loss < 0.1 nats, the first copy near
log vocab); the layer-0 head attends to the previous token and the layer-1 head to the token
after the earlier copy (both ≥ 0.9); the induction head K-composes with the previous-token head
(≥ 1.5× the random baseline) and Q-/V-composes with nothing; its OV and its K-composed QK term
are positive (≥ 0.9); where the current token has no earlier copy it rests on BOS (control)."""

import ml_collections


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  # No trained model: the model is built from these sizes, the same at every preset (a few
  # seconds anywhere).
  c.models = ()
  c.d_vocab = 64  # token 0 is BOS; the random tokens are the other 63, uniform
  c.n_ctx = 64
  c.length = 30  # random distinct tokens per copy: BOS + 30 + the same 30 (61 ≤ n_ctx)
  c.samples = 8  # sequences averaged
  c.seed = 0  # of the random tokens
  # Second copy (targets length+2 … 2·length: each predicted from a token with an earlier copy):
  # below 0.1 nats, against log 64 = 4.16 for a uniform guess.  The first copy cannot be
  # predicted: within 0.1 nats of log vocab (the direct path adds 1 to the current token's logit,
  # log(63 + e) − 0 = 4.19).
  c.repeat_loss_below = 0.1
  c.first_copy_within = 0.1
  # Stripe score of the induction head (offset −(length − 1), the earlier copy's successor) and
  # previous-token score of the layer-0 head: 0.9, against 1/(i + 1) for uniform attention.
  c.min_stripe = 0.9
  c.min_previous = 0.9
  # K-composition of the induction head with the previous-token head, over the random baseline
  # (circuits.composition_baseline, mean over 256 random factor pairs of the model's shapes:
  # ≈ 1/sqrt(d_model) = 0.072 ± 0.001 at d_model 193).  A pair of rank-k maps with equal singular
  # values composing perfectly scores 1/sqrt(k), here 1/sqrt(63) ≈ 0.126 (63 tokens matched), so
  # no induction head over 63 tokens can exceed the baseline by more than ≈ 1.75×; 1.5× is 35
  # standard deviations of the random pairs.
  c.k_over_baseline = 1.5
  c.baseline_samples = 256
  c.baseline_seed = 0
  # Q- and V-composition "near zero": below a tenth of the random baseline.
  c.qv_below_baseline = 0.1
  # Full-OV positivity and the positivity of the K-composed QK term: "≈ +1" (FW's corner; the
  # ov_qk_scatter figure asks 0.8 of trained heads).
  c.near_one = 0.9
  # Resting on BOS where the token has no earlier copy (the first copy): most of the attention,
  # against 1/(i + 1) under uniform attention.
  c.min_bos = 0.9
  c.lock()
  return c
