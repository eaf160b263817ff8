"""Summaries of the incorruptible sweep that `analoglearn report` does not print.

    .venv/bin/python recipes/incorruptible/analyze.py runs/incorruptible-cpu > results.md

Per configuration and σ_test: accuracy mean ± std where the std is over all trials of all seeds
(as `analoglearn report`) and, separately, the spread between the seeds' trial means; the best
RWP σ_train (and SAM ρ) per σ_test; SAM vs RWP leaders; constant vs quadratic ramp, paired by
seed (the eval noise draws ξ are the same for every run: eval.seed is shared).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def label(m: dict) -> tuple:
    name = m["name"]
    if name == "sgd":
        return ("sgd", "", 0.0)
    strength = m["sigma"] if name == "rwp" else m["rho"]
    return (name, m.get("schedule", "constant"), strength)


def show(key: tuple) -> str:
    name, sched, x = key
    if name == "sgd":
        return "SGD"
    sym = "σ_train" if name == "rwp" else "ρ"
    return f"{name.upper()} {sym}={x:g} {'quad' if sched == 'quadratic' else 'const'}"


def sd(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def main(root: str) -> None:
    # data[config][strength][seed] = per-trial accuracies
    data: dict = defaultdict(lambda: defaultdict(dict))
    clean: dict = defaultdict(dict)
    secs: dict = defaultdict(list)
    for summ in sorted(Path(root).glob("*/summary.json")):
        s = json.loads(summ.read_text())
        if s.get("status") != "finished":
            continue
        cfg = json.loads(json.dumps(__import__("yaml").safe_load((summ.parent / "config.yaml").read_text())))
        key = label(cfg["method"])
        clean[key][cfg["seed"]] = s["test_accuracy"]
        secs[key].append(s["train_seconds"])
        for item in s["noise"]:
            data[key][item["strength"]][cfg["seed"]] = item["per_trial"]
    keys = sorted(data, key=lambda k: ({"sgd": 0, "rwp": 1, "sam": 2}[k[0]], k[1], k[2]))
    strengths = sorted({s for k in keys for s in data[k]})

    def mean_of(k, s):
        per_seed = [sum(t) / len(t) for t in data[k][s].values()]
        return sum(per_seed) / len(per_seed)

    print("### Accuracy (%) under additive Gaussian filter-max weight noise\n")
    print(
        "mean over seeds of the 10-trial means ± std over all trials of all seeds; "
        "[a, b] = the seeds' own trial means when there are 2 seeds\n"
    )
    print(
        "| configuration | seeds | train s/run | clean (full test) | "
        + " | ".join(f"σ={s:g}" for s in strengths)
        + " |"
    )
    print("|---|---:|---:|---:|" + "---:|" * len(strengths))
    for k in keys:
        cells = []
        for s in strengths:
            trials = [v for t in data[k][s].values() for v in t]
            per_seed = [sum(t) / len(t) for t in data[k][s].values()]
            cell = f"{mean_of(k, s):.2f} ± {sd(trials):.2f}"
            if len(per_seed) > 1:
                cell += " [" + ", ".join(f"{p:.1f}" for p in per_seed) + "]"
            cells.append(cell)
        c = list(clean[k].values())
        print(
            f"| {show(k)} | {len(c)} | {sum(secs[k]) / len(secs[k]):.0f} | {sum(c) / len(c):.2f} | "
            + " | ".join(cells)
            + " |"
        )

    print("\n### Best configuration per σ_test (mean accuracy)\n")
    print("| σ_test | SGD | best RWP (const) | best RWP (quad) | best SAM (any) | best overall |")
    print("|---:|---:|---|---|---|---|")
    for s in strengths:

        def best(pred, s=s):
            cands = [k for k in keys if pred(k)]
            if not cands:
                return "(none yet)"
            k = max(cands, key=lambda k: mean_of(k, s))
            return f"{show(k)}: {mean_of(k, s):.2f}"

        sgd = ("sgd", "", 0.0)
        print(
            f"| {s:g} | {mean_of(sgd, s):.2f} | {best(lambda k: k[0] == 'rwp' and k[1] == 'constant')} | "
            f"{best(lambda k: k[0] == 'rwp' and k[1] == 'quadratic')} | {best(lambda k: k[0] == 'sam')} | "
            f"{best(lambda k: True)} |"
        )

    print("\n### Quadratic ramp minus constant (same final strength), accuracy points, mean over seeds\n")
    print("| method, final strength | " + " | ".join(f"σ={s:g}" for s in strengths) + " |")
    print("|---|" + "---:|" * len(strengths))
    for k in keys:
        if k[1] != "quadratic":
            continue
        const = (k[0], "constant", k[2])
        if const not in data:
            continue
        diffs = []
        for s in strengths:
            seeds = sorted(set(data[k][s]) & set(data[const][s]))
            d = [
                sum(data[k][s][x]) / len(data[k][s][x]) - sum(data[const][s][x]) / len(data[const][s][x]) for x in seeds
            ]
            diffs.append(f"{sum(d) / len(d):+.2f}" + (f" ({', '.join(f'{v:+.1f}' for v in d)})" if len(d) > 1 else ""))
        print(f"| {show(k).rsplit(' ', 1)[0]} | " + " | ".join(diffs) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/incorruptible-cpu")
