"""How a download reports progress, whoever listens (a terminal bar, a Prefect artifact)."""

from __future__ import annotations


class Progress:
    """Receives the byte counts of downloads; this base class ignores them.

    One listener may follow several models at once, from several threads: implementations
    keep their own lock.
    """

    def start(self, label: str, total: int) -> None:
        """A download of ``total`` bytes named ``label`` begins."""

    def advance(self, label: str, nbytes: int) -> None:
        """``nbytes`` more bytes are done (negative when a file restarts from zero)."""

    def finish(self, label: str, ok: bool) -> None:
        """The download ended, well or not."""


def format_size(nbytes: int) -> str:
    """``nbytes`` for people, in powers of 1000: ``512 B``, ``12.3 MB``."""
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
