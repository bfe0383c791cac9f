"""The Python API example of docs/reference.md runs here, as written: its code
block is extracted and its test functions are called."""

import re
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def _example() -> dict:
    text = REFERENCE.read_text()
    m = re.search(r"<!-- example: explore-api[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "docs/reference.md lost its explore-api example"
    ns: dict = {"__name__": "readme_example"}
    exec(compile(m.group(1), "docs/reference.md:explore-api", "exec"), ns)
    return ns


def test_reference_api_example_tests_pass():
    ns = _example()
    tests = [v for k, v in ns.items() if k.startswith("test_")]
    assert [t.__name__ for t in tests] == ["test_store_buffering", "test_mixed_size", "test_check_then_increment"]
    for t in tests:
        t()
