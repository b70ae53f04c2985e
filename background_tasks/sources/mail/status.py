"""Per mail account: last fetch, last successful fetch, mails seen, documents submitted, the last error
(``sources status``)."""

from __future__ import annotations

from background_tasks.settings import Settings
from background_tasks.sources.mail.config import load_accounts
from background_tasks.sources.status import SourceStatus
from background_tasks.storage.mail_messages import account_runs


def statuses(settings: Settings) -> list[SourceStatus]:
    """One row per configured account (an account never fetched yet shows ``never``)."""
    if settings.mail_config is None:
        return []
    accounts = load_accounts(settings.mail_config)
    runs = account_runs(settings.database_url_resolved, [a.name for a in accounts])
    rows = []
    for account in accounts:
        run = runs.get(account.name)
        name = f"{account.name} ({account.user}@{account.host}:{account.port})"
        if run is None:
            rows.append(SourceStatus("mail", name))
            continue
        rows.append(
            SourceStatus(
                kind="mail",
                name=name,
                last_run_at=run.last_run_at,
                last_run_s=run.last_run_s,
                seen=run.seen,
                submitted=run.submitted,
                failed=run.failed,
                error=f"{run.error} (since {run.error_since:%Y-%m-%d %H:%M} UTC)" if run.error else None,
                last_success_at=run.last_success_at,
            )
        )
    return rows
