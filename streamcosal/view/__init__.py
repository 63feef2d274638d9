"""The results viewer (``streamcosal view OUT``): a local web page of a results folder's sources, their
timelines, events, frames with their masks and their groups' consensus, updated while a run writes.

``data`` reads the folder into JSON-ready records, ``frames`` draws a row's mask over its frame,
``app`` is the web application and ``server`` serves it; ``page.html`` is the page. Needs the ``view``
extra (Starlette and uvicorn)."""
