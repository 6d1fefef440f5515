"""The GLUE benchmark for `hf_async_mtl`: task specs, original TSV layouts and a split loader."""

from glue_tasks.formats import GLUE_FORMATS, GlueFormat, TsvFile
from glue_tasks.loading import HUB_DATASET, GlueTsvSource, glue_features, load_glue_task
from glue_tasks.specs import GLUE_TASKS, get_glue_task

__all__ = [
    "GLUE_FORMATS",
    "GLUE_TASKS",
    "GlueFormat",
    "GlueTsvSource",
    "HUB_DATASET",
    "TsvFile",
    "get_glue_task",
    "glue_features",
    "load_glue_task",
]
