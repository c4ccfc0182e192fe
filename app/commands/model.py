"""`triage model`: train, evaluate, list, show, shadow, promote, roll back and compare models.

Runs no flow, so it never imports Prefect. A model is only ever promoted with a person's name
(`--approved-by`); rollback returns to the previous active model in one command.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from models.errors import ConfigError, TriageError
from review.display import SafeTable, markup_safe

# Heavy (SQLAlchemy, scikit-learn, pandas): imported by the commands that need them.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from config.settings import Settings

model_app = typer.Typer(
    help=(
        "The intent model: train a candidate, evaluate it, shadow it beside the active model, promote it "
        "with a person's sign-off, roll back."
    ),
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]
DataOption = Annotated[
    Path, typer.Option("--data", help="CSV or JSONL file (.jsonl/.ndjson) with labelled rows.")
]
TextColOption = Annotated[str, typer.Option("--text-col", help="Column holding the enquiry text.")]
LabelColOption = Annotated[str, typer.Option("--label-col", help="Column holding the intent label.")]
OosOption = Annotated[
    str | None,
    typer.Option(
        "--oos-label", help="Label meaning 'not ours': such rows must go to people, never automated."
    ),
]


def _open() -> tuple[Settings, sessionmaker[Session]]:
    from config.settings import Settings
    from pipeline.runtime import Runtime

    settings = Settings()
    settings.ensure_home()
    runtime = Runtime(settings)  # the same composition as every command: home, engine, migrations
    return runtime.settings, runtime.factory


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _fail(error: TriageError) -> typer.Exit:
    errors.print(f"[red]error:[/red] {markup_safe(error)}", highlight=False)
    return typer.Exit(2 if isinstance(error, ConfigError) else 1)


def _metrics_table(title: str, metrics: dict[str, Any]) -> SafeTable:
    table = SafeTable(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if not isinstance(value, dict | list):
            table.add_row(key, "—" if value is None else str(value))
    return table


@model_app.command("train")
def train(
    data: DataOption,
    text_col: TextColOption = "text",
    label_col: LabelColOption = "label",
    oos_label: OosOption = None,
    target_precision: Annotated[
        float,
        typer.Option(
            "--target-precision", min=0.5, max=0.999, help="Precision the automated lane must reach."
        ),
    ] = 0.95,
    subject_col: Annotated[str | None, typer.Option("--subject-col", help="Optional subject column.")] = None,
    channel_col: Annotated[str | None, typer.Option("--channel-col", help="Optional channel column.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the cross-validation folds.")] = 0,
    trained_by: Annotated[str | None, typer.Option("--trained-by", help="Recorded in provenance.")] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, help="Processes fitting the cross-validation folds.")
    ] = 2,
    as_json: JsonOption = False,
) -> None:
    """Train on any labelled CSV/JSONL file and register the result as a *candidate* (never active).

    Thresholds are fitted so the automated lane reaches --target-precision on traffic that holds
    intents the model never saw: whole intents are held out in rotation while fitting, and a binomial
    upper bound (Learn-then-Test) is used instead of the point estimate. The report gives the precision
    it expects (expected_automated_precision) and the lower bound it holds with (with 12 intents or
    more). Promote the candidate with `triage model promote VERSION --approved-by NAME`.
    """
    from models import registry
    from models.datafiles import read_labelled_file
    from models.training import train_model

    try:
        frame, labels = read_labelled_file(
            data, text_col=text_col, label_col=label_col, subject_col=subject_col, channel_col=channel_col
        )
        if oos_label is not None and oos_label not in labels:
            raise ConfigError(f"--oos-label {oos_label!r} does not occur in column {label_col!r} of {data}")
        result = train_model(
            frame,
            labels,
            target_precision=target_precision,
            oos_label=oos_label,
            seed=seed,
            n_jobs=jobs if jobs > 1 else None,
        )
        settings, factory = _open()
        with factory() as session, session.begin():
            version = registry.register_candidate(
                session,
                settings.home,
                result,
                trained_by=trained_by or getpass.getuser(),
                data_description=(
                    f"{data.resolve()} (text={text_col}, label={label_col}, {result.n_rows} rows)"
                ),
            )
    except TriageError as error:
        raise _fail(error) from error
    report = {
        "version": version,
        "status": "candidate",
        "n_rows": result.n_rows,
        "labels": len(result.label_counts),
        "oos_label": oos_label,
        "target_precision": target_precision,
        "training_seconds": result.training_seconds,
        "data_hash": result.data_hash,
        "metrics": result.metrics,
        "expected_automated_precision": result.metrics.get("expected_automated_precision"),
        "automated_precision_lower_bound": result.metrics.get("automated_precision_lower_bound"),
        "bound_confidence": result.metrics.get("bound_confidence"),
    }
    if as_json:
        _print_json(report)
        return
    console.print(
        f"Registered candidate [bold]{version}[/bold] ({result.n_rows} rows, {result.training_seconds} s)."
    )
    console.print(
        _metrics_table(
            "training figures (the promise: expected_automated_precision and its lower bound)",
            result.metrics,
        )
    )
    console.print(
        f"Next: triage model evaluate --data TEST --version {version} --json | triage model shadow {version}"
    )


@model_app.command("evaluate")
def evaluate_command(
    data: DataOption,
    text_col: TextColOption = "text",
    label_col: LabelColOption = "label",
    oos_label: OosOption = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", help="Model to evaluate; default the newest candidate, else the active one."
        ),
    ] = None,
    subject_col: Annotated[str | None, typer.Option("--subject-col", help="Optional subject column.")] = None,
    channel_col: Annotated[str | None, typer.Option("--channel-col", help="Optional channel column.")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="Include per-intent figures.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Score a model on labelled data: accuracy, macro-F1, coverage, automated precision, OOS recall, ECE."""
    from models import registry
    from models.datafiles import read_labelled_file
    from models.evaluation import evaluate

    try:
        frame, labels = read_labelled_file(
            data, text_col=text_col, label_col=label_col, subject_col=subject_col, channel_col=channel_col
        )
        settings, factory = _open()
        with factory() as session:
            chosen = version or registry.newest_candidate(session) or registry.active_version(session)
            if chosen is None:
                raise ConfigError("no model registered yet: train one with `triage model train --data FILE`")
            model = registry.load_model(session, settings.home, chosen)
        metrics = evaluate(model, frame, labels, oos_label=oos_label)
    except TriageError as error:
        raise _fail(error) from error
    if not per_class:
        metrics.pop("per_class")
    if as_json:
        _print_json(metrics)
        return
    console.print(_metrics_table(f"model {chosen} on {data.name}", metrics))


