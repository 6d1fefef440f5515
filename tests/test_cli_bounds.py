"""Every numeric and choice option is checked on the value as given, before any work, in one line naming it.

The bounds are one table (`cli/bounds.py`); a field of the argument dataclasses without an entry fails here, so a
new option cannot be added without its bound.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

import run_glue_mtl
from cli.arguments import DataArguments, ModelArguments
from cli.bounds import BOUNDS, UNBOUNDED
from hf_async_mtl import MultiTaskTrainingArguments

# Values tried on every bounded option; each one the option's bound rejects must be refused.
BOUNDARY_VALUES = ("0", "-1", "abc", "no_such_choice")


def _own_fields():
    inherited = {f.name for f in dataclasses.fields(MultiTaskTrainingArguments.__mro__[1])}
    for cls in (ModelArguments, DataArguments, MultiTaskTrainingArguments):
        for field in dataclasses.fields(cls):
            if field.init and not (cls is MultiTaskTrainingArguments and field.name in inherited):
                yield field


def test_every_option_of_the_argument_dataclasses_has_a_bound_or_a_reason_for_none():
    missing = sorted(f.name for f in _own_fields() if f.name not in BOUNDS and f.name not in UNBOUNDED)
    assert missing == [], f"add a bound to cli/bounds.py BOUNDS (or a reason to UNBOUNDED) for: {missing}"
    all_fields = {f.name: f for cls in (ModelArguments, DataArguments, MultiTaskTrainingArguments) for f in dataclasses.fields(cls)}
    assert sorted(set(BOUNDS) - set(all_fields)) == []  # no stale entry
    for name, bound in BOUNDS.items():  # every default is within its bound
        default = all_fields[name].default
        assert default is dataclasses.MISSING or default is None or bound.accepts(default), (name, default)


def _refused(bound, value: str) -> bool:
    if bound.choices is not None:
        return not bound.accepts(value)
    try:
        number = float(value)
    except ValueError:
        return True  # not a number at all: the parser refuses the type
    return not bound.accepts(int(number) if bound.integer else number)


def test_each_bounded_option_refuses_its_boundary_values_in_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "never-created"
    cases = [(name, value) for name, bound in sorted(BOUNDS.items()) for value in BOUNDARY_VALUES if _refused(bound, value)]
    for name, value in cases:
        argv = ["--model_name_or_path", str(tmp_path / "no-model"), "--output_dir", str(out), "--do_train", f"--{name}", value]
        with pytest.raises(SystemExit) as exit_info:
            run_glue_mtl.main(argv)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert exit_info.value.code == 2, (name, value)
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"--{name}" in lines[0], (name, value, lines)
        assert not out.exists(), (name, value)
    # fields x values walked (printed with -s)
    print(f"\n{len(BOUNDS)} bounded options, {len(cases)} refused boundary values")
    assert len({name for name, _ in cases}) == len(BOUNDS)  # every bounded option has at least one refused value


def test_a_json_config_value_outside_its_bound_names_the_file_line_and_field(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps({"model_name_or_path": "x", "output_dir": str(tmp_path / "o"), "do_train": True, "eval_steps": 0}, indent=1)
    )
    with pytest.raises(SystemExit):
        run_glue_mtl.main([str(config)])
    line = capsys.readouterr().err.strip()
    assert line == f"error: {config}, line 5, field 'eval_steps': must be a number > 0, got 0."
