"""Run by ``torchrun`` in tests/test_distributed.py: train the runs of a JSON file with several workers.

``python distributed_worker.py RUNS.json OUT``: for each ``{"name": ..., "config": {...}}`` train
``OUT/<name>`` with :func:`analoglearn.train.fit`, counting the checkpoints each worker writes; every
worker then writes ``OUT/writes-<rank>.json`` (``{run name: [checkpoint names written]}``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analoglearn import distributed
from analoglearn.config import build_config
from analoglearn.runs import RunDir
from analoglearn.train import fit


def main(spec: str, out: str) -> None:
    written: dict[str, list[str]] = {}
    original = RunDir.save_checkpoint

    def counting(self, state, name="last.pt"):
        written.setdefault(self.path.name, []).append(name)
        return original(self, state, name)

    RunDir.save_checkpoint = counting
    for run in json.loads(Path(spec).read_text()):
        fit(build_config(run["config"]), Path(out) / run["name"], log=lambda line: None)
    rank = distributed.world().rank
    (Path(out) / f"writes-{rank}.json").write_text(json.dumps(written))


if __name__ == "__main__":
    main(*sys.argv[1:])
