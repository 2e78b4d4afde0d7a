"""The gateway's own reads when the document store goes away: 503 problem details, quickly."""

from __future__ import annotations

import subprocess
import time

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.mongo_server import install_jongodb, wait_for_uri


def test_reads_answer_503_within_two_seconds_when_mongodb_is_down(tmp_path):
    log = tmp_path / "jongodb.log"
    with log.open("w") as out:
        mongo = subprocess.Popen(
            [str(install_jongodb()), "--host=127.0.0.1", "--port=0"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        uri = wait_for_uri(log, mongo, time.time() + 30)
        settings = GatewaySettings(documents=f"{uri}/outage", static_dir=str(tmp_path / "none"))
        with TestClient(create_app(settings)) as client:
            assert client.get("/api/v1/saes").json() == []
            mongo.kill()
            mongo.wait()
            for path in ("/api/v1/saes", "/api/v1/saes/x/features", "/api/v1/jobs/x", "/api/v1/circuits"):
                started = time.monotonic()
                response = client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert "document store" in response.json()["detail"]
                assert time.monotonic() - started < 2.5, path  # pymongo's server selection: 1 s
    finally:
        if mongo.poll() is None:
            mongo.kill()
