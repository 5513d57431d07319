"""The figures: ``python -m reproduce.figure`` (``__main__``) finds them in ``experiments/`` and
makes them (``runner``) from the models a ``sources.ModelSource`` names.  What a figure module
uses: ``sources.Model`` (the model it analyses), ``claims.claim`` (one row of claims.json),
``roles.head_roles`` (previous-token and induction heads, one definition for every figure),
``plotting`` and ``outputs``.  ``report`` writes the claims tally, the seeds table and
index.html; ``estimate`` the start-up plan."""
