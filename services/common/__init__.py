"""What every service shares: settings, server bootstrap, metrics, graceful shutdown."""

from services.common.server import serve, start_server
from services.common.settings import ServiceSettings

__all__ = ["ServiceSettings", "serve", "start_server"]
