"""Logging setup: human-readable lines by default, one JSON object per line on request.

JSON lines carry the post's namespace, name, uid and attempt when a log call passes them
as `extra={"post": {...}}` (see `herald.writer.post_context`); kopf's own records about an
object carry its reference, which is mapped to the same fields.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

POST_FIELDS = ("namespace", "name", "uid", "attempt")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        post = getattr(record, "post", None)
        if isinstance(post, dict):
            data.update({k: post[k] for k in POST_FIELDS if k in post})
        k8s = getattr(record, "k8s_ref", None)
        if isinstance(k8s, dict):
            data.setdefault("namespace", k8s.get("namespace"))
            data.setdefault("name", k8s.get("name"))
            data.setdefault("uid", k8s.get("uid"))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf's per-object loggers would otherwise also post every line as an Event.
    logging.getLogger("kopf").setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if level != "DEBUG":
        # kopf logs every handler run at INFO; Herald's own lines say what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
