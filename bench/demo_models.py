"""The demo on the other reference models: a BENCHMARKS.md section from ``mutransfer demo`` runs.

Reads the ``summary.json`` of finished ``mutransfer demo --model resnet|bert|hf-bert`` runs
(each a full LR × width grid, SP vs µP, with its seeds), copies each figure to
``docs/images/lr_transfer_<label>.png`` and writes ``bench/results/demo_models.md``: one table
of the demo's claims across the runs, then each run's optima, transfer and provenance. Every
number comes from the summaries, which the demo computed from its own runs.

    .venv/bin/python bench/demo_models.py resnet-sgd=runs/demo-resnet-sgd bert=runs/demo-bert

Runs named before are kept (``demo_models.json``); naming a label again replaces its run.
    .venv/bin/python bench/run_all.py --render-only     # BENCHMARKS.md with the new section
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from mutransfer.demo import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "demo_models.md"
SUMMARIES = ROOT / "bench" / "results" / "demo_models.json"
"""Every run's summary by label: a later call with some labels replaces those runs' rows and
keeps the others', so one grid can be re-run without the others' run folders."""
IMAGES = ROOT / "docs" / "images"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} %"


def _row(label: str, summary: dict[str, Any]) -> list[str]:
    sweeps, transfer, claims = summary["sweeps"], summary["transfer"], summary["claims"] or {}
    held = [c for c in claims.values() if c.get("holds")]
    return [
        label,
        report.MODEL_NAMES.get(summary["config"]["model"], summary["config"]["model"]),
        summary["config"]["optimizer"],
        "/".join(map(str, summary["sizes"])),
        str(len(summary["seeds"])),
        " / ".join(report.fmt_lr(sweeps[rules]["drift_octaves"]) for rules in ("sp", "mup")),
        f"{_pct(transfer['sp']['regret_percent'])} / {_pct(transfer['mup']['regret_percent'])}",
        "yes" if claims.get("mup_wider_is_better", {}).get("holds") else "no",
        f"{len(held)} of {len(claims)}",
    ]


def section(runs: list[tuple[str, dict[str, Any]]]) -> str:
    out = [
        "## The demo on the ResNet, BERT and Hugging Face BERT (`mutransfer demo --model`)",
        "",
        "Each row is one `mutransfer demo` grid (LR × width, SP vs µP, losses averaged over its "
        "seeds). The claims are the GPT demo's: µP's optimum moves ≤ 1 octave across the "
        "widths, SP's ≥ 2; the widest model is the best under µP; the proxy's LR costs the "
        "widest model ≤ 1 % under µP and clearly more under SP. The machine was shared: see each "
        "run's load average; wall times say little about an idle machine.",
        "",
        report.markdown_table(
            [
                "run",
                "model",
                "optimizer",
                "widths",
                "seeds",
                "drift SP / µP (octaves)",
                "regret SP / µP",
                "µP widest best",
                "claims held",
            ],
            [_row(label, summary) for label, summary in runs],
        ),
        "",
    ]
    for label, summary in runs:
        sizes = "/".join(map(str, summary["sizes"]))
        rows = []
        for rules in summary["rules"]:
            sweep = summary["sweeps"][rules]
            fitted = report.fmt_fit(sweep.get("fitted_drift_octaves"))
            rows.append(
                [
                    report.rules_name(rules),
                    "/".join(report.fmt_lr(x) for x in sweep["best_log2_lr"]),
                    "/".join(report.fmt_loss(x) for x in sweep["best_loss"]),
                    f"{report.fmt_lr(sweep['drift_octaves'])} (fitted {fitted})",
                    ", ".join(map(str, sweep.get("optimum_on_grid_edge") or [])) or "none",
                ]
            )
        out += [
            f"### {label}",
            "",
            f"![{label}: validation loss against log2 learning rate]"
            f"(../../docs/images/lr_transfer_{label}.png)",
            "",
            report.markdown_table(
                [
                    "",
                    f"best log2 LR, widths {sizes}",
                    "best loss",
                    "drift (octaves)",
                    "optimum on the grid's edge at width(s)",
                ],
                rows,
            ),
            "",
        ]
        out += ["- " + line for line in report.transfer_lines(summary)]
        out += ["- claim: " + line for line in report.claim_lines(summary)]
        out += ["- " + line for line in report.provenance_lines(summary)]
        out += [""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=FOLDER")
    args = parser.parse_args()
    kept: dict[str, Any] = {}
    if SUMMARIES.exists():
        kept = json.loads(SUMMARIES.read_text(encoding="utf-8"))
    for spec in args.runs:
        label, _, folder = spec.partition("=")
        summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
        shutil.copyfile(
            Path(folder) / report.figure_name(summary["axis"]),
            IMAGES / f"lr_transfer_{label}.png",
        )
        kept[label] = summary
    SUMMARIES.write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    RESULTS.write_text(section(list(kept.items())), encoding="utf-8")
    print(f"wrote {RESULTS} and {SUMMARIES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
