"""`audtrace daemon`: audtrace as a service (tracer/daemon/service.py)."""
