"""A small Django project for ``tests/django_engines``: one app, two ``@task`` functions.

``LK_ENGINE`` picks the Tasks backend in ``settings.TASKS`` and nothing else; the task code
(``tasks.py``) and the code that enqueues it (``management/commands/engine_demo.py``) are the
same for every engine.
"""
