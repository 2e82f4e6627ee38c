"""Build components from configs."""
from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from dwiml.errors import DwimlError


def build(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, letting dwiml's own bad-input errors through unwrapped."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, DwimlError):
            raise e.__cause__ from None
        raise
