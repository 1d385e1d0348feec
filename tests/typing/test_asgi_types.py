"""``LifespanMiddleware`` fits every way ASGI apps and servers are typed.

``mypy --strict`` is the check: the middleware wraps apps typed with Starlette's mappings
or asgiref's TypedDicts (django-stubs types Django's handler so), is accepted by
Starlette's ``add_middleware`` and ``Middleware``, and by servers typed with asgiref-style
TypedDicts (hypercorn's ``serve``, here asgiref's ``ASGI3Application``).  pytest builds the
same objects, so the lines are live code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from typing_extensions import assert_type

from loopkeeper.contrib.asgi import LifespanMiddleware

if TYPE_CHECKING:
    from asgiref.typing import ASGI3Application

    import loopkeeper


def asgiref_typed(app: ASGI3Application) -> LifespanMiddleware:
    """An app typed with asgiref's TypedDicts can be wrapped."""
    return LifespanMiddleware(app)


def serve(app: ASGI3Application) -> None:
    """Stands for a server typed with asgiref's TypedDicts."""


def test_middleware_fits_starlette_and_asgiref_typing(runner: loopkeeper.Runner) -> None:
    """Wrapping, ``add_middleware``, ``Middleware(...)`` and handing the result to an
    asgiref-typed server all type-check; the options keep their types."""
    app = Starlette()
    wrapped = LifespanMiddleware(app, runner=runner, shutdown_timeout=3)
    assert_type(wrapped, LifespanMiddleware)
    assert_type(wrapped.shutdown_timeout, float | None)
    serve(wrapped)
    app.add_middleware(LifespanMiddleware, runner=runner)
    Starlette(middleware=[Middleware(LifespanMiddleware, shutdown_timeout=2.0)])
    assert wrapped.app is app
    assert wrapped.runner is runner
    assert wrapped.shutdown_timeout == 3.0
    with pytest.raises(TypeError, match="shutdown_timeout"):
        LifespanMiddleware(app, shutdown_timeout="3")  # type: ignore[arg-type]
