"""loopkeeper for Django: ``INSTALLED_APPS += ["loopkeeper.contrib.django"]``."""
