"""skns: one supervised process family doing five jobs."""

__version__ = "0.1.0"
