"""The HTTP API: read-only activity, statistics, search, executions, drift and changes, a live
activity feed over Server-Sent Events, and the page that shows it (``orchestration-pipeline serve``).

``app.py`` builds the app, ``routes.py`` and ``stream_route.py`` hold the routes, ``stream.py``
the hub that tails ``events`` for every stream, ``config.py`` the settings and the token rule,
``errors.py`` the JSON errors, and ``static/`` the page (plain HTML, CSS and JavaScript).
No Dagster here.
"""