@model_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every registered model, newest first, with its status and who approved it."""
    from models import registry

    _, factory = _open()
    with factory() as session:
        rows = registry.list_summaries(session)
    if as_json:
        _print_json({"versions": rows})
        return
    table = SafeTable(title="models")
    for column in (
        "version",
        "status",
        "created_at",
        "n_rows",
        "labels",
        "out-of-fold acc",
        "out-of-fold cov",
        "approved_by",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["version"],
            row["status"],
            row["created_at"][:19],
            str(row["n_rows"]),
            str(row["labels"]),
            str(row["out_of_fold_accuracy"]),
            str(row["out_of_fold_coverage"]),
            row["approved_by"] or "",
        )
    console.print(table)


@model_app.command("show")
def show(version: Annotated[str, typer.Argument(help="Model version.")], as_json: JsonOption = False) -> None:
    """Provenance of one model: data hash, libraries, labels, thresholds, metrics, approvals, events."""
    from models import registry

    _, factory = _open()
    try:
        with factory() as session:
            details = registry.describe(session, version)
    except TriageError as error:
        raise _fail(error) from error
    if as_json:
        _print_json(details)
        return
    provenance = details["provenance"]
    console.print(_metrics_table(f"model {version}", {k: v for k, v in details.items() if k != "provenance"}))
    console.print(f"data: {provenance.get('data_description')}  sha256 {provenance.get('data_hash')}")
    console.print(f"libraries: {provenance.get('libraries')}")
    console.print(_metrics_table("metrics", provenance.get("metrics", {})))
    for event in details["events"]:
        console.print(
            f"{event['at'][:19]}  {event['action']:<9} by {event['actor']}"
            f"  (previous active {event['previous_active']})"
        )


@model_app.command("shadow")
def shadow(
    version: Annotated[str | None, typer.Argument(help="Model to score beside the active one.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Stop shadow scoring.")] = False,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who asks for it (default: your login).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a model on every new enquiry beside the active one, without acting on it."""
    from models import registry

    if version is None and not clear:
        raise _fail(ConfigError("give a VERSION to shadow, or --clear"))
    settings, factory = _open()
    try:
        with factory() as session, session.begin():
            if clear:
                stopped = registry.clear_shadow(session, actor=actor or getpass.getuser())
                report: dict[str, Any] = {"shadow": None, "stopped": stopped}
            else:
                assert version is not None
                registry.set_shadow(session, version, actor=actor or getpass.getuser(), home=settings.home)
                report = {"shadow": version, "active": registry.active_version(session)}
    except TriageError as error:
        raise _fail(error) from error
    if as_json:
        _print_json(report)
    else:
        console.print(f"shadow model: {report['shadow'] or 'none'}")


