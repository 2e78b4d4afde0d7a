"""`python -m gateway`: serve the API with uvicorn on LM_SAES_GATEWAY_HOST:LM_SAES_GATEWAY_PORT."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from lm_saes.settings import load_settings


def main() -> None:
    settings = load_settings(GatewaySettings)
    if not settings.service_token:
        raise SystemExit(
            "invalid settings: LM_SAES_SERVICE_TOKEN: the gateway's token for the services is not set "
            "(services refuse unauthenticated calls)"
        )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # access_log off: request lines would be harmless, but keep the log free of query strings.
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
