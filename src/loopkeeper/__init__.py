"""loopkeeper: a process-lifetime event loop for work that must outlive the request.

::

    import loopkeeper

    h = loopkeeper.submit(send_welcome_mail, user_id, name="welcome-mail", timeout=30)
    h.result(timeout=5)          # or: await h   (from any event loop)
    loopkeeper.cancel(h)         # same as h.cancel()
    report = loopkeeper.shutdown(timeout=10)   # normally done for you at exit
"""

from ._carry import carry as carry
from ._default import cancel as cancel
from ._default import configure as configure
from ._default import get_runner as get_runner
from ._default import shutdown as shutdown
from ._default import submit as submit
from ._errors import LoopkeeperError as LoopkeeperError
from ._errors import OverloadedError as OverloadedError
from ._errors import RunnerClosedError as RunnerClosedError
from ._errors import TaskAbandonedError as TaskAbandonedError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._handles import HandedOff as HandedOff
from ._handles import RunnerStats as RunnerStats
from ._handles import ShutdownReport as ShutdownReport
from ._handles import TaskHandle as TaskHandle
from ._handles import TaskInfo as TaskInfo
from ._handles import TaskState as TaskState
from ._handles import ThreadInfo as ThreadInfo
from ._hooks import Hooks as Hooks
from ._runner import Runner as Runner
from ._threads import TaskExecutor as TaskExecutor
from ._threads import check_cancelled as check_cancelled
from ._threads import run_in_thread as run_in_thread

__all__ = (
    "HandedOff",
    "Hooks",
    "LoopkeeperError",
    "OverloadedError",
    "Runner",
    "RunnerClosedError",
    "RunnerStats",
    "ShutdownReport",
    "TaskAbandonedError",
    "TaskExecutor",
    "TaskHandle",
    "TaskInfo",
    "TaskState",
    "TaskTimeoutError",
    "ThreadInfo",
    "cancel",
    "carry",
    "check_cancelled",
    "configure",
    "get_runner",
    "run_in_thread",
    "shutdown",
    "submit",
)

__version__ = "0.1.0.dev0"

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = "loopkeeper"
del _name, _obj
