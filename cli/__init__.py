"""The command line of `run_glue_mtl.py`: its arguments, usage errors, task-file reader, task add-ons and preflight."""
