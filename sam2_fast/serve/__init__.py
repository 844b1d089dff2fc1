"""``sam2-fast serve``: a click-to-segment web app for images and videos (FastAPI).

:func:`create_app` builds the app around an already built model; ``sam2-fast serve`` builds
the model and runs the app on uvicorn. Needs the ``serve`` extra (``pip install
'sam2-fast[serve]'``): importing this package imports FastAPI.
"""

from sam2_fast.serve.app import ServeLimits, create_app

__all__ = ["ServeLimits", "create_app"]
