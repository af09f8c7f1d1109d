"""The README's example runs as written."""
from __future__ import annotations

import pathlib
import re


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)  # the example writes student.fd
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "student.fd").stat().st_size > 0
