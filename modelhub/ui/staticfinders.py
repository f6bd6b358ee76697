"""Serve the installed plotly package's own `plotly.min.js` as `vendor/plotly.min.js`.

The UI works offline: the chart library comes from the pinned Python package, not
a CDN, and upgrading plotly in requirements.txt upgrades it. A finder (rather than
a STATICFILES_DIRS entry for plotly's package_data) exposes this one file only,
not the 10 MB of datasets beside it.
"""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
VENDOR_PATH = "vendor/plotly.min.js"


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        self.storage = FileSystemStorage(location=str(PLOTLY_JS.parent), base_url="")
        self.storage.prefix = "vendor"  # collectstatic copies it to <STATIC_ROOT>/vendor/

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != VENDOR_PATH:
            return [] if find_all else None
        return [str(PLOTLY_JS)] if find_all else str(PLOTLY_JS)

    def list(self, ignore_patterns):
        yield PLOTLY_JS.name, self.storage
