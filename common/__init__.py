"""Shared foundation of the suite: settings, app wiring, observability, connections, errors.

Small and boring on purpose; nothing in here knows about any service.
"""
