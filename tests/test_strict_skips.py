"""SFT_STRICT_SKIPS=1 (CI): a skip outside the allowlist of tests/conftest.py fails its test, whether the
test skips itself, a skipif mark skips it, or its module skips at collection; without the variable a skip
stays a skip; a test that needs a GPU may skip either way. Each case runs in a pytest subprocess whose
conftest takes the suite's hooks from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

import conftest

pytest_plugins = ["pytester"]

CONFTEST = Path(conftest.__file__).resolve()

#: The conftest of the inner runs: the suite's two skip hooks, loaded from tests/conftest.py under another name.
INNER_CONFTEST = f'''
import importlib.util

_spec = importlib.util.spec_from_file_location("suite_conftest", {str(CONFTEST)!r})
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
pytest_runtest_makereport = _suite.pytest_runtest_makereport
pytest_make_collect_report = _suite.pytest_make_collect_report
'''

SKIPPING = '''
import pytest

def test_skips_itself():
    pytest.skip("the frobnicator is not installed")

@pytest.mark.skipif(True, reason="../shared/data absent")
def test_skipped_by_a_mark():
    pass

def test_needs_a_gpu():
    pytest.skip("needs a GPU")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_to_fail():
    assert False

def test_passes():
    pass
'''

SKIPPED_MODULE = '''
import pytest

pytest.importorskip("sft_no_such_module")

def test_never_collected():
    pass
'''

GPU_ONLY = '''
import pytest

@pytest.mark.skipif(True, reason="needs a GPU")
def test_on_a_gpu():
    pass
'''


@pytest.fixture
def inner(pytester, monkeypatch):
    """``inner(source, strict)``: the outcome of a pytest subprocess over one test file ``source``."""
    pytester.makeconftest(INNER_CONFTEST)

    def run(source: str, strict: bool) -> pytest.RunResult:
        if strict:
            monkeypatch.setenv("SFT_STRICT_SKIPS", "1")
        else:
            monkeypatch.delenv("SFT_STRICT_SKIPS", raising=False)
        pytester.makepyfile(test_inner=source)
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")

    return run


def test_a_disallowed_skip_fails_its_test_in_ci(inner):
    result = inner(SKIPPING, strict=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # the test's own skip fails its call; the mark's skip fails its setup (an error); the GPU skip stays a skip
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    allowed = "(SFT_STRICT_SKIPS=1; allowed only: 'GPU')"
    result.stdout.fnmatch_lines([f"skipped in CI: ../shared/data absent {allowed}"])  # ERRORS come first
    result.stdout.fnmatch_lines([f"skipped in CI: the frobnicator is not installed {allowed}"])
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_inner.py:*: needs a GPU"])


def test_without_the_variable_a_skip_is_a_skip(inner):
    result = inner(SKIPPING, strict=False)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert "skipped in CI" not in result.stdout.str()


def test_a_module_skipped_at_collection_fails_in_ci(inner):
    strict = inner(SKIPPED_MODULE, strict=True)
    assert strict.ret == pytest.ExitCode.INTERRUPTED  # a collection error: pytest runs nothing
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*skipped in CI: could not import 'sft_no_such_module'*(SFT_STRICT_SKIPS=1;*"])
    lax = inner(SKIPPED_MODULE, strict=False)
    assert lax.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    lax.assert_outcomes(skipped=1)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lax"])
def test_a_skip_that_needs_a_gpu_is_allowed(inner, strict):
    result = inner(GPU_ONLY, strict=strict)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=1)
