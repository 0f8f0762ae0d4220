"""Benchmark tasks: dataset + model + optimizer recipe + evaluation schedule + target.

``get_task(name)`` returns a :class:`Task`; ``tasks()`` lists them. Registered here:
``digits`` (embedded, no files), ``fm16``, ``fm32`` (FashionMNIST), ``shakespeare-3-24``,
``shakespeare-2-32`` (Tiny Shakespeare characters) and ``wikitext2-3-64`` (WikiText-2 words).
Data is read offline (see :mod:`nowcast.tasks.data` for where it is looked up).
"""

from . import text as _text  # noqa: F401  (registers the language tasks)
from . import vision as _vision  # noqa: F401  (registers the image tasks)
from .classification import ClassificationData
from .data import DataNotFoundError, data_search_path, find_dataset
from .language import CharVocab, TokenData, WordVocab
from .registry import get_task, register_task, tasks
from .task import Batch, Task, TaskData

__all__ = [
    "Batch",
    "CharVocab",
    "ClassificationData",
    "DataNotFoundError",
    "Task",
    "TaskData",
    "TokenData",
    "WordVocab",
    "data_search_path",
    "find_dataset",
    "get_task",
    "register_task",
    "tasks",
]
