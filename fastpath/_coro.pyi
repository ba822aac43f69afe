from collections.abc import Coroutine
from typing import Any

def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]: ...
