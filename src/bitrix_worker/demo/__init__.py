"""``bitrix-worker demo``: the whole system on one machine with nothing but this package (``run``), what it
runs on (``backends``) and its closing report (``report``)."""

from .run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
