//! Payment records on Redis (see `store::payments`): an account's records are fields of
//! `PREFIX:{ACCOUNT}:payments` (JSON values, the account's hash slot), and an STK Push's
//! checkout index is `PREFIX:mpesa:checkout:{ID}` → account (its own slot). Plain commands,
//! no function: a record never moves money, and writing one twice is harmless.

use super::{Connections, RedisStore};
use crate::redis::Reply;
use crate::store::payments::PaymentRecord;
use crate::store::types::StoreError;

impl RedisStore {
    fn checkout_key(&self, checkout_request_id: &str) -> String {
        format!("{}:mpesa:checkout:{{{checkout_request_id}}}", self.settings.prefix)
    }

    pub async fn put_payment(&self, connections: &Connections, record: &PaymentRecord) -> Result<(), StoreError> {
        if let Some(checkout) = &record.checkout_request_id {
            let index = self.checkout_key(checkout);
            let args: [&[u8]; 3] = [b"SET", index.as_bytes(), record.account_id.as_bytes()];
            self.command(connections, index.as_bytes(), &args).await?;
        }
        let key = self.key(&record.account_id, "payments");
        let value = record.to_json().to_string();
        let args: [&[u8]; 4] = [b"HSET", key.as_bytes(), record.id.as_bytes(), value.as_bytes()];
        self.command(connections, key.as_bytes(), &args).await?;
        Ok(())
    }

    pub async fn checkout_payment(
        &self,
        connections: &Connections,
        checkout_request_id: &str,
    ) -> Result<PaymentRecord, StoreError> {
        let index = self.checkout_key(checkout_request_id);
        let account = match self.command(connections, index.as_bytes(), &[b"GET", index.as_bytes()]).await? {
            Reply::BulkString(account) => String::from_utf8(account).map_err(|_| StoreError::NotFound)?,
            _ => return Err(StoreError::NotFound),
        };
        let key = self.key(&account, "payments");
        let id = format!("stk:{checkout_request_id}");
        match self.command(connections, key.as_bytes(), &[b"HGET", key.as_bytes(), id.as_bytes()]).await? {
            Reply::BulkString(json) => parse(&json).ok_or(StoreError::NotFound),
            _ => Err(StoreError::NotFound),
        }
    }

    pub async fn payments(
        &self,
        connections: &Connections,
        account_id: &str,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        let key = self.key(account_id, "payments");
        match self.command(connections, key.as_bytes(), &[b"HVALS", key.as_bytes()]).await? {
            Reply::Array(values) => Ok(values
                .iter()
                .filter_map(|value| match value {
                    Reply::BulkString(json) => parse(json),
                    _ => None,
                })
                .collect()),
            _ => Ok(Vec::new()),
        }
    }
}

fn parse(json: &[u8]) -> Option<PaymentRecord> {
    serde_json::from_slice(json).ok().as_ref().and_then(PaymentRecord::from_json)
}
