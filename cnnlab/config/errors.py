"""The config layer's errors. Every one is a ``ConfigError`` whose message is one line: the key,
the bad value and what is allowed. Entry points print it and exit 2; nothing is decoded or
compiled before these checks pass."""
from __future__ import annotations


class ConfigError(ValueError):
  """A bad config value; the message is one line."""


def fail(key: str, value, allowed: str):
  """Raises the one-line error for ``config.<key>=<value>``."""
  raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}")
