"""meterd: usage metering for usage-based billing, compatible with OpenMeter's v1 API."""

__version__ = "0.1.0"
