"""Weights a model downloads while it loads or exports: when the download fails, say which URL and
what in the recipe avoids it, instead of a bare "Name or service not known" from deep in urllib."""

from __future__ import annotations

import socket
import traceback
import urllib.request
from contextlib import contextmanager
from urllib.error import URLError

from trtbuild.errors import StepError, first_line

# Connection errors of HTTP clients other than urllib (requests, httpx), known by name: importing
# those libraries here just to name their exceptions would slow down every export.
_CLIENT_ERRORS = ("ConnectionError", "ConnectError", "ConnectTimeout")


@contextmanager
def downloads_explained(where: str, subject: str):
    """Record the URLs urllib opens inside the block; a network failure there becomes a StepError
    (user_error) at `where` ("file:line") that names `subject` (the recipe key that loads the model)."""
    tried: list[str] = []
    original = urllib.request.OpenerDirector.open

    # OpenerDirector.open is what every urlopen calls, however it was imported (torch.hub binds its own).
    def recording_open(self, fullurl, *args, **kwargs):
        tried.append(getattr(fullurl, "full_url", fullurl))
        return original(self, fullurl, *args, **kwargs)

    urllib.request.OpenerDirector.open = recording_open
    try:
        yield
    except Exception as exc:
        cause = _network_failure(exc)
        if cause is None:
            raise
        traceback.print_exc()
        url = tried[-1] if tried else _client_url(cause)
        attempt = f"tried to download {url}" if url else "tried a network connection"
        raise StepError(
            f"{where}: {subject} {attempt}, which failed ({type(cause).__name__}: {first_line(cause)}): "
            "turn its pretrained weights off (torchvision: kwargs: {weights: null, weights_backbone: null}; timm: "
            "kwargs: {pretrained: false}; Hugging Face: build the model from its config) or give checkpoint: a "
            "state_dict file", user_error=True) from None
    finally:
        urllib.request.OpenerDirector.open = original


def _network_failure(exc: BaseException) -> BaseException | None:
    """The connection error behind `exc` (libraries wrap them in their own errors), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (URLError, socket.gaierror, ConnectionError, TimeoutError)):
            return exc
        if type(exc).__name__ in _CLIENT_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _client_url(exc: BaseException) -> str | None:
    """The URL a requests / httpx error was about (httpx raises RuntimeError when it has none)."""
    try:
        return str(exc.request.url)
    except (AttributeError, RuntimeError):
        return None
