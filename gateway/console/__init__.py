"""The web console at ``/console``: server-rendered pages, a little hand-written JS, live updates over SSE.

``routes.add_console(app)`` is the one entry point the app calls. Every page reads the same services
the Management API uses (``Objects``, ``Tokens``, the pacer's ``describe``), so the console shows
nothing the API would not, and the API stays the one source of truth.
"""
