"""`imsim serve`: an HTTP API and web pages for search and duplicate review, with models kept warm.

:mod:`~imsim.api.service` is what stays loaded between requests (the models, micro-batching, thumbnails, duplicate
groups, metrics), independent of HTTP; :mod:`~imsim.api.app` the FastAPI routes and the safety rules around them;
``static/`` the two pages (no build step). :mod:`~imsim.client.remote` lets the CLI ask a running service instead of
loading models itself (``IMSIM_API_URL``).
"""
