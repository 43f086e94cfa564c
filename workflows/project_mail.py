"""The texts a project sends: pure functions of its state, so replays produce the same keys."""

from __future__ import annotations

from datetime import datetime

from models.lifecycle import Application, ApplicationStatus, ApplicationType, ProjectState
from models.mail import MailMessage

_KIND = {
    ApplicationType.project: "project application",
    ApplicationType.extension: "extension application",
    ApplicationType.quota: "quota application",
}


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def decided(state: ProjectState, application: Application) -> MailMessage:
    verdict = "approved" if application.status == ApplicationStatus.approved else "rejected"
    lines = [
        f'Your {_KIND[application.type]} for project "{state.details.name}" ({state.id}) was {verdict}'
        f" by {application.decided_by}."
    ]
    if application.decision_reason:
        lines.append(f"Reason: {application.decision_reason}")
    if verdict == "approved" and application.type == ApplicationType.project:
        lines.append(
            f"The project runs from {_when(state.details.start_at)} to {_when(state.details.end_at)}."
        )
    if verdict == "approved" and application.type == ApplicationType.extension:
        lines.append(f"The project now ends {_when(state.details.end_at)}.")
    if verdict == "approved" and application.type == ApplicationType.quota:
        q = state.quota
        lines.append(
            f"The quota is now {q.gpu} GPU, {q.vcpu:g} vCPU, {q.ram_gb:g} GB RAM, "
            f"{q.storage_gb:g} GB storage."
        )
    return MailMessage(
        key=f"project-{state.id}/application-{application.id}/{verdict}",
        to_user_ids=[application.applicant_id],
        subject=f"[mlcp] {_KIND[application.type].capitalize()} {verdict}: {state.details.name}",
        body="\n\n".join(lines),
    )


def reminder(state: ProjectState, admin_ids: list[str]) -> MailMessage:
    end = state.details.end_at
    return MailMessage(
        key=f"project-{state.id}/reminder/{end:%Y%m%dT%H%M%S}",
        to_user_ids=admin_ids,
        subject=f'[mlcp] Project "{state.details.name}" ends {end:%Y-%m-%d}',
        body=f'Project "{state.details.name}" ({state.id}) ends {_when(end)}.\n\n'
        "To keep working, apply for an extension before then. After the end date the "
        "project enters its grace period: every container and job in it is deleted and "
        "nothing new can be created.",
    )


def expired(state: ProjectState, admin_ids: list[str], grace_ends: datetime) -> MailMessage:
    end = state.details.end_at
    return MailMessage(
        key=f"project-{state.id}/expired/{end:%Y%m%dT%H%M%S}",
        to_user_ids=admin_ids,
        subject=f'[mlcp] Project "{state.details.name}" has ended',
        body=f'Project "{state.details.name}" ({state.id}) ended {_when(end)} and is in its '
        f"grace period until {_when(grace_ends)}. Its workloads are being deleted and no new "
        "resource can be created. An approved extension returns it to active; otherwise the "
        "project and everything in it is deleted when the grace period ends.",
    )


def deleted(state: ProjectState, member_ids: list[str], reason: str) -> MailMessage:
    return MailMessage(
        key=f"project-{state.id}/deleted",
        to_user_ids=member_ids,
        subject=f'[mlcp] Project "{state.details.name}" was deleted',
        body=f'Project "{state.details.name}" ({state.id}) and everything in it was deleted ({reason}).',
    )
