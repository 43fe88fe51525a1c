"""Runs one fikra-gateway process for the SDK conformance tests and talks to its admin API.

The gateway is started as `fikra-gateway serve --config FILE` with the admin token in
FIKRA_ADMIN_TOKEN, on two free localhost ports, and stopped with SIGTERM (a clean exit 0 is
part of the contract, so `stop()` reports the exit code instead of killing quietly).

Raw HTTP goes through `httpx2`, the HTTP client the `openai` package itself depends on, so the
suite needs nothing beyond tests/sdk/requirements.txt.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import dataclasses

import httpx2
import openai

# Every SDK call has a deadline, so a hung gateway fails a test instead of hanging the suite.
SDK_TIMEOUT_S = 15.0
DEFAULT_BINARY = "/work/main/target/debug/fikra-gateway"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
NANOS_PER_USD = 1_000_000_000
# How often `wait_until` polls its condition.
POLL_INTERVAL_S = 0.02

# The metric the suite uses to count what the server actually received.
_REQUESTS_TOTAL = re.compile(r'^fikra_requests_total\{route="([^"]*)",status="([^"]*)"\} (\d+)$')


def wait_until(timeout: float, condition) -> bool:
    """Polls `condition` until it holds or `timeout` seconds have passed; whether it held. The
    condition is always tried once more after the deadline. The one way this suite waits for real
    state of the gateway process (readiness, a settled ledger, a revocation): a bounded poll,
    never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        if condition():
            return True
        if last_try:
            return False
        time.sleep(POLL_INTERVAL_S)


def gateway_binary() -> str:
    return os.environ.get("FIKRA_GATEWAY_BIN", DEFAULT_BINARY)


def free_port() -> int:
    """A port the kernel just handed out for 127.0.0.1 (closed again, so the gateway can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def usd_to_nanos(text: str) -> int:
    """Exact integer nano-USD of a decimal USD string such as "1.000000000" (no floats)."""
    value = Decimal(text) * NANOS_PER_USD
    if value != value.to_integral_value():
        raise AssertionError(f"USD amount {text!r} is not a whole number of nano-USD")
    return int(value)


def nanos_to_usd(nanos: int) -> str:
    """The admin API's spelling of an amount: 9 fraction digits."""
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    return f"{sign}{nanos // NANOS_PER_USD}.{nanos % NANOS_PER_USD:09d}"


