"""The package's table of contents: sorted, complete and importable."""

from __future__ import annotations

import batchgen


def test_all_is_sorted_and_every_name_exists() -> None:
    assert batchgen.__all__ == sorted(batchgen.__all__)
    for name in batchgen.__all__:
        assert getattr(batchgen, name) is not None, name


def test_every_error_class_is_exported() -> None:
    import batchgen.errors as errors

    classes = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    assert classes <= set(batchgen.__all__)
