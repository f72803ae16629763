"""The Hugging Face Hub, for the one dataset that needs it (``wikitext``): fail at once when it is offline.

``datasets.load_dataset`` retries an unreachable Hub for minutes. :func:`load_hub_dataset` first checks
whether the Hub can be had (:func:`hub_offline`) and, if not, loads from the local cache only, so a dataset
that is not cached fails at once with :class:`~entspec.data.DatasetUnavailableError`.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any
from urllib.parse import urlparse

from .prompts import DatasetUnavailableError

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True when the environment asks for offline mode or the Hub's host cannot be reached in 3 s."""
    if any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    done, reachable = threading.Event(), []

    def probe() -> None:  # in a thread: name resolution itself has no timeout
        try:
            socket.create_connection((host, 443), timeout=3).close()
            reachable.append(True)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=probe, daemon=True).start()
    done.wait(timeout=3.5)
    return not reachable


def load_hub_dataset(path: str, config: str, split: str) -> Any:
    """``datasets.load_dataset(path, config, split=split)``, forced offline (cache only) when the Hub is
    unreachable, so it fails at once instead of retrying; failure -> :class:`DatasetUnavailableError`.

    Offline is forced by setting ``HF_HUB_OFFLINE`` in ``datasets.config`` and ``huggingface_hub.constants``
    (both read it at import, from the environment) for the call, and restoring both afterwards.
    """
    import datasets
    import huggingface_hub.constants

    offline = hub_offline()
    settings = (datasets.config, huggingface_hub.constants) if offline else ()
    saved = [module.HF_HUB_OFFLINE for module in settings]
    try:
        for module in settings:
            module.HF_HUB_OFFLINE = True
        return datasets.load_dataset(path, config, split=split)
    except Exception as err:  # noqa: BLE001 - any failure to fetch means the same thing to the caller
        why = "offline and not cached" if offline else f"{type(err).__name__}: {str(err).splitlines()[0]}"
        raise DatasetUnavailableError(
            f"{path}/{config} is unavailable ({why}); offline alternatives: 'bbc_news', 'wikipedia'"
        ) from None
    finally:
        for module, value in zip(settings, saved):
            module.HF_HUB_OFFLINE = value