def random_base62(length: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def config_toml(
    listen_port: int,
    admin_port: int,
    *,
    tokens_per_second: int = 0,
    output_tokens: int = 16,
    extra: str = "",
) -> str:
    return f"""\
[server]
listen = "127.0.0.1:{listen_port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 2

[billing]
kes_per_usd = "130"
signup_credit_usd = "1.00"

[sandbox]
time_to_first_token_ms = 0
tokens_per_second = {tokens_per_second}
output_tokens = {output_tokens}

[tiers.unverified]
rpm = 30
tpm = 40000

[tiers.trusted]
rpm = 100
tpm = 160000

[[account_overrides]]
account = "bulk"
rpm = 100000
tpm = 100000000
{extra}"""


class GatewayError(AssertionError):
    pass


class Gateway:
    """One running gateway process plus admin helpers."""

    def __init__(self, workdir: Path, name: str = "gateway", **config_options) -> None:
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.admin_token = "adm_" + random_base62(32)
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(config_toml(self.port, self.admin_port, **config_options))
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.admin = httpx2.Client(
            base_url=f"http://127.0.0.1:{self.admin_port}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10.0,
        )
        self._account_counter = 0

    # ----- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Gateway":
        binary = gateway_binary()
        if not os.path.isfile(binary):
            raise GatewayError(f"gateway binary not found at {binary} (set FIKRA_GATEWAY_BIN or run `cargo build`)")
        env = dict(os.environ)
        env["FIKRA_ADMIN_TOKEN"] = self.admin_token
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--config", str(self.config_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        last = "no answer"

        def ready() -> bool:
            nonlocal last
            code = self.process.poll()
            if code is not None:
                raise GatewayError(f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}")
            try:
                response = httpx2.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1.0)
                if response.status_code == 200:
                    return True
                last = f"{response.status_code} {response.text}"
            except httpx2.HTTPError as error:
                last = repr(error)
            return False

        if wait_until(READY_TIMEOUT_S, ready):
            return self
        self.kill()
        raise GatewayError(f"{self.name} not ready within {READY_TIMEOUT_S}s (last /readyz: {last}):\n{self.log_tail()}")

    def terminate(self) -> None:
        """Sends SIGTERM (graceful shutdown) without waiting."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """The exit code, or None if the process is still running after `timeout` (then killed)."""
        assert self.process is not None
        try:
            self.exit_code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return self.exit_code

    def stop(self) -> int | None:
        """SIGTERM, then the exit code (None: it did not exit within STOP_TIMEOUT_S and was killed)."""
        self.admin.close()
        if self.process is None:
            return None
        if self.process.poll() is not None:
            self.exit_code = self.process.returncode
            return self.exit_code
        self.terminate()
        return self.wait_exit()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ----- admin API -------------------------------------------------------------------------

    def _admin(self, method: str, path: str, expected: int, json=None) -> dict:
        response = self.admin.request(method, path, json=json)
        if response.status_code != expected:
            raise GatewayError(f"admin {method} {path} -> {response.status_code} (expected {expected}): {response.text}")
        return response.json()

    def create_account(self, signup_credit_usd: str | None = None, account_id: str | None = None) -> dict:
        body: dict = {}
        if account_id is None:
            self._account_counter += 1
            account_id = f"acct-{self._account_counter}-{random_base62(8)}"
        body["id"] = account_id
        if signup_credit_usd is not None:
            body["signup_credit_usd"] = signup_credit_usd
        account = self._admin("POST", "/admin/accounts", 201, json=body)
        assert account["id"] == account_id, account
        return account

    def account(self, account_id: str) -> dict:
        return self._admin("GET", f"/admin/accounts/{account_id}", 200)

    def create_key(self, account_id: str, kind: str = "live", name: str | None = None) -> dict:
        body = {"kind": kind}
        if name is not None:
            body["name"] = name
        key = self._admin("POST", f"/admin/accounts/{account_id}/keys", 201, json=body)
        assert key["kind"] == kind, key
        return key

    def revoke_key(self, key_id: str) -> dict:
        return self._admin("DELETE", f"/admin/keys/{key_id}", 200)

    def topup(self, account_id: str, amount: str, currency: str, reference: str) -> dict:
        body = {"amount": amount, "currency": currency, "reference": reference}
        return self._admin("POST", f"/admin/accounts/{account_id}/topups", 200, json=body)

    def usage(self, account_id: str, limit: int = 100) -> list[dict]:
        return self._admin("GET", f"/admin/accounts/{account_id}/usage?limit={limit}", 200)["data"]

    def set_maintenance(self, enabled: bool, retry_after_s: int | None = None) -> dict:
        body: dict = {"enabled": enabled}
        if retry_after_s is not None:
            body["retry_after_s"] = retry_after_s
        return self._admin("PUT", "/admin/maintenance", 200, json=body)

    def settled_account(self, account_id: str, timeout: float = 1.0) -> dict:
        """The account once nothing is held any more (SPEC §3: settle within a second of the end)."""
        seen = {}

        def settled() -> bool:
            seen["account"] = self.account(account_id)
            return usd_to_nanos(seen["account"]["held_usd"]) == 0

        wait_until(timeout, settled)
        return seen["account"]

    def usage_records(self, account_id: str, count: int, timeout: float = 1.0) -> list[dict]:
        """The ledger once it holds at least `count` records (or whatever it holds after `timeout`)."""
        seen = {}

        def complete() -> bool:
            seen["records"] = self.usage(account_id)
            return len(seen["records"]) >= count

        wait_until(timeout, complete)
        return seen["records"]

    # ----- metrics ---------------------------------------------------------------------------

    def request_counts(self) -> dict[tuple[str, str], int]:
        """`fikra_requests_total` by (route, status); series not rendered count as zero."""
        response = httpx2.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5.0)
        if response.status_code != 200:
            raise GatewayError(f"/metrics -> {response.status_code}: {response.text}")
        counts: dict[tuple[str, str], int] = {}
        for line in response.text.splitlines():
            match = _REQUESTS_TOTAL.match(line)
            if match:
                counts[(match.group(1), match.group(2))] = int(match.group(3))
        return counts


class RequestCounter:
    """What the server counted between `__enter__` and `__exit__`: `diff[(route, status)]`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.before: dict[tuple[str, str], int] = {}
        self.diff: dict[tuple[str, str], int] = {}

    def __enter__(self) -> "RequestCounter":
        self.before = self.gateway.request_counts()
        return self

    def __exit__(self, *exc_info) -> None:
        after = self.gateway.request_counts()
        self.diff = {
            key: after.get(key, 0) - self.before.get(key, 0)
            for key in set(after) | set(self.before)
            if after.get(key, 0) != self.before.get(key, 0)
        }


@dataclasses.dataclass
class Tenant:
    """One fresh account with one key, and SDK clients using it."""

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
