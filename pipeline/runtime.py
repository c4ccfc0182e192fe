"""The composition root: settings → database, policies, model, SLA and CRM, wired once per run.

The CLI, the web app and the Prefect flows all start here, so they see the same configuration.
Nothing in this module imports Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.policy import Policy, load_policy
from config.routing import load_routing
from config.settings import Settings
from connectors.base import Source
from connectors.crm.base import CrmBackend
from connectors.enrichment import bundled_firmographics
from connectors.files import FileSource
from models.artifact import artifact_with_status
from models.records import Channel
from pipeline.accounts import AccountMatcher
from pipeline.process import PipelineContext
from pipeline.replies import AutoReplier
from pipeline.routing import Router
from sla.policies import SlaPolicies, load_policies
from sla.service import resume, timer_starter
from store import sla_repo
from store.common import Clock, utcnow
from store.db import make_session_factory, migrated_engine

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a command or flow needs, built lazily from one Settings object."""

    settings: Settings = field(default_factory=Settings)
    # The one clock every decision of this run reads (arrivals, due times, retries, the demo's dates).
    clock: Clock = utcnow

    @cached_property
    def engine(self) -> Engine:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        return migrated_engine(self.settings.effective_database_url)

    @cached_property
    def factory(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.settings.policy_dir)

    @cached_property
    def sla_policies(self) -> SlaPolicies:
        sla = self.settings.sla
        return load_policies(sla.policy_file or self.settings.policy_dir / "sla.yaml", timezone=sla.timezone)

    def reply_hook(self) -> Callable[[Session, Sequence[tuple[str, datetime]]], None]:
        policies = self.sla_policies

        def customer_replied(session: Session, replies: Sequence[tuple[str, datetime]]) -> None:
            latest: dict[str, datetime] = {}
            for enquiry_id, at in replies:
                latest[enquiry_id] = max(at, latest.get(enquiry_id, at))
            paused = sla_repo.enquiries_with_paused_timers(session, list(latest))
            for enquiry_id in paused:
                at = latest[enquiry_id]
                resume(session, enquiry_id, by="customer reply", at=min(at, self.clock()), policies=policies)

        return customer_replied

    def team_touch_hook(self) -> Callable[[Session, Sequence[tuple[str, datetime, str]]], None]:
        """The team's own mail in a thread stops the first-response clock at its Date (source mailbox)."""
        from sla.touches import record_touch
        from store import review_repo

        def team_touched(session: Session, touches: Sequence[tuple[str, datetime, str]]) -> None:
            earliest: dict[str, tuple[datetime, str]] = {}
            for enquiry_id, at, address in touches:
                if enquiry_id not in earliest or at < earliest[enquiry_id][0]:
                    earliest[enquiry_id] = (at, address)
            names = review_repo.user_names_by_email(session, [address for _, address in earliest.values()])
            now = self.clock()
            for enquiry_id, (at, address) in sorted(earliest.items()):
                record_touch(
                    session,
                    enquiry_id,
                    by=names.get(address.lower(), address),
                    at=min(at, now),
                    source="mailbox",
                    now=now,
                    note=f"mail from {address}",
                )

        return team_touched

    def auto_replier(self) -> AutoReplier | None:
        """The automated lane's acknowledgements, when a task names a template and replies can be sent."""
        from review.reply_templates import load_templates, sla_promise
        from sla.policies import match_policy

        outbound = self.settings.outbound
        tasks: dict[str, str | None] = {
            name: task.auto_reply for name, task in self.policy.matrix.tasks.items() if task.auto_reply
        }
        if not tasks or not outbound.from_address:
            return None
        policies = self.sla_policies

        def promise(row: dict[str, Any], decision: Any) -> str:
            policy = match_policy(
                policies,
                priority=decision.priority,
                intent=decision.intent,
                channel=row["channel"],
                queue=decision.queue,
                segment=str((row.get("enrichment") or {}).get("segment") or "unknown"),
            )
            return sla_promise(policy.first_response_minutes)

        return AutoReplier(tasks, dict(load_templates(self.settings.policy_dir)), outbound, promise)

    @cached_property
    def account_matcher(self) -> AccountMatcher | None:
        """Account matching for this run's batches (its cache lives as long as the runtime)."""
        if not self.settings.crm.accounts.enabled:
            return None
        from connectors.crm.factory import make_account_directory

        firmographics = bundled_firmographics()
        directory = make_account_directory(
            self.settings, self.factory, firmographics.is_free_mail, clock=self.clock
        )
        return AccountMatcher(directory)

    @cached_property
    def router(self) -> Router:
        return Router(load_routing(self.settings.policy_dir))

    def pipeline_context(self) -> PipelineContext:
        """The policies and the active (and shadow) model for one run; models load where they classify."""
        with self.factory() as session:
            model = artifact_with_status(session, self.settings.home, "active")
            shadow = artifact_with_status(session, self.settings.home, "shadow")
        if model is None:
            log.warning("no active model: every enquiry goes to people (train one with `triage model train`)")
        return PipelineContext(
            policy=self.policy,
            firmographics=bundled_firmographics(),
            model=model,
            shadow=shadow,
            start_timers=timer_starter(self.sla_policies, clock=self.clock),
            max_body_chars=self.settings.max_body_chars,
            on_customer_replies=self.reply_hook(),
            team_domains=self.settings.outbound.domains,
            sent_sources=self.sent_sources,
            on_team_touches=self.team_touch_hook(),
            auto_replies=self.auto_replier(),
            parse_workers=self.settings.parse_workers,
            clock=self.clock,
            budget_seconds=self.settings.prepare_budget_seconds,
            max_record_attempts=self.settings.max_record_attempts,
            accounts=self.account_matcher,
            router=self.router,
        )

    def crm_backend(self) -> CrmBackend:
        from connectors.crm.factory import make_crm_backend

        return make_crm_backend(self.settings, self.factory, clock=self.clock)

    @property
    def sent_sources(self) -> frozenset[str]:
        """The sources that are Sent folders: what they hold is the team's outbound mail."""
        return frozenset(box.sent_source_name for box in self.settings.all_mailboxes if box.sent_folder)

    def configured_sources(self) -> list[Source]:
        """Every source `triage run` reads: the configured IMAP mailboxes and their Sent folders (web
        hooks store directly)."""
        from connectors.imap import ImapSource, SentFolderSource

        sources: list[Source] = []
        for mailbox in self.settings.all_mailboxes:
            sources.append(ImapSource(mailbox))
            if mailbox.sent_folder:
                sources.append(SentFolderSource(mailbox))
        return sources


def file_source(path: Path, channel: Channel) -> FileSource:
    return FileSource(path, channel)
