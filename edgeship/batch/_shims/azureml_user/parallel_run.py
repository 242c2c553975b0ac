"""``azureml_user.parallel_run.EntryScript``: the helper ParallelRunStep scripts use for logging and paths.

Only in a batch worker's ``sys.path`` (appended, so a real package wins). The
logger writes to the worker's log file; ``output_dir`` is the run's output folder,
where a ``--summary-only`` script writes its own results.
"""

from __future__ import annotations

import logging
import os

__all__ = ["EntryScript"]


class EntryScript:
    """The attributes scripts read: ``logger``, ``output_dir``, ``working_dir``, ``log_dir``."""

    @property
    def logger(self) -> logging.Logger:
        logger = logging.getLogger("azureml_user.parallel_run")
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        return logger

    @property
    def output_dir(self) -> str:
        return os.environ.get("EDGESHIP_BATCH_OUTPUT_DIR", os.getcwd())

    @property
    def working_dir(self) -> str:
        return os.getcwd()

    @property
    def log_dir(self) -> str:
        return os.environ.get("EDGESHIP_BATCH_LOG_DIR", os.getcwd())
