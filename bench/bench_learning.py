"""The learning curve (issue 13 §5): a team's first days with the product on the BANKING77 protocol.

    python bench/bench_learning.py [--days 5] [--seed 0] [--rotation 0] [--per-day 300]
                                   [--target-precision 0.95] [--json]

A quarter of BANKING77's intents (rotation `--rotation` of `models.open_set.rotations`) are the team's
unknowns: not theirs, corrected to the taxonomy's catch-all `other`, which the model learns as its
out-of-scope label. Day 0 starts from 10 labelled examples per known intent (`triage model train` on
them, promoted). Every day (0 … `--days`) 300 new enquiries arrive as web-form posts, a quarter of them
unknown; they are imported and processed by the product's pipeline (`pipeline.jobs`) into a temporary
workspace and SQLite database; people confirm (`review.service.accept`) or correct
(`review.service.correct`) everything that reaches them, with the dataset's truth; at night
`models.retraining.retrain` trains a candidate on the day-0 examples plus every reviewed label, and a
(simulated) ops lead promotes it (`models.registry.promote`).

Beside it, an *oracle* is trained with the same trainer (`models.training.train_model`) on all true labels
seen so far, automated enquiries included (which the product never gets labels for). Each day prints, for
both, on that day's traffic: coverage (share automated), automated precision against the true labels
(an automated unknown is wrong) and wrongly automated unknowns; and the same on a fixed evaluation set
(the official test split with the held-out intents as unknowns: 3,080 rows, a steadier figure than 300
rows a day). The target: on the last day coverage ≥ 90 % of the oracle's at precision ≥ 0.94, and no day
below 0.92.

Peak memory and wall time are printed too. Nothing outside the temporary workspace is written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OTHER = "other"  # the taxonomy's catch-all, the model's out-of-scope label
SUBJECT = "Web form"  # what a form post without a subject gets (connectors/forms.py)
SENDER_DOMAIN = "customers.example"  # in no firmographics table: segment unknown, no ARR, not free mail
REVIEWER = "sam"
OPS_LEAD = "Olga"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the simulated first day (a Monday); no real clock used

BoolArray = npt.NDArray[np.bool_]


# --- pure parts (tests/models/test_bench_learning.py) ------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Row indices into the training split: the day-0 labelled examples, then each day's traffic."""

    seed_rows: list[int]
    days: list[list[int]]


