"""Random text for corpus tests: words drawn from a small list, and folders of such files."""

import numpy as np


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega return yield lambda class def import").split()


def words(n, seed):
  rng = np.random.default_rng(seed)
  return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def write_corpus(folder, n_files, words_per_file):
  folder.mkdir()
  for i in range(n_files):
    (folder / f"doc{i:02d}.txt").write_text(
        "\n".join(words(12, 100 * i + k) for k in range(words_per_file // 12)))
