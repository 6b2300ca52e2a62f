"""The query side a user holds: :class:`Client` (in this process: models, store, queue) and :class:`RemoteClient`
(a running `imsim serve`, over HTTP), on the same typed vocabulary (:mod:`imsim.vocabulary`).

- :mod:`~imsim.client.local`: :class:`Client`: search (embed once per model → search each collection → fuse),
  compare, delete; it holds a :class:`~imsim.client.models.Models` part (which version each model's queries use, the
  model that embeds them) and a :class:`~imsim.client.jobs.Jobs` part (queue, follow, retry, cancel);
- :mod:`~imsim.client.queries`: query images (paths, bytes, PIL images) through the one embedding step;
- :mod:`~imsim.client.remote`: :class:`RemoteClient`, the same calls answered by `imsim serve`.
"""

from .local import Client
from .remote import RemoteClient

__all__ = ["Client", "RemoteClient"]
