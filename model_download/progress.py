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
