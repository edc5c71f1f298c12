"""HEROES widgets (ipywidgets 8, plus one small anywidget for chunked uploads: JupyterLab, Notebook
and Voila, no front-end build).

- :class:`SubmissionWidget`: pick a template, fill its generated form, choose a cluster, submit, watch;
- :class:`JobMonitor`: one workflow, live from the service's event stream;
- :class:`ParameterForm`: the form of one template, validated as you type;
- :class:`InstanceHandle`: what ``%heroes submit`` returns; shows itself as a ``JobMonitor``;
- :class:`DataBrowser`: your and your projects' buckets: folders, upload with progress, download, delete.

The decision chart under the submission widget's table is :func:`.chart.decision_figure` (plotly).
"""

from .data import DataBrowser
from .form import ParameterForm, check_value
from .handle import InstanceHandle
from .monitor import JobMonitor
from .submission import SubmissionWidget

__all__ = ["DataBrowser", "InstanceHandle", "JobMonitor", "ParameterForm", "SubmissionWidget", "check_value"]
