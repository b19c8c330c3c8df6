"""Pretrained timm weights without a network: find them in the local caches, or fail at once in one line.

``timm.create_model(name, pretrained=True)`` on a machine without internet retries for about a minute and ends in a
long hub traceback. Before it runs, ``offline_overlay`` looks for the weights in the Hugging Face cache (or, for
weights published as a URL, torch hub's checkpoint folder); when the hub is unreachable (``HF_HUB_OFFLINE`` set, or
its host not answering within ``PROBE_SECONDS``) it loads the cached file, or raises ``ConfigError`` naming the model,
the file it would fetch, ``model.pretrained_file`` and the cache folder to put the file in."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ConfigError

PROBE_SECONDS = 3.0  # how long the hub's host may take to accept a connection before the machine counts as offline
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm fetches from a hub repository, in its order
TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WeightsSource:
    """Where timm would fetch a model's pretrained weights: a hub repository (``repo``, its ``files`` in order) on
    ``host``, or a ``url``."""

    backbone: str
    repo: str
    url: str

    @property
    def address(self) -> str:
        """The URL the weights come from: the hub's endpoint (``HF_ENDPOINT``) or the weights' own URL."""
        if self.repo:
            from huggingface_hub import constants

            return constants.ENDPOINT
        return self.url

    @property
    def host(self) -> str:
        return urlparse(self.address).hostname or ""

    @property
    def what(self) -> str:
        """The file, in words: ``model.safetensors of timm/resnet50.a1_in1k on huggingface.co``."""
        return f"{HF_FILES[0]} of {self.repo} on {self.host}" if self.repo else self.url

    def cached(self) -> Path | None:
        """The weights' file in the local cache, or None."""
        if self.repo:
            from huggingface_hub import constants, try_to_load_from_cache

            for name in HF_FILES:
                path = try_to_load_from_cache(self.repo, name, cache_dir=constants.HF_HUB_CACHE)
                if isinstance(path, str):
                    return Path(path)
            return None
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.url).path).name
        return path if path.is_file() else None

    def cache_folder(self) -> str:
        if self.repo:
            from huggingface_hub import constants

            return (
                f"{constants.HF_HUB_CACHE} (its own layout: fill it with `hf download {self.repo} {HF_FILES[0]}`, "
                "or copy a whole cache folder from a machine that has the weights)"
            )
        import torch.hub

        return str(Path(torch.hub.get_dir()) / "checkpoints")


def weights_source(backbone: str) -> WeightsSource | None:
    """Where timm fetches ``backbone``'s default pretrained weights; None when it has no downloadable default."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    if cfg is None or cfg.file or cfg.state_dict:
        return None
    repo, url = cfg.hf_hub_id or "", cfg.url or ""
    return WeightsSource(backbone, repo, url) if repo or url else None


def offline_reason(address: str, timeout: float | None = None) -> str | None:
    """Why the weights' server at ``address`` (a URL) cannot be reached ("HF_HUB_OFFLINE is set", "huggingface.co
    did not answer in 3 s"), or None when it accepts a TCP connection on its port within ``timeout`` seconds
    (``PROBE_SECONDS``; name lookup included). None without probing when a proxy serves the address (the download
    then goes through it, which a direct probe cannot tell)."""
    from urllib.request import getproxies, proxy_bypass

    timeout = PROBE_SECONDS if timeout is None else timeout
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in TRUE:
            return f"{var} is set"
    url = urlparse(address if "//" in address else f"https://{address}")
    host = url.hostname or ""
    if url.scheme in getproxies() and not proxy_bypass(host):
        return None
    port = url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{host} cannot be reached ({e.strerror or type(e).__name__})")

    thread = threading.Thread(target=probe, daemon=True)  # name lookup has no timeout of its own
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"{host} did not answer in {timeout:g} s"


def offline_overlay(backbone: str) -> dict[str, Any]:
    """What to add to ``timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay=...)``: ``{}`` when the
    weights can be fetched (or timm has no source to fetch), ``{"file": path}`` to load them from the local cache
    when their host is unreachable. Raises ``ConfigError`` (one line) when it is unreachable and nothing is cached."""
    source = weights_source(backbone)
    if source is None:
        return {}
    reason = offline_reason(source.address)
    if reason is None:
        return {}
    cached = source.cached()
    if cached is not None:
        return {"file": str(cached)}
    raise ConfigError(fetch_failed(source, f"no network: {reason}"))


def fetch_failed(source: WeightsSource, why: str) -> str:
    """The one-line message for pretrained weights that could not be fetched."""
    return (
        f"model.pretrained=true: the weights of {source.backbone} ({source.what}) cannot be fetched, {why}; "
        f"download that file where there is a network and pass model.pretrained_file=PATH, "
        f"or put it in the cache folder {source.cache_folder()}"
    )
