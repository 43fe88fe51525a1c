//! The embedded store's payment records (see `store::payments`): in `State`, behind the same
//! lock as everything else. It never moves money.

use super::EmbeddedStore;
use crate::store::payments::PaymentRecord;
use crate::store::types::StoreError;

impl EmbeddedStore {
    pub fn put_payment(&self, record: &PaymentRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.accounts.contains_key(record.account_id.as_str()) {
            return Err(StoreError::NotFound);
        }
        let book = &mut state.payments;
        if let Some(checkout) = &record.checkout_request_id {
            book.checkouts.insert(checkout.clone(), record.account_id.clone());
        }
        book.by_account.entry(record.account_id.clone()).or_default().insert(record.id.clone(), record.clone());
        Ok(())
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
