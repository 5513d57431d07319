"""Figure `induction_formation` (IH, 'Argument 1'): the phase change over training.

    python -m reproduce.figure --name induction_formation

From the log-spaced snapshots of one run per model: the in-context-learning score and every
head's prefix-matching score against tokens seen, with the training loss.  Claims (2L): the best
head gains most of its prefix matching within a factor of 2 in tokens; more than 75% of the
ICL fall happens in that window (IH's number); the training loss falls faster there than on both sides (a bump).  1L: never
forms induction heads, and its final ICL score is above the 2L model's."""

import ml_collections

from reproduce.core import scores


def get_config(preset: str = "cpu"):
  c = ml_collections.ConfigDict()
  c.models = ("attn1l", "attn2l")  # model configs (configs/<name>.py) trained at the preset and analysed
  # Held-out windows for the ICL score at each snapshot (noise ~ 1/√n); each is read up to its
  # late position, 499 when n_ctx ≥ 500, else the same fraction of n_ctx (scores.icl_positions).
  c.icl_windows = scores.ICL_WINDOWS  # 512, as in head_ablations (one definition, one number)
  c.loss_positions = 16  # evenly spaced positions per window for each snapshot's held-out loss
  # Per-token losses at every position of the first 64 of those windows, at every snapshot
  # (16,384 tokens at n_ctx 256): the vectors that the per-token-loss views and the ablations'
  # before-and-after direction read (shared passes, ``formation``).
  c.token_loss_windows = 64
  # Every head's previous-token score at every snapshot on the first 4 of those windows (1,016
  # destinations at n_ctx 256: a standard error ≲ 0.015): only the weights of IH's
  # previous-token K-composition trace, kept cheap (a forward pass with patterns per window).
  c.previous_token_windows = 4
  # A formed induction head: prefix matching 0.3 is ≥ 7× a uniform head's attention over the
  # probe's 100-token context; 0.1 (≈ 2–3× uniform) is "not formed" for the 1L claim.
  c.formed = 0.3
  c.unformed = 0.1
  c.window_ratio = 2.0  # "abrupt": the window spans at most a factor 2 in tokens (IH)
  c.majority = 0.5  # "abrupt": the best head gains most (≥ half) of its rise in the window
  # In-context learning in the window: IH's own number, "more than 75% of the final ICL forms
  # inside the window" (until issue 32 we asked for half: "most").
  c.icl_in_window = 0.75
  # A bump: the window's loss slope (per decade of tokens) below each neighbour's by > 2
  # standard errors of the difference (docs/RECIPE.md: a fit over the whole run extrapolated).
  c.bump_standard_errors = 2.0
  c.lock()
  return c
