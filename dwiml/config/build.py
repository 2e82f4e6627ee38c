"""Build components from configs."""
from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from dwiml.errors import DwimlError


def build(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, letting dwiml's own bad-input errors through unwrapped; a target
    called with arguments it does not take (a ``model=custom`` key) is bad input too."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, DwimlError):
            raise e.__cause__ from None
        if isinstance(e.__cause__, TypeError) and e.__cause__.__traceback__.tb_next is None:
            raise DwimlError(f"{config.get('_target_')}: {e.__cause__}") from None  # the call itself failed
        raise