@model_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Model to make active.")],
    approved_by: Annotated[
        str | None,
        typer.Option("--approved-by", help="Name of the person who signs the promotion off (required)."),
    ] = None,
    allow_unmapped: Annotated[
        bool,
        typer.Option(
            "--allow-unmapped",
            help="Promote even if some of the model's labels are not in the taxonomy (their enquiries "
            "then go to people only).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make a model active. Needs --approved-by NAME: a machine never promotes a model alone. A model
    whose labels are not all in the policy's taxonomy is refused unless --allow-unmapped."""
    from models import registry
    from review.choices import taxonomy_choices

    settings, factory = _open()
    try:
        taxonomy = taxonomy_choices(settings.policy_dir)
        with factory() as session, session.begin():
            previous = registry.active_version(session)
            unmapped = registry.promote(
                session,
                version,
                approved_by=approved_by or "",
                home=settings.home,
                taxonomy_intents=taxonomy.intents,
                allow_unmapped=allow_unmapped,
            )
    except TriageError as error:
        raise _fail(error) from error
    report = {
        "active": version,
        "previous_active": previous,
        "approved_by": (approved_by or "").strip(),
        "unmapped_labels": unmapped,
    }
    if as_json:
        _print_json(report)
    else:
        console.print(
            f"Model {version} is active (approved by {report['approved_by']}; previous: {previous})."
        )
        if unmapped:
            console.print(
                f"[yellow]warning:[/] {len(unmapped)} label(s) not in the taxonomy go to people only: "
                f"{markup_safe(', '.join(unmapped))}"
            )


@model_app.command("rollback")
def rollback(
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who rolls back (default: your login).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Return to the previously active model in one step; the current one is retired."""
    from models import registry

    _, factory = _open()
    try:
        with factory() as session, session.begin():
            retired = registry.active_version(session)
            restored = registry.rollback(session, actor=actor or getpass.getuser())
    except TriageError as error:
        raise _fail(error) from error
    report = {"active": restored, "retired": retired}
    if as_json:
        _print_json(report)
    else:
        console.print(f"Rolled back: {restored} is active again; {retired} is retired.")


@model_app.command("compare")
def compare_command(
    active: Annotated[str | None, typer.Option("--active", help="Default: the active model.")] = None,
    shadow_version: Annotated[
        str | None,
        typer.Option("--shadow", "--candidate", help="Default: the shadow model, else the newest candidate."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Candidate against active: both scored on the labels people gave since the active model was
    promoted (accuracy, automated precision), agreement and precision on corrected enquiries."""
    from models import live_precision, registry
    from models.comparison import compare, since_promotion

    settings, factory = _open()
    try:
        with factory() as session:
            active = active or registry.active_version(session)
            shadow_version = (
                shadow_version or registry.shadow_version(session) or registry.newest_candidate(session)
            )
            if active is None or shadow_version is None:
                raise ConfigError(
                    "compare needs an active model and a candidate "
                    "(train one, or `triage model shadow VERSION`)"
                )
            report = compare(session, active=active, shadow=shadow_version)
            report["since_promotion"] = since_promotion(
                session, settings.home, active=active, candidate=shadow_version
            )
            live = live_precision.shadow_precision(session)  # the shadow on reviewed spot checks
            report["shadow_live_precision"] = live if live and live["version"] == shadow_version else None
    except TriageError as error:
        raise _fail(error) from error
    if as_json:
        _print_json(report)
        return
    console.print(_metrics_table(f"shadow {shadow_version} vs active {active}", report))
    recent = report["since_promotion"]
    table = SafeTable(
        title=(
            f"on the {recent['n_labels']} labels since {recent['since'] or 'ever'} "
            f"({recent['confirmed']} confirmed, {recent['corrected']} corrected, "
            f"{recent['spot_checks']} spot checks)"
        )
    )
    for column in ("model", "version", "accuracy", "automated precision", "coverage"):
        table.add_column(column)
    for side in ("active", "candidate"):
        figures = recent[side] or {}
        table.add_row(
            side,
            figures.get("version") or "—",
            *(
                "—" if figures.get(key) is None else f"{figures[key]:.3f}"
                for key in ("accuracy", "automated_precision", "coverage")
            ),
        )
    console.print(table)
    live = report["shadow_live_precision"]
    if live is not None and live["precision"] is not None:
        console.print(
            f"shadow on live spot checks: automated precision {live['precision']:.3f} "
            f"(95% interval {live['low']:.3f}-{live['high']:.3f}) on {live['automated']} spot checks"
        )
