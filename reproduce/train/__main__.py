"""``python -m reproduce.train``: see ``reproduce.train.loop``."""

from absl import flags

from reproduce.train import loop

loop.define_flags()
flags.adopt_module_key_flags(loop)  # --help lists loop's flags as this command's own
loop.run_cli()
