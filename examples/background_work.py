"""Work scheduled from plain threads finishes after the caller has moved on.

Three "request handler" threads each schedule an async job and a blocking job on
loopkeeper's process-wide loop, then return at once, the way a sync Django view returns
its response.  The jobs finish afterwards; at exit, loopkeeper drains what is left.

    ./scripts/example --script
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import loopkeeper

START = time.monotonic()


def say(text: str) -> None:
    print(f"{time.monotonic() - START:5.2f}s  [{threading.current_thread().name}] {text}")


async def send_welcome_mail(user_id: int) -> str:
    await asyncio.sleep(0.3)  # stands in for an HTTP call to a mail API
    say(f"mail sent to user {user_id}")
    return f"mail:{user_id}"


def resize_avatar(user_id: int) -> str:
    time.sleep(0.2)  # blocking work: runs in one of loopkeeper's worker threads
    say(f"avatar resized for user {user_id}")
    return f"avatar:{user_id}"


def handle_signup(user_id: int, handles: list[loopkeeper.TaskHandle[str]]) -> None:
    """A sync "view": schedules the work and returns without waiting for it."""
    handles.append(loopkeeper.submit(send_welcome_mail, user_id, name="welcome-mail"))
    handles.append(loopkeeper.submit(resize_avatar, user_id, name="resize-avatar", timeout=5))
    say(f"responded to signup of user {user_id}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    handles: list[loopkeeper.TaskHandle[str]] = []
    requests = [
        threading.Thread(target=handle_signup, args=(uid, handles), name=f"request-{uid}")
        for uid in (1, 2, 3)
    ]
    for thread in requests:
        thread.start()
    for thread in requests:
        thread.join()
    say("all requests answered; the work is still running:")
    say(f"  {loopkeeper.get_runner().stats()}")
    results = [handle.result(timeout=5) for handle in handles]
    say(f"results: {results}")
    say(f"  {loopkeeper.get_runner().stats()}")
    # One more job, left for the exit drain: loopkeeper waits for it before the process ends.
    loopkeeper.submit(send_welcome_mail, 4, name="late-mail")
    say("main() returns; the exit drain finishes the late mail")


if __name__ == "__main__":
    main()