def day_schedule(
    labels: Sequence[str],
    unknown: set[str],
    *,
    days: int,
    per_day: int = 300,
    unknown_share: float = 0.25,
    seed_per_intent: int = 10,
    seed: int = 0,
) -> Schedule:
    """`seed_per_intent` rows of every known intent for day 0; then `days` days of `per_day` rows each,
    `round(per_day * unknown_share)` of them unknown, drawn without replacement, in a shuffled order.

    Raises ValueError when the data cannot fill the schedule (too few rows of an intent or in a pool).
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    seed_rows: list[int] = []
    known_pool: list[int] = []
    unknown_pool: list[int] = []
    for label in sorted(by_label):
        rows = by_label[label]
        order = rng.permutation(len(rows))
        shuffled = [rows[i] for i in order]
        if label in unknown:
            unknown_pool.extend(shuffled)
            continue
        if len(shuffled) < seed_per_intent:
            raise ValueError(f"intent {label!r} has {len(shuffled)} rows, fewer than {seed_per_intent}")
        seed_rows.extend(shuffled[:seed_per_intent])
        known_pool.extend(shuffled[seed_per_intent:])
    known_pool = [known_pool[i] for i in rng.permutation(len(known_pool))]
    unknown_pool = [unknown_pool[i] for i in rng.permutation(len(unknown_pool))]
    n_unknown = round(per_day * unknown_share)
    n_known = per_day - n_unknown
    if n_known * days > len(known_pool) or n_unknown * days > len(unknown_pool):
        raise ValueError(
            f"{days} days of {n_known} known + {n_unknown} unknown rows need more rows than the data has "
            f"({len(known_pool)} known, {len(unknown_pool)} unknown left after the day-0 examples)"
        )
    schedule: list[list[int]] = []
    for day in range(days):
        today = (
            known_pool[day * n_known : (day + 1) * n_known]
            + unknown_pool[day * n_unknown : (day + 1) * n_unknown]
        )
        schedule.append([today[i] for i in rng.permutation(len(today))])
    return Schedule(seed_rows=sorted(seed_rows), days=schedule)


@dataclass(frozen=True)
class LaneFigures:
    """The automated lane on one set of enquiries, against the true labels."""

    n: int
    automated: int
    coverage: float
    precision: float | None  # None when nothing was automated
    unknowns_automated: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lane_figures(
    truth: Sequence[str], predicted: Sequence[str], automated: Sequence[bool], unknown: Sequence[bool]
) -> LaneFigures:
    """Coverage, automated precision (an automated unknown is always wrong) and wrongly automated
    unknowns."""
    truth_a = np.asarray(truth, dtype=object)
    predicted_a = np.asarray(predicted, dtype=object)
    automated_a = np.asarray(automated, dtype=bool)
    unknown_a = np.asarray(unknown, dtype=bool)
    if not len(truth_a) == len(predicted_a) == len(automated_a) == len(unknown_a):
        raise ValueError("truth, predicted, automated and unknown must have the same length")
    correct = (predicted_a == truth_a) & ~unknown_a
    n_automated = int(automated_a.sum())
    return LaneFigures(
        n=len(truth_a),
        automated=n_automated,
        coverage=round(n_automated / len(truth_a), 4) if len(truth_a) else 0.0,
        precision=round(float(correct[automated_a].mean()), 4) if n_automated else None,
        unknowns_automated=int((automated_a & unknown_a).sum()),
    )


def target_check(
    product: Sequence[LaneFigures],
    oracle: Sequence[LaneFigures],
    *,
    coverage_ratio: float = 0.9,
    precision: float = 0.94,
    floor: float = 0.92,
) -> dict[str, Any]:
    """The issue's target on the last day (coverage ≥ ratio × the oracle's, precision ≥ `precision`) and
    on every day (precision ≥ `floor`; a day with nothing automated has no precision to fail)."""
    if not product or len(product) != len(oracle):
        raise ValueError("one figure per day for both the product and the oracle")
    last, last_oracle = product[-1], oracle[-1]
    ratio = last.coverage / last_oracle.coverage if last_oracle.coverage > 0 else None
    precisions = [day.precision for day in product if day.precision is not None]
    worst = min(precisions) if precisions else None
    return {
        "last_day_coverage_vs_oracle": None if ratio is None else round(ratio, 4),
        "last_day_precision": last.precision,
        "worst_day_precision": worst,
        "coverage_met": ratio is not None and ratio >= coverage_ratio,
        "precision_met": last.precision is not None and last.precision >= precision,
        "floor_met": worst is None or worst >= floor,
    }


# --- the product as it was before the learning-curve changes (`--before`) ----------------------------


def use_previous_thresholds() -> None:
    """Put back what the product did before: Bonferroni over 49 confidence × 6 novelty floors, a quarter
    of never-seen unknowns on top of the team's own out-of-scope rows, and `retrain` registering the
    model trained without its 20 % hold-out. For the before/after rows of docs/classifier.md."""
    from models import retraining, training

    training.LTT_PROCEDURE = "bonferroni"
    training.NOVELTY_QUANTILES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    training.MIN_NOVEL_FRACTION = 1.0
    retraining.REFIT_DEFAULT = False


# --- the simulation -------------------------------------------------------------------------------


def write_policy(policy_dir: Path, intents: Sequence[str]) -> None:
    """The bundled policy files, with the team's intents added to the taxonomy (what `triage taxonomy
    init` is meant to write): queue `general`, normal priority, the lead task the matrix automates."""
    import shutil

    import yaml

    shutil.copytree(ROOT / "config" / "defaults", policy_dir)
    path = policy_dir / "taxonomy.yaml"
    taxonomy = yaml.safe_load(path.read_text(encoding="utf-8"))
    for intent in intents:
        taxonomy["intents"].setdefault(
            intent,
            {
                "description": f"BANKING77 intent {intent}",
                "queue": "general",
                "priority": "normal",
                "task": "create_or_update_lead",
            },
        )
    path.write_text(yaml.safe_dump(taxonomy, sort_keys=False), encoding="utf-8")


def feature_frame(texts: Sequence[str]) -> Any:
    """Texts as the pipeline presents a form post to the model (subject, channel, enrichment)."""
    from models.classifier import frame_from_texts

    size = len(texts)
    return frame_from_texts(
        list(texts),
        subjects=[SUBJECT] * size,
        channels=["form"] * size,
        free_mail=[False] * size,
        segments=["unknown"] * size,
    )


def model_lane(model: Any, texts: Sequence[str]) -> tuple[list[str], BoolArray]:
    """A model's predicted intents and which of them the scorer would automate."""
    arrays = model.predict_arrays(feature_frame(texts))
    predicted = [model.labels[index] for index in arrays["chosen"]]
    return predicted, ~np.asarray(arrays["abstained"], dtype=bool)


class Team:
    """A workspace with the product in it, worked by simulated people."""

    def __init__(self, workspace: Path, intents: Sequence[str], *, clock_day: list[int]) -> None:
        from config.settings import Settings
        from pipeline.runtime import Runtime

        self.workspace = workspace
        write_policy(workspace / "policy", intents)
        settings = Settings(home=workspace / "home", policy_dir=workspace / "policy", database_url=None)
        settings.ensure_home()
        self._clock_day = clock_day
        self.runtime = Runtime(settings, clock=self.now)
        self.home = settings.home

    def now(self) -> datetime:
        return START + timedelta(days=self._clock_day[0], hours=1)

    def install(self, result: Any, description: str) -> str:
        """Register a trained model and have the ops lead promote it."""
        from models import registry

        with self.runtime.factory() as session, session.begin():
            version = registry.register_candidate(
                session, self.home, result, trained_by="bench", data_description=description
            )
        self.promote(version)
        return version

    def promote(self, version: str) -> None:
        from models import registry

        with self.runtime.factory() as session, session.begin():
            registry.promote(session, version, approved_by=OPS_LEAD, home=self.home)

    def receive(self, day: int, texts: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Import the day's form posts and process them; each submission's enquiry, by submission id."""
        import sqlalchemy as sa

        from models.records import Channel
        from pipeline import jobs
        from store.tables import Enquiry

        path = self.workspace / f"day-{day}.jsonl"
        at = self.now().isoformat()
        with path.open("w", encoding="utf-8") as handle:
            for number, text in enumerate(texts):
                post = {
                    "submission_id": f"d{day}-{number}",
                    "submitted_at": at,
                    "email": f"customer-{day}-{number}@{SENDER_DOMAIN}",
                    "message": text,
                }
                handle.write(json.dumps(post) + "\n")
        jobs.import_path(self.runtime, path, Channel.FORM)
        jobs.process(self.runtime)
        keys = [f"form:d{day}-{number}" for number in range(len(texts))]
        with self.runtime.factory() as session:
            rows = session.execute(
                sa.select(
                    Enquiry.message_key, Enquiry.id, Enquiry.lane, Enquiry.intent, Enquiry.enrichment
                ).where(Enquiry.message_key.in_(keys))
            ).all()
        return {
            row.message_key: {
                "id": row.id,
                "lane": row.lane,
                "intent": row.intent,
                "enrichment": row.enrichment,
            }
            for row in rows
        }

    def review(self, truth_by_enquiry: dict[str, str]) -> dict[str, int]:
        """Confirm or correct every open item, with the truth: what people do all day."""
        import sqlalchemy as sa

        from review import service
        from store.db import transaction
        from store.tables import Enquiry, ReviewItem

        queue_of = {name: intent.queue for name, intent in self.runtime.policy.taxonomy.intents.items()}
        done = {"accepted": 0, "corrected": 0}
        now = self.now() + timedelta(hours=2)
        with transaction(self.runtime.factory) as session:
            items = session.execute(
                sa.select(ReviewItem.id, Enquiry.id, Enquiry.intent, Enquiry.priority)
                .join(Enquiry, Enquiry.id == ReviewItem.enquiry_id)
                .where(ReviewItem.status != "done", Enquiry.id.in_(list(truth_by_enquiry)))
                .order_by(ReviewItem.id)
            ).all()
            for item_id, enquiry_id, intent, priority in items:
                truth = truth_by_enquiry[enquiry_id]
                if intent == truth:
                    service.accept(session, item_id, user=REVIEWER, now=now)
                    done["accepted"] += 1
                else:
                    service.correct(
                        session,
                        item_id,
                        user=REVIEWER,
                        intent=truth,
                        priority=priority,
                        queue=queue_of[truth],
                        now=now,
                    )
                    done["corrected"] += 1
        return done


def simulate(
    data: Path,
    *,
    days: int,
    seed: int,
    rotation: int,
    per_day: int,
    target_precision: float,
    jobs: int,
    show_progress: bool,
    before: bool = False,
) -> dict[str, Any]:
    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from models import retraining, training
    from models.open_set import rotations
    from models.retraining import retrain
    from models.training import train_model

    if before:
        use_previous_thresholds()

    train = pd.read_csv(data / "train.csv")
    test = pd.read_csv(data / "test.csv")
    intents = sorted(train["category"].unique())
    held_out = set(rotations(intents, count=4, seed=seed)[rotation].held_out)
    known = [intent for intent in intents if intent not in held_out]
    texts = train["text"].astype(str).tolist()
    categories = train["category"].astype(str).tolist()
    truth = [OTHER if label in held_out else label for label in categories]
    schedule = day_schedule(categories, held_out, days=days + 1, per_day=per_day, seed=seed)
    eval_texts = test["text"].astype(str).tolist()
    eval_unknown = [label in held_out for label in test["category"]]
    eval_truth = [
        OTHER if flag else label for label, flag in zip(test["category"], eval_unknown, strict=True)
    ]
    n_jobs = jobs if jobs > 1 else None

    def fit(rows: Sequence[int]) -> Any:
        return train_model(
            feature_frame([texts[i] for i in rows]),
            [truth[i] for i in rows],
            target_precision=target_precision,
            oos_label=OTHER,
            seed=seed,
            n_jobs=n_jobs,
        )

    seed_frame = feature_frame([texts[i] for i in schedule.seed_rows]).assign(
        label=[truth[i] for i in schedule.seed_rows]
    )
    report_days: list[dict[str, Any]] = []
    started = time.perf_counter()
    console = Console(stderr=True)
    clock_day = [0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-learning-") as workspace,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
        ) as progress,
    ):
        task = progress.add_task("day 0: training on the labelled examples", total=4 * (days + 1))
        team = Team(Path(workspace), [*known, OTHER], clock_day=clock_day)
        first = fit(schedule.seed_rows)
        version = team.install(first, f"{len(schedule.seed_rows)} labelled examples, 10 per known intent")
        product_model = first.model
        oracle_model = first.model  # the same rows and trainer: the oracle's day 0 is the product's
        seen: list[int] = list(schedule.seed_rows)
        for day, rows in enumerate(schedule.days):
            clock_day[0] = day
            progress.update(task, description=f"day {day}: pipeline")
            enquiries = team.receive(day, [texts[i] for i in rows])
            keys = [f"form:d{day}-{number}" for number in range(len(rows))]
            missing = [key for key in keys if key not in enquiries]
            if missing:
                raise RuntimeError(f"{len(missing)} posts did not become enquiries, e.g. {missing[:3]}")
            enrichment = enquiries[keys[0]]["enrichment"] or {}
            if enrichment.get("segment", "unknown") != "unknown" or enrichment.get("free_mail"):
                raise RuntimeError(f"the bench's features assume no enrichment, got {enrichment}")
            day_truth = [truth[i] for i in rows]
            day_unknown = [categories[i] in held_out for i in rows]
            lanes = [enquiries[key]["lane"] == "automate" for key in keys]
            product = lane_figures(day_truth, [enquiries[key]["intent"] for key in keys], lanes, day_unknown)
            # The pipeline's lanes against the scorer's own abstention: they must agree (nothing else
            # in the policy sends these enquiries to people).
            _, scorer_lane = model_lane(product_model, [texts[i] for i in rows])
            disagree = int((np.asarray(lanes) != scorer_lane).sum())
            oracle_predicted, oracle_lane = model_lane(oracle_model, [texts[i] for i in rows])
            oracle = lane_figures(day_truth, oracle_predicted, oracle_lane, day_unknown)
            product_eval = lane_figures(eval_truth, *model_lane(product_model, eval_texts), eval_unknown)
            oracle_eval = lane_figures(eval_truth, *model_lane(oracle_model, eval_texts), eval_unknown)
            progress.advance(task)

            progress.update(task, description=f"day {day}: people review")
            reviewed = team.review(
                {enquiries[key]["id"]: truth[i] for key, i in zip(keys, rows, strict=True)}
            )
            progress.advance(task)
            entry: dict[str, Any] = {
                "day": day,
                "model": version,
                "product_training_rows": None,
                "oracle_training_rows": len(seen),
                "product": product.as_dict(),
                "oracle": oracle.as_dict(),
                "product_eval": product_eval.as_dict(),
                "oracle_eval": oracle_eval.as_dict(),
                "reviewed": reviewed,
                "pipeline_vs_scorer_disagreements": disagree,
            }
            report_days.append(entry)
            seen.extend(rows)
            if day == days:
                progress.advance(task, 2)
                break
            progress.update(task, description=f"day {day}: nightly retrain + promotion")
            retrained = retrain(
                team.runtime.factory,
                team.home,
                base_frame=seed_frame,
                target_precision=target_precision,
                oos_label=OTHER,
                seed=seed,
                n_jobs=n_jobs,
            )
            team.promote(retrained["candidate"])
            version = retrained["candidate"]
            from models import registry

            with team.runtime.factory() as session:
                product_model = registry.load_model(session, team.home, version)
            entry["next_model"] = {
                "version": version,
                "n_train": retrained["n_train"],
                "n_holdout": retrained["n_holdout"],
                "reviewed_labels": retrained["reviewed_labels"],
                "training_seconds": retrained["training_seconds"],
                "expected_precision": retrained["candidate_metrics"].get("automated_precision"),
            }
            progress.advance(task)
            progress.update(task, description=f"day {day}: oracle on {len(seen)} true labels")
            oracle_model = fit(seen).model
            progress.advance(task)
    for earlier, later in itertools.pairwise(report_days):
        later["product_training_rows"] = earlier["next_model"]["n_train"]
    report_days[0]["product_training_rows"] = len(schedule.seed_rows)
    product_days = [LaneFigures(**entry["product"]) for entry in report_days]
    oracle_days = [LaneFigures(**entry["oracle"]) for entry in report_days]
    product_eval_days = [LaneFigures(**entry["product_eval"]) for entry in report_days]
    oracle_eval_days = [LaneFigures(**entry["oracle_eval"]) for entry in report_days]
    return {
        "protocol": {
            "data": str(data),
            "rotation": rotation,
            "seed": seed,
            "known_intents": len(known),
            "unknown_intents": len(held_out),
            "seed_examples": len(schedule.seed_rows),
            "per_day": per_day,
            "unknown_per_day": round(per_day * 0.25),
            "target_precision": target_precision,
            "thresholds": "before (bonferroni, no refit)" if before else "the product's",
            "learn_then_test": training.LTT_PROCEDURE,
            "retrain_refits_on_all_rows": retraining.REFIT_DEFAULT,
            "eval_rows": len(eval_texts),
            "eval_unknowns": int(sum(eval_unknown)),
        },
        "days": report_days,
        "target": target_check(product_days, oracle_days),
        "target_on_eval_set": target_check(product_eval_days, oracle_eval_days),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.width < 130:  # a pipe or a narrow terminal: the tables would be cut to 80 columns
        console = Console(width=130)
    for key, title in (("", "that day's traffic"), ("_eval", "the fixed evaluation set (test split)")):
        table = Table(title=f"Learning curve on {title}")
        for column in (
            "day",
            "labels",
            "coverage",
            "precision",
            "unknowns auto",
            "oracle labels",
            "oracle cov.",
            "oracle prec.",
            "oracle unk. auto",
            "cov. vs oracle",
        ):
            table.add_column(column, justify="right")
        for entry in report["days"]:
            product, oracle = entry[f"product{key}"], entry[f"oracle{key}"]
            ratio = product["coverage"] / oracle["coverage"] if oracle["coverage"] else None
            table.add_row(
                str(entry["day"]),
                str(entry["product_training_rows"]),
                f"{product['coverage']:.1%}",
                _pct(product["precision"]),
                str(product["unknowns_automated"]),
                str(entry["oracle_training_rows"]),
                f"{oracle['coverage']:.1%}",
                _pct(oracle["precision"]),
                str(oracle["unknowns_automated"]),
                "—" if ratio is None else f"{ratio:.0%}",
            )
        console.print(table)
    console.print("target (that day's traffic):", report["target"])
    console.print("target (evaluation set):", report["target_on_eval_set"])
    disagreements = sum(entry["pipeline_vs_scorer_disagreements"] for entry in report["days"])
    console.print(f"pipeline lanes vs scorer abstention: {disagreements} disagreements")
    console.print(
        f"wall {report['wall_seconds']} s, peak RSS {report['peak_rss_mb']} MB, load {report['load_average']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--days", type=int, default=5, help="days after day 0 (day 0 … DAYS are simulated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rotation", type=int, default=0, choices=range(4), help="which quarter is unknown")
    parser.add_argument("--per-day", type=int, default=300)
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--before",
        action="store_true",
        help="the thresholds and retraining as they were before the learning-curve changes "
        "(Bonferroni over 294 pairs, no refit on all rows; use_previous_thresholds)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (args.data / "train.csv").exists():
        parser.error(f"{args.data} has no train.csv (BANKING77 lives in ../shared/data/banking77)")
    if args.days < 0:
        parser.error("--days must be 0 or more")
    import logging

    logging.basicConfig(level=logging.ERROR)
    report = simulate(
        args.data,
        days=args.days,
        seed=args.seed,
        rotation=args.rotation,
        per_day=args.per_day,
        target_precision=args.target_precision,
        jobs=args.jobs,
        show_progress=sys.stderr.isatty() or not args.json,
        before=args.before,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_report(report)


if __name__ == "__main__":
    main()
