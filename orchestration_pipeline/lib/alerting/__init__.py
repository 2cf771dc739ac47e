"""Alerting: failed asset checks, stale assets and failed runs, told once per failure streak.

Open-source Dagster has no alert policies, and a failed non-blocking check does not fail its run,
so a run-failure sensor alone never sees it. The sensors in ``defs/alerting`` read Dagster's event
log and hand plain :class:`~orchestration_pipeline.lib.alerting.model.Observation` records to this
package, which has no Dagster imports:

* :mod:`.model` — severities, the minimum-severity threshold, observations and Dagster UI paths;
* :mod:`.sources` — observations built from a check evaluation, a freshness state, a run;
* :mod:`.streaks` — one streak per source: one alert when it starts failing, one notice when it
  escalates, one "resolved" notice when it passes again (the ``alerts`` table is the first sink);
* :mod:`.delivery` — the other sinks: a Slack-compatible webhook with bounded retries and backoff,
  every attempt recorded, and stderr;
* :mod:`.store` — listing alerts and acknowledging one (audited).
"""
