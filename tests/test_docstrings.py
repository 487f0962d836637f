"""The examples in the public docstrings run and give what they show."""

import doctest

import pytest

import autofit._curve_fit
import autofit._dispatch
import autofit.models


@pytest.mark.parametrize("module", [autofit._curve_fit, autofit._dispatch, autofit.models],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
