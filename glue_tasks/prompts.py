"""Candidate DynaMaR prompt templates for the GLUE tasks (`--prompt_pool_size` picks a pool from them).

Written for this project (the DynaMaR paper's templates are for its e-commerce tasks and unpublished):
each candidate places the mask and the texts differently and words the question differently, so the
pool builder (`hf_async_mtl.template_pool.build_template_pool`) has diverse candidates to choose from.
The first candidate of each task is its single fixed template (`--prompt_pool_size 1`).
"""

from __future__ import annotations

import dataclasses

from glue_tasks.specs import GLUE_TASKS

__all__ = ["GLUE_TEMPLATE_CANDIDATES", "glue_template_candidates"]

_SINGLE = {
    "cola": (
        "{sentence} This sentence is {mask}.",
        "Is this correct English? {mask}. {sentence}",
        "{sentence} Grammatical: {mask}",
        'A linguist would call "{sentence}" {mask}.',
        "{mask} English: {sentence}",
        "Read: {sentence} Verdict on its grammar, {mask}.",
    ),
    "sst2": (
        "{sentence} It was {mask}.",
        "A {mask} review: {sentence}",
        "{sentence} Overall, the film is {mask}.",
        "Sentiment {mask}. {sentence}",
        "I watched it and {sentence} In a word, {mask}.",
        '{mask} opinion of the critic: "{sentence}"',
    ),
}
_PAIR = {
    "mrpc": (
        "{sentence1} {mask}, {sentence2}",
        "Do these say the same thing? {mask}. {sentence1} {sentence2}",
        '"{sentence1}" and "{sentence2}" are {mask}.',
        "{sentence2} Paraphrase of it: {mask}. {sentence1}",
        "First: {sentence1} Second: {sentence2} Same meaning? {mask}",
        "{mask} equivalent sentences: {sentence1} / {sentence2}",
    ),
    "stsb": (
        "{sentence1} {mask}, {sentence2}",
        "How similar are they? {mask}. {sentence1} {sentence2}",
        '"{sentence1}" and "{sentence2}" are {mask} alike.',
        "{sentence2} Similarity to it: {mask}. {sentence1}",
        "First: {sentence1} Second: {sentence2} Similar? {mask}",
        "{mask} similar sentences: {sentence1} / {sentence2}",
    ),
    "rte": (
        "{sentence1} Question: {sentence2} Answer: {mask}.",
        "{sentence1} {mask}, {sentence2}",
        'Does "{sentence1}" imply "{sentence2}"? {mask}',
        "{sentence2} Follows from the text? {mask}. Text: {sentence1}",
        "Premise: {sentence1} Hypothesis: {sentence2} Entailed: {mask}",
        "{mask} entailment between {sentence1} and {sentence2}",
    ),
}
_PAIR["wnli"] = _PAIR["rte"]

GLUE_TEMPLATE_CANDIDATES: dict[str, tuple[str, ...]] = {**_SINGLE, **_PAIR}


def glue_template_candidates(name: str) -> tuple[str, ...]:
    """The candidate templates of GLUE task `name`; a clear error for a task without candidates."""
    if name not in GLUE_TEMPLATE_CANDIDATES:
        known = ", ".join(GLUE_TEMPLATE_CANDIDATES)
        raise ValueError(f"No built-in prompt templates for task {name!r} (built in for {known}); give them in --prompt_templates_file.")
    return GLUE_TEMPLATE_CANDIDATES[name]


for _name, _templates in GLUE_TEMPLATE_CANDIDATES.items():  # every candidate fits its task's text fields
    for _template in _templates:
        dataclasses.replace(GLUE_TASKS[_name], prompt_templates=(_template,))
