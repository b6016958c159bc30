"""What every command shares: the stderr console, ``--param key=value`` parsing, and a client
for the server named by ``--url`` or the settings."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from infaas.client import Client
from infaas.settings import load_settings

err = Console(stderr=True)


def parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param needs key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def client_for(args) -> Client:
    settings = load_settings()
    url = args.url or settings.url
    if url.startswith("grpc://"):
        raise ValueError(
            f"'infaas {args.command}' uses the REST management API: give an http:// URL (grpc:// serves infer)"
        )
    return Client(url, api_key=getattr(args, "api_key", None) or settings.api_key)
