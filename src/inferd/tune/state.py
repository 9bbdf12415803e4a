"""Resume: every finished trial is one line of ``trials.jsonl`` in the report folder.

``tune.json`` beside it records what makes measurements comparable (the model, the target, how
load is applied). Running again with the same folder reads both: a trial already in the file is
not run again, and since the search is deterministic it walks the same path up to where it was
interrupted and goes on from there. Different measurement settings would mix incomparable
trials, so they are refused; the memory budget, the price and the trial budget may change.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Final

from inferd.errors import ConfigError
from inferd.tune.measurement import Measurement
from inferd.tune.search import Trial
from inferd.tune.space import Candidate

logger = logging.getLogger("inferd.tune")

SETTINGS_FILE: Final = "tune.json"
TRIALS_FILE: Final = "trials.jsonl"


class TrialLog:
    """The report folder's record of finished trials, by candidate key."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / TRIALS_FILE
        folder.mkdir(parents=True, exist_ok=True)
        self._check_settings(settings)
        self.finished: dict[str, tuple[int, Trial]] = {}
        self.confirmations: dict[str, tuple[int, Measurement]] = {}
        """Second measurements of the best candidates, by candidate key."""
        self._read()

    def lookup(self, candidate: Candidate) -> tuple[int, Trial] | None:
        """The trial number and trial of ``candidate`` if it already ran."""
        return self.finished.get(candidate.key())

    def trials(self) -> tuple[tuple[int, Trial], ...]:
        """Every finished trial with its number, in the order they ran."""
        return tuple(sorted(self.finished.values(), key=lambda item: item[0]))

    def next_number(self) -> int:
        """The number the next new trial (or confirmation) gets."""
        numbers = [n for n, _ in self.finished.values()]
        numbers += [n for n, _ in self.confirmations.values()]
        return max(numbers, default=0) + 1

    def append(
        self, number: int, candidate: Candidate, measurement: Measurement, confirms: bool = False
    ) -> None:
        """Record a finished trial (or the confirmation of one), durably, before going on."""
        line = {
            "number": number,
            "key": candidate.key(),
            "candidate": candidate.as_dict(),
            "measurement": measurement.to_json(),
            "confirms": confirms,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._keep(line, candidate, measurement)

    def _keep(self, line: dict[str, Any], candidate: Candidate, measurement: Measurement) -> None:
        if line.get("confirms"):
            self.confirmations[candidate.key()] = (int(line["number"]), measurement)
        else:
            self.finished[candidate.key()] = (int(line["number"]), Trial(candidate, measurement))

    def _check_settings(self, settings: dict[str, Any]) -> None:
        path = self.folder / SETTINGS_FILE
        normalized = json.loads(json.dumps(settings))
        if path.exists():
            try:
                before = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{path}: cannot read it to resume ({e})") from None
            for key in sorted(set(before) | set(normalized)):
                if before.get(key) != normalized.get(key):
                    raise ConfigError(
                        f"{path}: this folder holds trials measured with {key} = "
                        f"{before.get(key)!r}, not {normalized.get(key)!r}; use another --out "
                        f"folder, or the same settings to resume"
                    )
            return
        path.write_text(json.dumps(normalized, indent=2) + "\n")

    def _read(self) -> None:
        if not self.path.exists():
            return
        for i, text in enumerate(self.path.read_text().splitlines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                candidate = Candidate(tuple(line["candidate"].items()))
                self._keep(line, candidate, Measurement.from_json(line["measurement"]))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                # A line cut short by a kill mid-write: that trial simply runs again.
                logger.warning("%s:%d: skipping an unreadable trial (%s)", self.path, i, e)
