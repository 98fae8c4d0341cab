"""The unit tier's rules, enforced: tiny random models only, no servers, no child processes.

Each rule fails the offending test with the reason, so a test that needs the real packaged model,
a listening socket or a subprocess is moved to ``tests/integration`` rather than slowing this tier.
Database connections (SQLite files, the PostgreSQL server) are allowed: the store is tested on both.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from transformers import PreTrainedModel

from tests.factories import packaged_model_path


class TierViolation(AssertionError):
    pass


# Module scope: autouse fixtures run before the other fixtures of their scope, so the rules also
# cover module-scoped fixtures (a store or a Kecl built once per module).
@pytest.fixture(autouse=True, scope="module")
def unit_tier_rules() -> Iterator[None]:
    packaged = packaged_model_path()
    from_pretrained = PreTrainedModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def guarded_from_pretrained(cls: type, name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(name_or_path).startswith(packaged):
            raise TierViolation("unit tests use tiny random models: this test loads the packaged weights")
        return from_pretrained(cls, name_or_path, *args, **kwargs)

    def no_server(self: socket.socket, *args: Any) -> None:
        raise TierViolation("unit tests start no servers: this test binds a socket")

    popen_init = subprocess.Popen.__init__

    def guarded_popen(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        argv = [args] if isinstance(args, str | bytes) else list(args)
        if argv and (str(argv[0]) == sys.executable or str(argv[0]).endswith("kecl")):
            raise TierViolation("unit tests start no processes: this test runs Python or kecl in a child")
        popen_init(self, args, *rest, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PreTrainedModel, "from_pretrained", classmethod(guarded_from_pretrained))
        patch.setattr(socket.socket, "bind", no_server)
        patch.setattr(subprocess.Popen, "__init__", guarded_popen)
        yield
