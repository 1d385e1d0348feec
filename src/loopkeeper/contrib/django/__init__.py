"""Django integration: the app (settings, checks, status view) and a Tasks-framework backend.

::

    INSTALLED_APPS = [..., "loopkeeper.contrib.django"]
    LOOPKEEPER = {"SHUTDOWN_TIMEOUT": 25, "MAX_PENDING": 50_000}
    TASKS = {"default": {"BACKEND": "loopkeeper.contrib.django.backends.LoopkeeperBackend"}}

Importing this package imports nothing from Django: ``apps``, ``checks``, ``views``,
``backends`` and ``hygiene`` (the ``DjangoHooks`` the app gives the default runner) do.
"""
