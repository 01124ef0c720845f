"""The C++ extension's copy of the layout (csrc/flat_lists.h) is the one of
secant_ext/_layout.py, and loading the extension refuses a copy that drifted."""
import types

import pytest

from secant_ext import _backends, _layout, _ops

pytestmark = pytest.mark.skipif(not _backends.cpp_available(),
                                reason="the C++ extension secant_ext._C is not built")


def _extension():
    from secant_ext import _C
    return _C


def test_every_layout_constant_is_exported_and_equal():
    module = _extension()
    expected = _ops.expected_constants()
    # every state field, the stats columns, the rule codes and the sign modes
    for name in ("ALPHA", "G_SQ", "STATE_SIZE", "COL_DOT", "COL_G_SQ", "NUM_STATS",
                 "RULE_SECANT", "RULE_STEFFENSEN", "RULE_BB2",
                 "SIGN_NONE", "SIGN_SCALED", "SIGN_UNSCALED"):
        assert name in expected
    assert {name: getattr(module, name) for name in expected} == expected
    assert expected["STATE_SIZE"] == _layout.STATE_SIZE
    assert {rule: expected[f"RULE_{rule.upper()}"] for rule in _layout.RULES} == _layout.RULES
    _ops.check_layout(module)  # no error


def _copy_of_extension(**changes):
    module = _extension()
    copy = types.ModuleType(module.__name__)
    for name in _ops.expected_constants():
        setattr(copy, name, getattr(module, name))
    for name, value in changes.items():
        if value is None:
            delattr(copy, name)
        else:
            setattr(copy, name, value)
    return copy


def test_check_names_a_mismatched_constant():
    with pytest.raises(RuntimeError, match=r"G_SQ = 12 in the extension, 11 in "):
        _ops.check_layout(_copy_of_extension(G_SQ=12))


def test_check_covers_the_chunk_size_the_fake_kernels_read():
    """The fake kernels size the C++ stats table from ``_layout.CHUNK_NUMEL``: an extension
    built with another chunk size does not load."""
    assert _extension().CHUNK_NUMEL == _layout.CHUNK_NUMEL
    with pytest.raises(RuntimeError, match=r"CHUNK_NUMEL = 16384 in the extension, 32768 in "):
        _ops.check_layout(_copy_of_extension(CHUNK_NUMEL=1 << 14))


def test_check_names_a_missing_constant():
    with pytest.raises(RuntimeError, match=r"SIGN_UNSCALED is missing"):
        _ops.check_layout(_copy_of_extension(SIGN_UNSCALED=None))


def test_check_follows_layout_py(monkeypatch):
    """A field moved in _layout.py but not in csrc/: the extension no longer loads."""
    monkeypatch.setattr(_layout, "DOT", _layout.DOT + 1)
    with pytest.raises(RuntimeError, match=r"\bDOT = 8 in the extension, 9 in "):
        _ops.check_layout(_extension())
    monkeypatch.setitem(_layout.RULES, "bb2", 7)
    with pytest.raises(RuntimeError, match=r"RULE_BB2 = 2 in the extension, 7 in "):
        _ops.check_layout(_extension())


def test_loading_the_extension_runs_the_check(monkeypatch):
    size = _layout.STATE_SIZE
    monkeypatch.setattr(_layout, "STATE_SIZE", size + 1)
    _ops.extension.cache_clear()
    try:
        with pytest.raises(RuntimeError,
                           match=rf"STATE_SIZE = {size} in the extension, {size + 1} in "):
            _ops.extension()
    finally:
        _ops.extension.cache_clear()
