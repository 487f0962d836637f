"""autofit's self-test tooling, shipped so that a user's install can check itself.

- :mod:`autofit.selftest.cases`: the inputs on which every kernel is compared across
  backends (the generated tests and ``validate`` use them);
- :mod:`autofit.selftest.validate`: ``python -m autofit validate``, every kernel on every
  installed backend against the NumPy reference;
- :mod:`autofit.selftest.nist`: NIST's StRD nonlinear-regression problems, read from their
  certified-value files.

Nothing in the fitting code imports this package.
"""
