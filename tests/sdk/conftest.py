"""Fixtures of the OpenAI-SDK conformance suite: a gateway per module, a fresh account per test.

The module-scoped gateway is stopped with SIGTERM at the end of the module, and the teardown
asserts that it exits 0 within 10 s: graceful shutdown is part of the contract (SPEC §6).
"""

from __future__ import annotations

import dataclasses

import openai
import pytest

from gateway_harness import Gateway, STOP_TIMEOUT_S

# Every SDK call has a deadline, so a hung gateway fails a test instead of hanging the suite.
SDK_TIMEOUT_S = 15.0


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


@dataclasses.dataclass
class Tenant:
    """One fresh account with one live key, and an SDK client using it."""

    gateway: Gateway
    account_id: str
    key: str
    key_id: str

    def client(self, key: str | None = None, **options) -> openai.OpenAI:
        options.setdefault("timeout", SDK_TIMEOUT_S)
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=key or self.key, **options)

    def account(self) -> dict:
        return self.gateway.account(self.account_id)


def make_tenant(gateway: Gateway, signup_credit_usd: str | None = None, kind: str = "live") -> Tenant:
    account = gateway.create_account(signup_credit_usd=signup_credit_usd)
    key = gateway.create_key(account["id"], kind=kind)
    return Tenant(gateway=gateway, account_id=account["id"], key=key["key"], key_id=key["key_id"])


@pytest.fixture
def tenant(gateway) -> Tenant:
    """A fresh unverified account (signup credit 1 USD) and a live key, so limits never leak between tests."""
    return make_tenant(gateway)
