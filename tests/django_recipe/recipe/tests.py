"""The project's own tests: docs/testing.md's Django recipe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from django.test import TestCase, TransactionTestCase

import loopkeeper
from loopkeeper.testing import drain

from .models import Mail, Signup
from .tasks import signup_exists


def _kinds() -> list[str]:
    return sorted(Mail.objects.values_list("kind", flat=True))


@pytest.mark.usefixtures("loopkeeper_runner")
@pytest.mark.loopkeeper(eager=True)
class EagerInTestCase(TestCase):
    """TestCase with eager mode: the tasks run in the test's thread, in its transaction."""

    def test_tasks_see_and_write_the_test_transaction(self) -> None:
        response = self.client.post("/signup", {"email": "ada@example.org"})
        assert response.status_code == 200
        assert _kinds() == ["receipt", "welcome"]
        assert Mail.objects.filter(to="ada@example.org").count() == 2

    def test_the_runner_has_the_project_settings(self) -> None:
        runner = loopkeeper.get_runner()
        assert runner.shutdown_timeout == 5  # LOOPKEEPER, applied by the app
        assert type(runner.hooks).__name__ == "DjangoHooks"  # installed by the app

    def test_what_the_tasks_wrote_was_rolled_back(self) -> None:
        assert Mail.objects.count() == 0
        assert Signup.objects.count() == 0


@pytest.mark.usefixtures("loopkeeper_runner")
class BackgroundInTestCase(TestCase):
    """TestCase without eager mode: why the recipe says eager (docs/testing.md)."""

    def test_a_worker_thread_cannot_see_the_test_transaction(self) -> None:
        signup = Signup.objects.create(email="grace@example.org")
        handle = loopkeeper.submit(signup_exists, signup.pk)
        drain()
        assert handle.result(0) is False  # its own connection sees none of the test's rows


@pytest.mark.usefixtures("loopkeeper_runner")
class BackgroundInTransactionTestCase(TransactionTestCase):
    """TransactionTestCase: the tasks run in the background and commit; drain() waits."""

    def test_tasks_commit_and_drain_waits_for_them(self) -> None:
        response = self.client.post("/signup", {"email": "alan@example.org"})
        assert response.status_code == 200
        drain()
        assert _kinds() == ["receipt", "welcome"]

    def test_each_test_starts_from_empty_tables(self) -> None:
        assert Mail.objects.count() == 0
