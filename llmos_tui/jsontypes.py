"""The shape of plain data: what ``json.loads`` returns and ``json.dumps`` accepts.

Samples, engine stats, trace headers and the engine child's protocol messages are this shape,
so they are typed with it instead of ``Any``.
"""

from __future__ import annotations

from typing import Dict, List, Union

JsonScalar = Union[None, bool, int, float, str]
Json = Union[JsonScalar, List["Json"], Dict[str, "Json"]]
JsonDict = Dict[str, Json]

__all__ = ["Json", "JsonDict", "JsonScalar"]
