//! Payment records on Redis (see `store::payments`): an account's records are fields of
//! `PREFIX:{ACCOUNT}:payments` (JSON values, the account's hash slot), at most
//! `MAX_PAYMENTS_KEPT` of them, and an STK Push's checkout index is
//! `PREFIX:mpesa:checkout:{ID}` → account (its own slot), expiring `CHECKOUT_INDEX_TTL_S` after
//! its last write. Plain commands, no function: a record never moves money, and writing one
//! twice is harmless; so is trimming twice (two nodes adding at once drop the same oldest).

use super::{Connections, RedisStore};
use crate::redis::Reply;
use crate::store::payments::{CHECKOUT_INDEX_TTL_S, MAX_PAYMENTS_KEPT, PaymentRecord};
use crate::store::types::StoreError;

impl RedisStore {
    fn checkout_key(&self, checkout_request_id: &str) -> String {
        format!("{}:mpesa:checkout:{{{checkout_request_id}}}", self.settings.prefix)
    }

    /// `PREFIX:payref:REFERENCE` → the account a top-up claimed the reference for (its own
    /// slot; `topup` writes it, `reference_owner` reads it).
    pub(super) fn payref_key(&self, reference: &str) -> String {
        format!("{}:payref:{reference}", self.settings.prefix)
    }

    /// Writes `record` (with `only_new`, only if the account has no record with its id:
    /// `HSETNX`); whether it wrote. A new field beyond the bound trims the oldest.
    pub async fn put_payment(
        &self,
        connections: &Connections,
        record: &PaymentRecord,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        if let Some(checkout) = &record.checkout_request_id {
            let index = self.checkout_key(checkout);
            let ttl_s = CHECKOUT_INDEX_TTL_S.to_string();
            let args: [&[u8]; 5] = [b"SET", index.as_bytes(), record.account_id.as_bytes(), b"EX", ttl_s.as_bytes()];
            self.command(connections, index.as_bytes(), &args).await?;
        }
        let key = self.key(&record.account_id, "payments");
        let value = record.to_json().to_string();
        let verb: &[u8] = if only_new { b"HSETNX" } else { b"HSET" };
        let args: [&[u8]; 4] = [verb, key.as_bytes(), record.id.as_bytes(), value.as_bytes()];
        let added = matches!(self.command(connections, key.as_bytes(), &args).await?, Reply::Integer(1));
        if added {
            // The record is written; a failed trim is repaired by the next new record's.
            let _ = self.trim_payments(connections, &key).await;
        }
        Ok(added || !only_new)
    }

    /// Drops the oldest records of `key` beyond `MAX_PAYMENTS_KEPT`, and any unreadable field.
    async fn trim_payments(&self, connections: &Connections, key: &str) -> Result<(), StoreError> {
        let count = match self.command(connections, key.as_bytes(), &[b"HLEN", key.as_bytes()]).await? {
            Reply::Integer(count) => usize::try_from(count).unwrap_or(0),
            _ => 0,
        };
        if count <= MAX_PAYMENTS_KEPT {
            return Ok(());
        }
        let Reply::Array(pairs) = self.command(connections, key.as_bytes(), &[b"HGETALL", key.as_bytes()]).await?
        else {
            return Ok(());
        };
        let mut unreadable: Vec<Vec<u8>> = Vec::new();
        let mut records: Vec<PaymentRecord> = Vec::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks_exact(2) {
            let (Reply::BulkString(field), Reply::BulkString(json)) = (&pair[0], &pair[1]) else { continue };
            match parse(json) {
                Some(record) if record.id.as_bytes() == field.as_slice() => records.push(record),
                _ => unreadable.push(field.clone()),
            }
        }
        records.sort_by(PaymentRecord::newest_first);
        let mut dropped = unreadable;
        dropped.extend(records.into_iter().skip(MAX_PAYMENTS_KEPT).map(|record| record.id.into_bytes()));
        if dropped.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![b"HDEL", key.as_bytes()];
        args.extend(dropped.iter().map(Vec::as_slice));
        self.command(connections, key.as_bytes(), &args).await?;
        Ok(())
    }

    /// The account `reference` was claimed for by a top-up (`payref_key`), if any.
    pub async fn reference_owner(
        &self,
        connections: &Connections,
        reference: &str,
    ) -> Result<Option<String>, StoreError> {
        let claim = self.payref_key(reference);
        match self.command(connections, claim.as_bytes(), &[b"GET", claim.as_bytes()]).await? {
            Reply::BulkString(owner) => Ok(String::from_utf8(owner).ok()),
            _ => Ok(None),
        }
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
