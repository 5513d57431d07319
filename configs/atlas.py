"""The atlas (``python -m reproduce.atlas``): every head of an attention-only model, what it does
and how sure we are, on one page per head and one table for the model.

    python -m reproduce.atlas                                   # the main job's 1L and 2L models
    python -m reproduce.atlas --checkpoint=runs/attn2l --out=atlas-attn2l

Every number is measured by the function and with the parameters a figure uses (the values
below that carry a figure's name are read from that figure's config, so they cannot drift), on
the trained weights and again on the model's random init.  Roles and consistency checks are
decided by the thresholds here; docs/METHODS.md, "Atlas", gives the rules.
"""

import ml_collections

from reproduce.config import project_module


def _figure(name: str, preset: str):
  return project_module("configs", name).get_config(preset)


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # without --checkpoint: the main job's models at the preset
  c.preset = preset  # the figures' preset whose parameters the atlas measures with

  # --- Roles (a head may have several; every head gets one or is "unlabelled") ---------------
  # inactive: ‖W_V W_O‖_F at most this fraction of the largest head's.  A head's write is
  # A v W_O, so with W_OV this small it writes nothing that any later layer or W_U could read
  # (float32 rounding of a trained head is ~1e-7 relative); exactly 0 for zero weights.
  c.inactive_ratio = 1e-6
  # previous_token (previous-token score) and induction (IH's prefix-matching score, layers ≥ 1):
  # roles.HeadRoles' threshold, the one every figure uses: 0.3 is three times what a head
  # attending uniformly over ≥ 10 positions could score.
  c.role_threshold = _figure("induction_heads", preset).role_threshold
  # copying: full-OV positivity ≥ max(this, the largest positivity at random init), as
  # eigen_hist decides it: half way from random (0) to pure copying (1), and above chance.
  c.copying_threshold = _figure("eigen_hist", preset).copying_threshold
  # positional (shortformer models only, where positions reach the QK score alone): the mean
  # total-variation distance between a head's pattern and its positional-only pattern
  # (circuits.positional_attention) at most this: 0.1 means at most a tenth of each row's
  # attention goes elsewhere than position alone would send it (a content head is near 1).
  c.positional_max_tv = 0.1

  # --- Consistency checks (docs/METHODS.md, "Atlas") ------------------------------------------
  # "The induction corner" of ov_qk_scatter: full-OV positivity and the positivity of the
  # K-composition QK term with the strongest earlier previous-token head both ≥ this.  0.9 is
  # FW's "extreme right hand corner", above ov_qk_scatter's 0.8 claim and far outside the
  # random-init box (within ±0.2).
  c.corner = 0.9
  # A K-composition partner counts when its score minus the composition baseline exceeds the
  # largest of any head pair at random init (composition_scores' anchor for the same reading).

  # --- Probes and windows (each the figure's, read from its config) ---------------------------
  # previous-token score: held-out windows of n_ctx (roles.head_roles' default; without a
  # tokenizer the prefix-matching probe, as head_roles measures it).
  c.text_windows = 16
  # attention on BOS from first occurrences in held-out text: induction_heads' windows.
  c.bos_text_windows = _figure("induction_heads", preset).text_windows
  # ICL score and held-out loss, of the model and with each head zero-ablated, from one shared
  # pass (scores.ablated_position_losses, the pass scores.ablations_icl makes for
  # head_ablations) on head_ablations' ICL windows (scores.ICL_WINDOWS, 512; 8 on the test
  # preset) at its positions (scores.icl_positions); the held-out loss at loss_positions evenly
  # spaced positions (induction_formation's count) from 0 to the ICL score's late position, so
  # that the pass never runs past it.
  c.icl_windows = _figure("head_ablations", preset).icl_windows
  c.loss_positions = _figure("induction_formation", preset).loss_positions
  # The pass runs on all the ICL windows when its work (atlas/plan.py counts it) fits this
  # budget, else on the largest half, quarter, … of them that fits, never fewer than
  # ablation_min_windows (the plan, the page and atlas.json say how many).  It runs twice
  # (trained, random init); these passes reach ~50 GFLOP/s on 2 cores (bench figures'
  # head_ablations), so 3 TFLOP is about a minute each: the public shapes then take 32 to 64
  # windows, the cpu and test presets' models all of theirs (a hundredth of the budget), exactly
  # as head_ablations measures them.
  c.ablation_budget_tflop = 3.0
  c.ablation_min_windows = 32
  # Positional role and QK split on text: the first positional_tokens tokens of this many
  # held-out windows (a causal pattern's first T rows do not depend on what follows them).
  c.positional_windows = 8 if preset != "test" else 4
  c.positional_tokens = 256
  # Stripe score and the attention page: induction_attention's probe (BOS + 20 random tokens
  # × 3, 8 samples) and text sample, and its page (induction_attention's own config).
  c.attention = _figure("induction_attention", preset)
  # Composition baseline: composition_scores' random factor pairs and PRNG seed.
  c.composition_samples = _figure("composition_scores", preset).baseline_samples
  c.composition_seed = _figure("composition_scores", preset).seed

  # --- Token tables of each head's page --------------------------------------------------------
  # Skip-trigrams and OV mappings are ranked by the circuits' entries (scores.ranked_skip_trigrams,
  # scores.top_k_in_rows) among the table_tokens most frequent tokens of the corpus seen at
  # least min_count times (skip_trigrams' minimum): common tokens, so that the corpus counts
  # beside them mean something (ranking every token seen 50 times put rare tokens first).
  c.table_tokens = 500 if preset != "test" else 100
  c.min_count = _figure("skip_trigrams", preset).min_count
  c.destinations = 6  # destinations per skip-trigram table
  c.top_k = _figure("skip_trigrams", preset).top_k  # sources per destination, outputs per source
  c.corpus_tokens = _figure("skip_trigrams", preset).corpus_tokens  # training tokens counted
  c.window = _figure("skip_trigrams", preset).window  # "source … destination" within this many
  # Skip-trigrams on text: the (source, destination) pairs that take most of the head's
  # attention on the positional windows' text, each with the outputs its OV raises most.
  c.text_pairs = 8
  c.ov_sources = 8  # source tokens in each head's OV table
  c.ov_outputs = 4  # outputs listed per source

  # --- Training trajectory -------------------------------------------------------------------
  # Previous-token and prefix-matching scores at this many of the model's training snapshots
  # (all of them when it has fewer; else evenly spaced, first and last included), one in
  # memory at a time, as induction_formation reads them.
  c.trajectory_snapshots = 48 if preset != "test" else 6
  c.lock()
  return c
