"""What every benchmark result records about where it came from: commit, packages, machine."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "evaluate", "numpy")


def git_commit(root: str) -> dict[str, object]:
    """The commit of `root` and whether tracked files differ from it (a dirty tree is recorded, not hidden)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when one is missing)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (Linux `/proc/cpuinfo`); None where it cannot be read. `platform.processor()` is often empty."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        return None
    return None


def provenance(root: str) -> dict[str, object]:
    """Commit, package versions and machine of a benchmark run."""
    return {
        **git_commit(root),
        "packages": package_versions(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
    }
