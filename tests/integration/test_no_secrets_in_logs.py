"""Secrets never reach the server's log, even at debug level: API keys (used, wrong, revoked), webhook
signing secrets, and the custom headers a channel sends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, event, wait_for
from tests.integration.webhook_receiver import receiving

pytestmark = pytest.mark.slow
SIGNING = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
HEADER = "Bearer header-secret-9f8e7d6c5b4a"


def test_keys_and_webhook_secrets_stay_out_of_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = subprocess.run(
        [sys.executable, "-m", "meterd.cli.main", "keys", "create", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = created.stdout.strip()
    server = Server(data, env={"METERD_LOG_LEVEL": "debug"}).start()
    try:
        with (
            receiving() as receiver,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api,
        ):
            assert (
                httpx.get(f"{server.url}/api/v1/meters", headers={"Authorization": "Bearer mtd_wrong"}).status_code
                == 401
            )
            assert api.post("/api/v1/meters", json={"slug": "c", "eventType": "c", "aggregation": "COUNT"}).is_success
            assert api.post("/api/v1/events", json=[event(type_="c")]).status_code == 204
            channel = {
                "type": "WEBHOOK",
                "name": "h",
                "url": receiver.url("/h"),
                "signingSecret": SIGNING,
                "customHeaders": {"Authorization": HEADER},
            }
            made = api.post("/api/v1/notification/channels", json=channel)
            assert made.status_code == 201, made.text
            rule = {
                "type": "entitlements.balance.threshold",
                "name": "r",
                "channels": [made.json()["id"]],
                "thresholds": [{"type": "usage_value", "value": 1}],
            }
            rule_id = api.post("/api/v1/notification/rules", json=rule).json()["id"]
            assert api.post(f"/api/v1/notification/rules/{rule_id}/test").status_code == 201
            got = wait_for(lambda: receiver.at("/h"), timeout=15)
            assert got[0].headers.get("Authorization") == HEADER  # it was sent...
    finally:
        server.stop()
    log = server.log_path.read_text() if server.log_path else ""
    assert " DEBUG " in log and "HTTP Request: POST" in log, "a debug log, with the webhook delivery"
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]  # and a clean shutdown
    for secret in (key, "mtd_wrong", SIGNING, SIGNING.removeprefix("whsec_"), HEADER):
        assert secret not in log, f"{secret[:12]}... appears in the server log"  # ...but never logged
