"""The README's Python API example runs here, as written: its code block is
extracted from README.md and its test functions are called."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> dict:
    text = README.read_text()
    m = re.search(r"<!-- example: explore-api[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "the README lost its explore-api example"
    ns: dict = {"__name__": "readme_example"}
    exec(compile(m.group(1), "README.md:explore-api", "exec"), ns)
    return ns


def test_readme_example_tests_pass():
    ns = _example()
    tests = [v for k, v in ns.items() if k.startswith("test_")]
    assert [t.__name__ for t in tests] == ["test_store_buffering", "test_mixed_size", "test_check_then_increment"]
    for t in tests:
        t()
