"""python -m rate_limiter: serve on RATE_LIMITER_PORT (8004), as every service is served
(`common.server`)."""

from __future__ import annotations

import sys

from common.redis_server import ensure_shared_redis
from common.server import serve
from rate_limiter.app import create_app
from rate_limiter.errors import RulesError
from rate_limiter.rules_files import load_rules
from rate_limiter.settings import RateLimiterSettings


def main() -> None:
    settings = RateLimiterSettings()
    try:
        load_rules(
            settings.rules, merge_domains=settings.merge_domain_config
        )  # refuse bad rules with their line, before any traceback
    except RulesError as exc:
        print(f"rate_limiter: invalid rules: {exc.detail}", file=sys.stderr)
        sys.exit(2)
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
