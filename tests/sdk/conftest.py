"""Fixtures of the OpenAI-SDK conformance suite: a gateway per module, a fresh account per test.

The module-scoped gateway is stopped with SIGTERM at the end of the module, and the teardown
asserts that it exits 0 within 10 s: graceful shutdown is part of the contract (SPEC §6).
"""

from __future__ import annotations

import pytest

from gateway_harness import STOP_TIMEOUT_S, Gateway, Tenant, make_tenant


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A gateway with the reference registry and the sandbox at full speed (16-token answers)."""
    gw = Gateway(tmp_path_factory.mktemp("gateway"), name="gateway").start()
    try:
        yield gw
    finally:
        code = gw.stop()
        assert code == 0, (
            f"gateway did not exit 0 within {STOP_TIMEOUT_S}s of SIGTERM (exit code {code}):\n{gw.log_tail()}"
        )


@pytest.fixture
def tenant(gateway) -> Tenant:
    """A fresh unverified account (signup credit 1 USD) and a live key, so limits never leak between tests."""
    return make_tenant(gateway)
