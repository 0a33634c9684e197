"""Where the tests find the repository's own files, whatever folder under test/ they live in."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository root (README.md, ros_seg/, config/, launch/ ...)."""
