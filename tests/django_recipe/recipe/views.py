"""A sync view that queues its background work with loopkeeper.submit()."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

import loopkeeper

from .models import Signup
from .tasks import send_receipt, send_welcome_mail


def signup(request: HttpRequest) -> HttpResponse:
    new = Signup.objects.create(email=request.POST["email"])
    loopkeeper.submit(send_welcome_mail, new.pk, name="welcome-mail")
    loopkeeper.submit(send_receipt, new.pk, name="receipt")
    return HttpResponse("welcome!")
