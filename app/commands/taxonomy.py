"""`triage taxonomy init`: the team's own intents in one step (config/taxonomy_init.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from models.errors import ConfigError
from review.display import markup_safe

taxonomy_app = typer.Typer(help="The taxonomy: the intents enquiries are sorted into.", no_args_is_help=True)
console = Console()


@taxonomy_app.command("init")
def taxonomy_init(
    data: Annotated[
        Path, typer.Option("--data", help="CSV or JSONL file (.jsonl/.ndjson) with labelled rows.")
    ],
    text_col: Annotated[str, typer.Option("--text-col", help="Column holding the enquiry text.")],
    label_col: Annotated[str, typer.Option("--label-col", help="Column holding the intent label.")],
    oos_label: Annotated[
        str | None, typer.Option("--oos-label", help="Label meaning 'not ours': routed to people only.")
    ] = None,
    policy_dir: Annotated[
        Path | None, typer.Option("--policy-dir", help="Where to write (default: TRIAGE_POLICY_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing taxonomy.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")] = False,
) -> None:
    """Write a validated taxonomy and decision-matrix entries for the labels of a data file: each label
    an intent with its own queue, normal priority, and a task in the Hybrid lane until the ops lead
    raises it. Prints what it wrote and what to review; refuses to overwrite without --force."""
    from config import taxonomy_init
    from config.settings import Settings
    from models.datafiles import read_labelled_file

    configured = Settings().policy_dir
    target = policy_dir or configured
    try:
        _, labels = read_labelled_file(data, text_col=text_col, label_col=label_col)
        plan = taxonomy_init.plan(labels, oos_label=oos_label, source=data.name)
        written = taxonomy_init.write(plan, target, force=force, source=data.name)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {markup_safe(error)}", highlight=False)
        raise typer.Exit(2) from error
    review = list(plan.review)
    if Path(target).resolve() != Path(configured).resolve():
        review.insert(0, f"set TRIAGE_POLICY_DIR={target} so the pipeline and the review pages use it")
    report: dict[str, Any] = {
        "policy_dir": str(target),
        "written": [str(path) for path in written],
        "intents": list(plan.taxonomy["intents"]),
        "tasks": [name for name in plan.matrix["tasks"] if name.startswith(taxonomy_init.TEAM_TASK_PREFIX)],
        "label_counts": plan.label_counts,
        "oos_label": plan.oos_label,
        "review": review,
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(f"wrote {len(written)} file(s) in {markup_safe(target)}:")
    for path in written:
        console.print(f"  {markup_safe(path)}")
    console.print(f"{len(report['intents'])} intents, {len(report['tasks'])} team tasks (all Hybrid).")
    console.print("to review:")
    for line in review:
        console.print(f"  - {markup_safe(line)}")
