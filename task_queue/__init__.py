"""Task queue: Celery jobs you can submit, watch, retry, schedule and trust."""
