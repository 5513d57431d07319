"""Helpers shared by the tests (fixtures live in conftest.py): small models with random or
hand-built weights, TransformerLens-format state dicts, dense circuits, and checks of messages."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

import reproduce
from reproduce.core.model import ModelConfig
from reproduce.core.weights import Weights, init_weights


MECHANISM = ("head_ablations", "induction_heads", "skip_trigrams")  # the mechanism figures


def random_model(n_layers=2, n_heads=3, d_head=4, d_model=12, d_vocab=23, n_ctx=10, seed=0,
                 std=0.4, **kw):
  """A small model with weights large enough that attention is far from uniform: every matrix
  ~ N(0, std²), positions learned, norm gains one (``init_weights``'s layout).  Drawn with
  NumPy: JAX's eager sampler compiles once per shape (seconds each on 2 cores)."""
  cfg = ModelConfig(n_layers, n_heads, d_head, d_model, d_vocab, n_ctx, **kw)
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(std * rng.standard_normal(shape), jnp.float32)
  L, H, D, E, V, T = n_layers, n_heads, d_model, d_head, d_vocab, n_ctx
  ln = cfg.norm == "ln"
  return cfg, Weights(
      W_E=normal(V, D), W_pos=normal(T, D), W_Q=normal(L, H, D, E), W_K=normal(L, H, D, E),
      W_V=normal(L, H, D, E), W_O=normal(L, H, E, D), W_U=normal(D, V),
      ln_gain=jnp.ones((L, D), jnp.float32) if ln else None,
      ln_final=jnp.ones((D,), jnp.float32) if ln else None)


def with_random_biases(w, seed, norm_bias=True):
  """``w`` with every bias (and, for "ln", non-trivial gains and LN biases) random."""
  rng = np.random.default_rng(seed)
  r = lambda shape, mean=0.0: jnp.asarray(mean + 0.3 * rng.normal(size=shape), jnp.float32)
  L, H, dh, D = w.W_Q.shape[0], w.W_Q.shape[1], w.d_head, w.d_model
  w = w.replace(b_Q=r((L, H, dh)), b_K=r((L, H, dh)), b_V=r((L, H, dh)), b_O=r((L, D)),
                b_U=r((w.d_vocab,)))
  if w.ln_gain is not None:
    w = w.replace(ln_gain=r((L, D), 1.0), ln_final=r((D,), 1.0))
    if norm_bias:
      w = w.replace(ln_bias=r((L, D)), ln_final_bias=r((D,)))
  return w


def with_biases(cfg, w, seed):
  """Random biases everywhere (and random LN gains/biases for norm="ln")."""
  rng = np.random.default_rng(seed)
  r = lambda shape, mean=0.0: jnp.asarray(mean + 0.3 * rng.normal(size=shape), jnp.float32)
  L, H, dh, D = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
  w = w.replace(b_Q=r((L, H, dh)), b_K=r((L, H, dh)), b_V=r((L, H, dh)), b_O=r((L, D)),
                b_U=r((cfg.d_vocab,)))
  if cfg.norm == "ln":
    w = w.replace(ln_gain=r((L, D), 1.0), ln_final=r((D,), 1.0), ln_bias=r((L, D)),
                  ln_final_bias=r((D,)))
  return w


def chunk_test_model(norm="ln", pos="standard"):
  cfg, w = random_model(n_layers=2, n_heads=3, d_vocab=29, n_ctx=12, seed=3, norm=norm, pos=pos)
  rng = np.random.default_rng(4)
  w = w.replace(b_U=jnp.asarray(rng.normal(size=cfg.d_vocab), jnp.float32))
  return cfg, w


def induction_model(V=20, T=33, gain=8.0, copy=1.0):
  """2 layers × 1 head, d_head 32: a previous-token head, then an induction head that K-composes
  with it.  Residual blocks: token one-hot [0, V), previous-token one-hot [V, 2V), position
  one-hot [2V, 2V+T) (positions enter Q/K inputs only).  Token 0 is BOS."""
  D, dh = 2 * V + T, 32
  E = np.zeros((V, D)); E[np.arange(V), np.arange(V)] = 1
  P = np.zeros((T, D)); P[np.arange(T), 2 * V + np.arange(T)] = 1
  Q, K = np.zeros((2, 1, D, dh)), np.zeros((2, 1, D, dh))
  Vw, O = np.zeros((2, 1, D, dh)), np.zeros((2, 1, dh, D))
  scale = np.sqrt(gain * np.sqrt(dh))
  for p in range(T - 1):  # layer 0: query at position p+1 matches key at position p
    Q[0, 0, 2 * V + p + 1, p] = scale
    K[0, 0, 2 * V + p, p] = scale
  for t in range(V):
    Vw[0, 0, t, t] = 1; O[0, 0, t, V + t] = 1  # write "my previous token was t"
    Q[1, 0, t, t] = scale; K[1, 0, V + t, t] = scale  # current token = key's previous token
    Vw[1, 0, t, t] = 1; O[1, 0, t, t] = copy  # copy the attended token
  U = np.zeros((D, V)); U[np.arange(V), np.arange(V)] = 1
  cfg = ModelConfig(2, 1, dh, D, V, T)
  f = lambda a: jnp.asarray(a, jnp.float32)
  return cfg, Weights(W_E=f(E), W_pos=f(P), W_Q=f(Q), W_K=f(K), W_V=f(Vw), W_O=f(O), W_U=f(U))


def bos_resting_model(V=20, T=33, dh=8):
  """1 layer × 2 heads on one-hot tokens (token 0 is BOS) and positions: head 0 puts all its
  attention on BOS (attention logit 60 there, 0 elsewhere) and BOS's value raises the logits of
  tokens 1 … 5; head 1 attends uniformly and copies the tokens it attends to."""
  D = V + T
  E = np.zeros((V, D)); E[np.arange(V), np.arange(V)] = 1
  P = np.zeros((T, D)); P[np.arange(T), V + np.arange(T)] = 1
  Q, K = np.zeros((1, 2, D, dh)), np.zeros((1, 2, D, dh))
  Vw, O = np.zeros((1, 2, D, dh)), np.zeros((1, 2, dh, D))
  Q[0, 0, :V, 0] = np.sqrt(60 * np.sqrt(dh)); K[0, 0, 0, 0] = np.sqrt(60 * np.sqrt(dh))
  Vw[0, 0, 0, 0] = 1; O[0, 0, 0, 1:6] = 1
  for t in range(min(V, dh)):
    Vw[0, 1, t, t] = 1; O[0, 1, t, t] = 1
  U = np.zeros((D, V)); U[np.arange(V), np.arange(V)] = 1
  f = lambda a: jnp.asarray(a, jnp.float32)
  return ModelConfig(1, 2, dh, D, V, T), Weights(W_E=f(E), W_pos=f(P), W_Q=f(Q), W_K=f(K),
                                                 W_V=f(Vw), W_O=f(O), W_U=f(U))


def tl_model(n_layers=4, pos="standard", norm="LN", n_heads=2, d_head=3, d_model=10, d_vocab=17,
             n_ctx=8, seed=0):
  """(TransformerLens config, state dict) with every bias and the LN gains/biases random."""
  rng = np.random.default_rng(seed)
  r = lambda *shape, std=0.4: (std * rng.normal(size=shape)).astype(np.float32)
  L, H, D, dh = n_layers, n_heads, d_model, d_head
  state = {"embed.W_E": r(d_vocab, D, std=1.0), "pos_embed.W_pos": r(n_ctx, D, std=1.0),
           "unembed.W_U": r(D, d_vocab), "unembed.b_U": r(d_vocab)}
  for l in range(L):
    a = f"blocks.{l}.attn."
    state.update({a + "W_Q": r(H, D, dh), a + "W_K": r(H, D, dh), a + "W_V": r(H, D, dh),
                  a + "W_O": r(H, dh, D), a + "b_Q": r(H, dh), a + "b_K": r(H, dh),
                  a + "b_V": r(H, dh), a + "b_O": r(D),
                  a + "mask": np.tril(np.ones((n_ctx, n_ctx), bool)),
                  a + "IGNORE": np.array(-np.inf, np.float32)})
    if norm == "LN":
      state[f"blocks.{l}.ln1.w"] = 1 + r(D, std=0.3)
      state[f"blocks.{l}.ln1.b"] = r(D, std=0.3)
  if norm == "LN":
    state["ln_final.w"], state["ln_final.b"] = 1 + r(D, std=0.3), r(D, std=0.3)
  config = {"n_layers": L, "d_model": D, "n_heads": H, "d_head": dh, "d_vocab": d_vocab,
            "n_ctx": n_ctx, "d_mlp": None, "attn_only": True, "normalization_type": norm,
            "positional_embedding_type": pos, "eps": 1e-4, "act_fn": None, "use_attn_result":
            False, "n_key_value_heads": None, "rotary_dim": None, "attn_scale": np.sqrt(dh),
            "use_attn_scale": True, "d_vocab_out": d_vocab, "model_name": "random"}
  return config, state


def write_tl_model(directory, config, state, suffix=".safetensors"):
  """Weights plus a config.json beside them, as a TransformerLens model repository has."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  path = directory / f"model{suffix}"
  if suffix == ".npz":
    np.savez(path, **state)
  else:
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file({k: np.ascontiguousarray(v) for k, v in state.items() if v.ndim > 0
               and v.dtype != bool}, str(path))
  return path


def nonzero_eigs(dense, k):
  """The k largest-magnitude eigenvalues of a dense matrix (the rest are ~0 for rank ≤ k)."""
  lam = np.linalg.eigvals(np.asarray(dense, np.float64))
  return lam[np.argsort(-np.abs(lam))[:k]]


def same_multiset(a, b, tol=1e-6):
  a, b = list(np.asarray(a)), list(np.asarray(b))
  assert len(a) == len(b)
  for x in a:  # greedy matching of complex values
    i = int(np.argmin([abs(x - y) for y in b]))
    assert abs(x - b[i]) <= tol * max(1.0, abs(x)), (x, b[i])
    b.pop(i)


def dense_head_circuits(w, l, h):
  E, U = np.asarray(w.W_E, np.float64), np.asarray(w.W_U, np.float64)
  Q, K, V, O = (np.asarray(getattr(w, n)[l, h], np.float64) for n in ("W_Q", "W_K", "W_V", "W_O"))
  return {"qk_full": E @ Q @ K.T @ E.T, "ov_full": E @ V @ O @ U, "qk": Q @ K.T, "ov": V @ O}


# bfloat16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.002 per operand); over a handful
# of products and a float32 softmax/log-sum-exp the loss moves by far less than 1%.
BF16_LOSS_RTOL = 0.01


BF16_GRAD_COSINE = 0.99


def random_batch(cfg, batch=4, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, cfg.d_vocab, (batch, cfg.n_ctx)).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(np.roll(x, -1, axis=1))


def one_line(message: str, path) -> str:
  assert "\n" not in message and message.startswith(str(path)), message
  return message


def word_tokenizer(path, words):
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  path.parent.mkdir(parents=True, exist_ok=True)
  tok.save(str(path))
  return tok


# Token strings that would be markup or end a script if a page took them as HTML.
HOSTILE_TOKENS = ["</script><b>X", "<img/src=x/onerror=alert(1)>", "<!--", "\"quoted'",
                  "a&amp;b", "\u2028", "]]>", "${1}", "{{BODY}}", "{{VIEWS}}", "</SCRIPT >"]


def hostile_model(folder, n_layers: int = 2):
  """(weights file, corpus folder): a random model with a word-level tokenizer of
  ``HOSTILE_TOKENS`` (40 tokens in all: a small vocabulary) beside it, and a corpus of them."""
  words = HOSTILE_TOKENS + [f"w{i}" for i in range(38 - len(HOSTILE_TOKENS))]
  vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
  folder.mkdir(parents=True)
  tok.save(str(folder / "tokenizer.json"))
  cfg = ModelConfig(n_layers=n_layers, n_heads=2, d_head=8, d_model=16, d_vocab=len(vocab),
                    n_ctx=64)
  reproduce.save_transformer_lens(folder / "model.npz", cfg, init_weights(cfg, jax.random.key(1)))
  corpus = folder.parent / f"text{n_layers}"
  corpus.mkdir()
  for i in range(12):  # every word many times, in a different order per file
    order = [words[(i * 7 + j * (i + 3)) % len(words)] for j in range(400)]
    (corpus / f"doc{i}.txt").write_text(" ".join(order), encoding="utf-8")
  return folder / "model.npz", corpus
