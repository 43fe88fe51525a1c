//! An in-process gateway on free ports and its admin helpers: the config every test starts
//! from, a gateway on the system clock or on a manual clock the test advances, and accounts,
//! keys, balances and the usage ledger read through the admin API. `TestGateway` also fronts
//! a separate gateway process (`gateway_process`), so both are driven by the same calls.

use std::net::SocketAddr;

use fikra_gateway::clock::Clock;
use fikra_gateway::config::{Config, parse_config};
use fikra_gateway::runtime::Gateway;
use serde_json::Value;

use super::http::{Response, chat_request, send_one};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The config every test starts from: free ports, two workers, instant sandbox, plus `extra`.
pub fn config_with(extra: &str) -> Config {
    let workers = if extra.contains("workers") { "" } else { "workers = 2\n" };
    // In-process gateways would write access-log lines into the test's own output.
    let quiet = if extra.contains("[log]") { "" } else { "\n[log]\naccess = \"off\"\n" };
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{workers}{extra}\n{quiet}");
    match parse_config(&text) {
        Ok(config) => config,
        Err(errors) => panic!("test config invalid: {errors:?}\n{text}"),
    }
}

/// A gateway's two listeners, and the gateway itself when it runs in this process.
pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub api: SocketAddr,
    pub admin: SocketAddr,
}

impl TestGateway {
    pub fn start(extra_config: &str) -> TestGateway {
        Self::start_config(config_with(extra_config))
    }

    pub fn start_config(config: Config) -> TestGateway {
        Self::start_with_clock(config, Clock::System)
    }

    /// A gateway whose notion of time only moves when the test moves `clock`.
    pub fn start_with_clock(config: Config, clock: Clock) -> TestGateway {
        let gateway = Gateway::start(config, ADMIN_TOKEN.to_string(), clock).expect("gateway starts");
        let (api, admin) = (gateway.client_addr, gateway.admin_addr);
        TestGateway { gateway: Some(gateway), api, admin }
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    pub fn admin_call(&self, method: &str, path: &str, body: &str) -> Response {
        admin_call(self.admin, method, path, body)
    }

    /// An admin call whose answer must be `status`; returns its JSON.
    pub fn admin_json(&self, method: &str, path: &str, body: &str, status: u16) -> Value {
        let response = self.admin_call(method, path, body);
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        response.json()
    }

    /// Creates account `id` with `credit_usd` of signup credit.
    pub fn create_account(&self, id: &str, credit_usd: &str) {
        let body = format!(r#"{{"id":"{id}","signup_credit_usd":"{credit_usd}"}}"#);
        let created = self.admin_call("POST", "/admin/accounts", &body);
        assert_eq!(created.status, 201, "create account: {}", created.text());
    }

    /// A new key of `kind` on `account`: (key id, key).
    pub fn create_key(&self, account: &str, kind: &str) -> (String, String) {
        let body = format!(r#"{{"kind":"{kind}"}}"#);
        let key = self.admin_call("POST", &format!("/admin/accounts/{account}/keys"), &body);
        assert_eq!(key.status, 201, "create key: {}", key.text());
        let created = key.json();
        (created["key_id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string())
    }

    /// A new key of `kind` on `account`; returns the key.
    pub fn new_key(&self, account: &str, kind: &str) -> String {
        self.create_key(account, kind).1
    }

    /// Creates an account with `credit_usd` and one key of `kind`; returns the key.
    pub fn account_with_key(&self, id: &str, credit_usd: &str, kind: &str) -> String {
        self.create_account(id, credit_usd);
        self.new_key(id, kind)
    }

    pub fn account(&self, id: &str) -> Value {
        let response = self.admin_call("GET", &format!("/admin/accounts/{id}"), "");
        assert_eq!(response.status, 200);
        response.json()
    }

    /// Balance of an account in nano-USD.
    pub fn balance_nanos(&self, id: &str) -> u64 {
        usd_to_nanos(self.account(id)["balance_usd"].as_str().unwrap())
    }

    /// The account's usage ledger, newest first (up to 1,000 records: one admin page).
    pub fn usage(&self, account: &str) -> Vec<Value> {
        let usage = self.admin_json("GET", &format!("/admin/accounts/{account}/usage?limit=1000"), "", 200);
        usage["data"].as_array().unwrap().clone()
    }

    /// The cost of every record of the account's ledger, in nano-USD, newest first.
    pub fn usage_costs(&self, account: &str) -> Vec<u64> {
        self.usage(account).iter().map(|r| usd_to_nanos(r["cost_usd"].as_str().unwrap())).collect()
    }

    pub fn chat(&self, key: &str, body: &str) -> Response {
        send_one(self.api, chat_request(key, body).as_bytes())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
    }
}

/// One call on the admin listener at `admin`, with the admin token; for threads that only hold
/// the address.
pub fn admin_call(admin: SocketAddr, method: &str, path: &str, body: &str) -> Response {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    send_one(admin, request.as_bytes())
}

/// "1.000000500" -> 1_000_000_500.
pub fn usd_to_nanos(text: &str) -> u64 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = format!("{fraction:0<9}");
    whole.parse::<u64>().unwrap() * 1_000_000_000 + fraction[..9].parse::<u64>().unwrap()
}
