"""`fineinstructions report`: one self-contained HTML page about a run directory (figures + sample browser).

    data.py           the run directory read as rows and dicts
    metrics.py        the numbers behind each figure
    excerpt_spans.py  where each excerpt of an answer sits in its document (recomputed, not stored)
    samples.py        the sample browser's rows
    plots.py          matplotlib figures as embedded PNG data URIs
    page.py           the sections and the page (template.html holds the CSS and the browser's JavaScript)
"""

from fineinstructions.report.page import report

__all__ = ["report"]
