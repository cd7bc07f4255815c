"""A pruning run's checkpoint: after every round, what the next round starts from.

Pruning with training takes minutes to hours; with a checkpoint, Ctrl-C or a crash loses at most the round
under way. The file is written whole or not at all (a temporary file renamed over it) and is keyed like the
journals (``certprune.journal``): the content of the model and the data, the settings and the certprune
version; resuming a checkpoint of another run is refused with a message that names what differs. Every
round is a function of the round before it (training, attacks and random scores are seeded), so a resumed
run ends with the network an uninterrupted run gives.
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from certprune.errors import CertpruneError
from certprune.journal import mismatch, write_atomic
from certprune.network import Network


@dataclass(frozen=True, eq=False)
class RoundState:
    """After round ``done`` (0: the dense round): the rewinding point, the current network, the surviving
    units per prunable layer (structured) or the weight keep-masks (unstructured), and every round so far
    (``certprune.prune.rounds.Round``)."""

    done: int
    start: Network
    current: Network
    kept: list[torch.Tensor] | None
    masks: Mapping[int, torch.Tensor] | None
    history: list


class Checkpoint:
    """The checkpoint file at ``path`` for the run ``header`` describes (see ``certprune.journal.journal_header``).

    ``restored`` is the state a resumed run continues from (None: start afresh). Without ``resume``, a file
    that already holds finished rounds is refused, as the journals refuse one: a mistyped path would lose them.
    """

    def __init__(self, path: str | Path, header: dict[str, Any], resume: bool) -> None:
        self.path = Path(path)
        self.header = json.loads(json.dumps(header))  # as it compares after a round trip
        self.restored: RoundState | None = None
        if not self.path.exists() or (self.path.is_file() and self.path.stat().st_size == 0):
            return
        saved = self._read()
        if not resume:
            raise CertpruneError(f"checkpoint {self.path} already holds round {saved['state'].done} of a pruning "
                                 "run: pass --resume to continue it, or remove it to start afresh")
        if saved["checkpoint"] != self.header:
            raise CertpruneError(f"checkpoint {self.path} does not fit this run: "
                                 f"{mismatch(saved['checkpoint'], self.header)}; remove it or pick another file")
        self.restored = saved["state"]

    def save(self, state: RoundState) -> None:
        """Replace the file with ``state``, atomically (``certprune.journal.write_atomic``)."""
        buffer = io.BytesIO()
        torch.save({"checkpoint": self.header, "state": state}, buffer)
        write_atomic(self.path, buffer.getvalue())

    def _read(self) -> dict[str, Any]:
        try:
            saved = torch.load(self.path, weights_only=False)  # the user's own file, written by save()
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
                TypeError, ValueError) as error:
            raise CertpruneError(f"{self.path} is not a certprune pruning checkpoint, or another certprune "
                                 "version wrote it: remove it or pick another file") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("state"), RoundState) \
                or not isinstance(saved.get("checkpoint"), dict):
            raise CertpruneError(f"{self.path} is not a certprune pruning checkpoint: remove it or pick another file")
        return saved
