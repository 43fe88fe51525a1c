//! The embedded store's payment records (see `store::payments`): in `State`, behind the same
//! lock as everything else, at most `MAX_PAYMENTS_KEPT` per account (a new one beyond that
//! drops the oldest record and its checkout index entry). It never moves money.

use super::EmbeddedStore;
use crate::store::payments::{MAX_PAYMENTS_KEPT, PaymentRecord};
use crate::store::types::StoreError;

impl EmbeddedStore {
    /// Writes `record` (unless `only_new` and the account has one with its id); whether it
    /// wrote.
    pub fn put_payment(&self, record: &PaymentRecord, only_new: bool) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if !state.accounts.contains_key(record.account_id.as_str()) {
            return Err(StoreError::NotFound);
        }
        let book = &mut state.payments;
        let records = book.by_account.entry(record.account_id.clone()).or_default();
        if only_new && records.contains_key(&record.id) {
            return Ok(false);
        }
        if let Some(checkout) = &record.checkout_request_id {
            book.checkouts.insert(checkout.clone(), record.account_id.clone());
        }
        records.insert(record.id.clone(), record.clone());
        while records.len() > MAX_PAYMENTS_KEPT {
            let Some(oldest) = records.values().max_by(|a, b| PaymentRecord::newest_first(a, b)).cloned() else {
                break;
            };
            records.remove(&oldest.id);
            if let Some(checkout) = &oldest.checkout_request_id {
                book.checkouts.remove(checkout);
            }
        }
        Ok(true)
    }

    pub fn checkout_payment(&self, checkout_request_id: &str) -> Result<PaymentRecord, StoreError> {
        let state = self.lock();
        let book = &state.payments;
        let account = book.checkouts.get(checkout_request_id).ok_or(StoreError::NotFound)?;
        let id = format!("stk:{checkout_request_id}");
        book.by_account.get(account).and_then(|records| records.get(&id)).cloned().ok_or(StoreError::NotFound)
    }

    pub fn payments(&self, account_id: &str) -> Vec<PaymentRecord> {
        let state = self.lock();
        state.payments.by_account.get(account_id).map(|records| records.values().cloned().collect()).unwrap_or_default()
    }
}
