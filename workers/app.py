"""The Celery application, configured from imsim's settings (broker and state in Redis, JSON only)."""

from imsim.queue import make_celery
from imsim.settings import get_settings

app = make_celery(get_settings(), main="workers")
app.conf.include = ["workers.tasks"]
