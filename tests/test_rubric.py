"""The rubric cannot drift from the tests: every test and measurement it names must exist."""
import pytest

from grader import rubric as rubric_mod


def test_the_rubric_names_only_what_the_tests_define():
    rubric = rubric_mod.load()  # raises RubricError naming anything unknown
    assert rubric.total == 20
    # Task 5's bad-input check is scored (the rubric once named a test that did not exist).
    assert any("test_rejects_bad_inputs" in c.tests for c in rubric.tasks["task5"].checks)


def test_a_rubric_naming_a_missing_test_or_measurement_fails_loudly(tmp_path):
    text = rubric_mod.RUBRIC_PATH.read_text()
    bad = text.replace('"test_rejects_bad_inputs", "test_decode_kernel"', '"test_update_kv_cache_rejects", "test_decode_kernel"')
    bad = bad.replace('measurement = "core_speedup"', 'measurement = "core_speedups"')
    assert bad != text
    (tmp_path / "rubric.toml").write_text(bad)
    with pytest.raises(rubric_mod.RubricError) as err:
        rubric_mod.load(tmp_path / "rubric.toml")
    message = str(err.value)
    assert "task5: test 'test_update_kv_cache_rejects'" in message
    assert "task4: measurement 'core_speedups', which test_core_speed never records" in message
