"""Code that at least two foretell systems share: errors, seeding, timing, MAC counting,
atomic report writing, progress bars and locating the shared data directory."""

from foretell.core.errors import ForetellError
from foretell.core.seed import seed_everything
from foretell.core.timing import Timing, time_callable
from foretell.core.report import environment_info, write_json, write_text, write_markdown_table
from foretell.core.paths import repo_root, shared_dir
from foretell.core.progress import progress
from foretell.core.macs import count_macs

__all__ = [
    "ForetellError", "seed_everything", "Timing", "time_callable", "environment_info",
    "write_json", "write_text", "write_markdown_table", "repo_root", "shared_dir", "progress",
    "count_macs",
]
